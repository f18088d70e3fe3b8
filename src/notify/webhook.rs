//! Webhooks: every incident transition (opened, cause changed, resolved, and the prober's own
//! offline / online) POSTed as JSON to the configured URLs, for status-page providers and chat
//! tools. Deliveries go through the store's outbox like mail: queued with the run that decided
//! them, retried with the same backoff, never lost, never sent twice (the delivery id is stable,
//! in `X-Probe-Delivery`). With `secret_env`, each body is signed: `X-Probe-Signature:
//! sha256=HEX` (HMAC-SHA256 of the body with the secret).

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ring::hmac;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::alert::Notification;
use crate::config::Webhook;
use crate::notify::outbox::{stable_id, Attempt, FlushSummary, Recorder};
use crate::store::{Channel, NewMessage, OutboxMessage, Store, StoreError};
use crate::text::{endpoint_for_display, short_id};

/// Bound on one delivery: connect, TLS, request and answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a delivery failed. URLs are shown by their host only: chat and paging webhooks carry
/// their token in the path or the query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("bad webhook URL {0}")]
    Url(String),
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered {status}")]
    Refused { url: String, status: u16 },
    #[error("{url}: no answer within {DELIVERY_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("the secret variable {0} is not set")]
    Secret(String),
    /// The request cannot be built from this message (it never can be).
    #[error("cannot build the request to {url}: {reason}")]
    Request { url: String, reason: String },
}

impl WebhookError {
    /// What the attempt came to, and whether the URL itself is failing (so its other deliveries
    /// wait for the next pass) rather than this one message being refused.
    fn attempt(&self) -> (Attempt, bool) {
        let reason = self.to_string();
        match self {
            WebhookError::Url(_) | WebhookError::Request { .. } => {
                (Attempt::Permanent(reason), false)
            }
            WebhookError::Unreachable { .. }
            | WebhookError::Timeout { .. }
            | WebhookError::Secret(_) => (Attempt::Transient(reason), true),
            // The receiver asks us to slow down, or is down: its other deliveries wait too.
            WebhookError::Refused {
                status: 429 | 502 | 503 | 504,
                ..
            } => (Attempt::Transient(reason), true),
            WebhookError::Refused { status, .. } if *status == 408 || *status >= 500 => {
                (Attempt::Transient(reason), false)
            }
            // A redirect (the endpoint moved) or a refused login (a rotated token) is about the
            // webhook's settings, the same for every delivery: they wait for the fix.
            WebhookError::Refused { status, .. }
                if *status < 400 || matches!(status, 401 | 403 | 407) =>
            {
                (Attempt::Transient(reason), true)
            }
            // Any other 4xx is about this request: sending it again gets the same answer.
            WebhookError::Refused { .. } => (Attempt::Permanent(reason), false),
        }
    }
}

/// The webhook deliveries of one notification about `site` (`alert::PROBER` for the prober's
/// own): one per webhook that covers the site. Reminders are not transitions and are not sent.
pub fn render(
    site: &str,
    url: &str,
    notification: &Notification,
    hooks: &[Webhook],
    at: OffsetDateTime,
) -> Vec<NewMessage> {
    let Some(payload) = payload(site, url, notification, at) else {
        return Vec::new();
    };
    let body = crate::text::json(&payload);
    let key = notification.key(site);
    hooks
        .iter()
        .filter(|h| {
            h.sites.is_empty() || site == crate::alert::PROBER || h.sites.iter().any(|s| s == site)
        })
        .map(|hook| NewMessage {
            channel: Channel::Webhook,
            key: format!("{key}#webhook-{}", short_id(&hook.url)),
            notification: key.clone(),
            recipients: vec![hook.url.clone()],
            subject: payload["event"].as_str().unwrap_or_default().to_string(),
            body_text: body.clone(),
            body_html: String::new(),
        })
        .collect()
}

fn payload(site: &str, url: &str, n: &Notification, at: OffsetDateTime) -> Option<Value> {
    let stamp = crate::text::rfc3339(at);
    let diagnosis = |d: &crate::diagnose::Diagnosis| {
        json!({
            "status": d.status.as_str(),
            "hop": d.hop.as_str(),
            "cause": d.cause.as_str(),
            "title": d.cause.title(),
            "confidence": d.confidence.as_str(),
            "summary": d.summary,
            "evidence": d.evidence,
            "next_steps": d.next_steps,
        })
    };
    let (event, incident, extra) = match n {
        Notification::Opened {
            incident,
            diagnosis: d,
        } => (
            "incident.opened",
            incident,
            json!({ "diagnosis": diagnosis(d) }),
        ),
        Notification::CauseChanged {
            incident,
            from,
            diagnosis: d,
        } => (
            "incident.cause_changed",
            incident,
            json!({ "previous_cause": from.as_str(), "diagnosis": diagnosis(d) }),
        ),
        Notification::Recovered { incident, lasted } => (
            "incident.resolved",
            incident,
            json!({ "duration_seconds": lasted.as_secs() }),
        ),
        Notification::ConnectivityLost { incident, evidence } => {
            ("prober.offline", incident, json!({ "evidence": evidence }))
        }
        Notification::ConnectivityRestored { incident, lasted } => (
            "prober.online",
            incident,
            json!({ "duration_seconds": lasted.as_secs() }),
        ),
        Notification::Reminder { .. } => return None,
    };
    let mut payload = json!({
        "event": event,
        "id": n.key(site),
        "at": stamp,
        "site": site,
        "url": url,
        "incident": incident,
    });
    if let (Some(map), Value::Object(more)) = (payload.as_object_mut(), extra) {
        map.extend(more);
    }
    Some(payload)
}

/// Delivers the due webhook deliveries among `due` (the outbox messages read for this pass). A
/// URL that cannot be reached (or asks us to back off) is not tried again in this pass; its other
/// deliveries wait, still due. A delivery refused on its own account never holds back the others.
pub async fn flush(
    store: &mut dyn Store,
    hooks: &[Webhook],
    extra_roots: &[CertificateDer<'static>],
    due: Vec<OutboxMessage>,
    now: OffsetDateTime,
    recorder: &mut Recorder,
) -> Result<FlushSummary, StoreError> {
    let due: Vec<OutboxMessage> = due
        .into_iter()
        .filter(|m| m.channel == Channel::Webhook)
        .collect();
    let mut summary = FlushSummary::default();
    let mut failing: Vec<String> = Vec::new();
    for message in due {
        let url = message.recipients.first().cloned().unwrap_or_default();
        if failing.contains(&url) {
            summary.deferred += 1;
            continue;
        }
        // The secret of the webhook as configured now (a webhook removed since still gets what
        // was decided for it, unsigned).
        let secret_env = hooks
            .iter()
            .find(|h| h.url == url)
            .and_then(|h| h.secret_env.as_deref());
        let (attempt, url_failing) = match deliver(&url, &message, secret_env, extra_roots).await {
            Ok(()) => (Attempt::Delivered, false),
            Err(e) => e.attempt(),
        };
        if url_failing {
            failing.push(url);
        }
        recorder
            .record(store, &message, &attempt, now, &mut summary)
            .await?;
    }
    Ok(summary)
}

/// POSTs one delivery; only a 2xx answer counts as delivered.
pub async fn deliver(
    url: &str,
    message: &OutboxMessage,
    secret_env: Option<&str>,
    extra_roots: &[CertificateDer<'static>],
) -> Result<(), WebhookError> {
    let signature = match secret_env {
        Some(var) => {
            let secret = std::env::var(var).map_err(|_| WebhookError::Secret(var.to_string()))?;
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            let tag = hmac::sign(&key, message.body_text.as_bytes());
            Some(format!("sha256={}", crate::text::hex(tag.as_ref())))
        }
        None => None,
    };
    let attempt = post(url, message, signature, extra_roots);
    match tokio::time::timeout(DELIVERY_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(WebhookError::Timeout {
            url: endpoint_for_display(url),
        }),
    }
}

async fn post(
    url: &str,
    message: &OutboxMessage,
    signature: Option<String>,
    extra_roots: &[CertificateDer<'static>],
) -> Result<(), WebhookError> {
    let shown = endpoint_for_display(url);
    let parsed = url::Url::parse(url).map_err(|_| WebhookError::Url(shown.clone()))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| WebhookError::Url(shown.clone()))?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| WebhookError::Url(shown.clone()))?;
    let mut path = parsed.path().to_string();
    if let Some(query) = parsed.query() {
        path = format!("{path}?{query}");
    }
    let authority = match parsed.port() {
        Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
        None => parsed.host_str().unwrap_or_default().to_string(),
    };
    // Built before connecting: a request that cannot be built is this message's fault, and no
    // connection is wasted on it. Every header value is ours (the delivery id is a stable id,
    // never the raw key), so a site's name cannot make it unsendable.
    let mut request = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("probe/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Probe-Event", message.subject.as_str())
        .header("X-Probe-Delivery", stable_id(&message.key));
    if let Some(signature) = signature {
        request = request.header("X-Probe-Signature", signature);
    }
    let request = request
        .body(Full::new(Bytes::from(message.body_text.clone())))
        .map_err(|e| WebhookError::Request {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
    let unreachable = |reason: String| WebhookError::Unreachable {
        url: shown.clone(),
        reason,
    };
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = if parsed.scheme() == "https" {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for der in extra_roots {
            let _ = roots.add(der.clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| unreachable(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name =
            ServerName::try_from(host.clone()).map_err(|_| WebhookError::Url(shown.clone()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| unreachable(format!("TLS: {e}")))?;
        exchange(tls, request, &shown).await?
    } else {
        exchange(tcp, request, &shown).await?
    };
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(WebhookError::Refused { url: shown, status })
    }
}

/// One HTTP/1.1 request on `stream`; returns the status once the answer's body is read.
async fn exchange<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
    url: &str,
) -> Result<u16, WebhookError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let unreachable = |reason: String| WebhookError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()));
    let status = match response {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read (and drop) the answer so the server sees a clean exchange.
            let _ = response.into_body().collect().await;
            Ok(status)
        }
        Err(e) => Err(e),
    };
    driver.abort();
    status
}
