//! Webhooks: every incident transition (opened, cause changed, resolved, and the prober's own
//! offline / online) POSTed as JSON to the configured URLs, for status-page providers and chat
//! tools. Deliveries go through the store's outbox like mail: queued with the run that decided
//! them, retried with the same backoff, never lost, never sent twice (the delivery id is stable,
//! in `X-Probe-Delivery`). With `secret_env`, each body is signed: `X-Probe-Signature:
//! sha256=HEX` (HMAC-SHA256 of the body with the secret).

use std::sync::Arc;
use std::time::Duration;

use crate::engine::tls::Verifier;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::body::Bytes;
use ring::hmac;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::{timeout_at, Instant};

use crate::alert::Notification;
use crate::config::Webhook;
use crate::engine::connect::connect;
use crate::engine::http::{exchange_with, HttpRequestSpec, Payload};
use crate::engine::tls::handshake;
use crate::engine::trust_roots;
use crate::notify::outbox::{stable_id, Channel, DeliveryError};
use crate::observe::{ErrorKind, Route};
use crate::store::{Channel as ChannelKind, NewMessage, OutboxMessage};
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

impl From<WebhookError> for DeliveryError {
    /// Whether the failure is about this one delivery (permanent, or transient for it alone) or
    /// about the URL itself, whose other deliveries then wait too.
    fn from(e: WebhookError) -> Self {
        let reason = e.to_string();
        match e {
            WebhookError::Url(_) | WebhookError::Request { .. } => DeliveryError::Permanent(reason),
            WebhookError::Secret(_) => DeliveryError::Settings(reason),
            WebhookError::Unreachable { .. } | WebhookError::Timeout { .. } => {
                DeliveryError::DestinationFailing(reason)
            }
            // The receiver asks us to slow down, or is down: its other deliveries wait too.
            WebhookError::Refused {
                status: 429 | 502 | 503 | 504,
                ..
            } => DeliveryError::DestinationFailing(reason),
            WebhookError::Refused { status, .. } if status == 408 || status >= 500 => {
                DeliveryError::Transient(reason)
            }
            // A redirect (the endpoint moved) or a refused login (a rotated token) is about the
            // webhook's settings, the same for every delivery: they wait for the fix.
            WebhookError::Refused { status, .. }
                if status < 400 || matches!(status, 401 | 403 | 407) =>
            {
                DeliveryError::DestinationFailing(reason)
            }
            // Any other 4xx is about this request: sending it again gets the same answer.
            WebhookError::Refused { .. } => DeliveryError::Permanent(reason),
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
            h.sites.is_empty() || site.starts_with('@') || h.sites.iter().any(|s| s == site)
        })
        .map(|hook| NewMessage {
            channel: ChannelKind::Webhook,
            key: format!("{key}#webhook-{}", short_id(&hook.url)),
            notification: key.clone(),
            recipients: vec![hook.url.clone()],
            subject: payload["event"].as_str().unwrap_or_default().to_string(),
            body_text: body.clone(),
            body_html: String::new(),
            thread: None,
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
            ..
        } => (
            "incident.opened",
            incident,
            json!({ "diagnosis": diagnosis(d) }),
        ),
        Notification::CauseChanged {
            incident,
            from,
            diagnosis: d,
            ..
        } => (
            "incident.cause_changed",
            incident,
            json!({ "previous_cause": from.as_str(), "diagnosis": diagnosis(d) }),
        ),
        Notification::Recovered {
            incident,
            lasted,
            cause,
            earlier,
            ..
        } => (
            "incident.resolved",
            incident,
            // Its causes in turn, the last one last (empty when none was known).
            json!({
                "duration_seconds": lasted.as_secs(),
                "causes": earlier.iter().chain(cause).map(|c| c.as_str()).collect::<Vec<_>>(),
            }),
        ),
        Notification::ConnectivityLost { incident, evidence } => {
            ("prober.offline", incident, json!({ "evidence": evidence }))
        }
        Notification::ConnectivityRestored { incident, lasted } => (
            "prober.online",
            incident,
            json!({ "duration_seconds": lasted.as_secs() }),
        ),
        Notification::RegionOffline {
            incident,
            region,
            evidence,
        } => (
            "region.offline",
            incident,
            json!({ "region": region, "evidence": evidence }),
        ),
        Notification::RegionOnline {
            incident,
            region,
            lasted,
        } => (
            "region.online",
            incident,
            json!({ "region": region, "duration_seconds": lasted.as_secs() }),
        ),
        Notification::Folded {
            incident, lasted, ..
        } => (
            "incident.resolved",
            incident,
            json!({ "duration_seconds": lasted.as_secs(), "folded": true }),
        ),
        Notification::CertExpiring { cert, threshold } => (
            "certificate.expiring",
            &0,
            json!({ "certificate": cert_json(cert), "threshold_days": threshold }),
        ),
        Notification::CertRenewed { cert, by } => (
            "certificate.renewed",
            &0,
            json!({ "certificate": cert_json(cert), "replaced_by": cert_json(by) }),
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
        "severity": n.severity().as_str(),
    });
    if let (Some(map), Value::Object(more)) = (payload.as_object_mut(), extra) {
        map.extend(more);
    }
    Some(payload)
}

fn cert_json(cert: &crate::alert::CertSeen) -> Value {
    json!({
        "subject": cert.subject,
        "issuer": cert.issuer,
        "route": cert.route,
        "not_after": cert.not_after,
        "days_left": cert.days_left,
    })
}

/// Webhooks as a delivery channel: one POST per delivery, over the engine's own connect, TLS
/// and HTTP code, with the public WebPKI roots and `defaults.ca_file`'s.
pub struct WebhookChannel<'a> {
    hooks: &'a [Webhook],
    verifier: Result<Verifier, String>,
}

impl<'a> WebhookChannel<'a> {
    pub fn new(hooks: &'a [Webhook], extra_roots: &Arc<[CertificateDer<'static>]>) -> Self {
        // The engine's trust stores for this root list, built once while the list is shared.
        let verifier = trust_roots(extra_roots)
            .map(|r| r.verifier_for(Route::Edge))
            .map_err(|e| e.to_string());
        Self { hooks, verifier }
    }
}

impl Channel for WebhookChannel<'_> {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn destination(&self, message: &OutboxMessage) -> String {
        message.recipients.first().cloned().unwrap_or_default()
    }

    async fn deliver(&mut self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let url = self.destination(message);
        // The secret of the webhook as configured now (a webhook removed since still gets what
        // was decided for it, unsigned).
        let secret_env = self
            .hooks
            .iter()
            .find(|h| h.url == url)
            .and_then(|h| h.secret_env.as_deref());
        let verifier = self
            .verifier
            .clone()
            .map_err(DeliveryError::DestinationFailing)?;
        deliver(&url, message, secret_env, verifier)
            .await
            .map_err(DeliveryError::from)
    }
}

/// POSTs one delivery; only a 2xx answer counts as delivered.
pub async fn deliver(
    url: &str,
    message: &OutboxMessage,
    secret_env: Option<&str>,
    verifier: Verifier,
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
    post(
        url,
        message,
        signature,
        verifier,
        Instant::now() + DELIVERY_TIMEOUT,
    )
    .await
}

async fn post(
    url: &str,
    message: &OutboxMessage,
    signature: Option<String>,
    verifier: Verifier,
    deadline: Instant,
) -> Result<(), WebhookError> {
    let shown = endpoint_for_display(url);
    // Built before connecting: a request that cannot be built is this message's fault, and no
    // connection is wasted on it. Every header value is ours (the delivery id is a stable id,
    // never the raw key), so a site's name cannot make it unsendable.
    let header = |name: &'static str, value: &str| {
        HeaderValue::from_str(value)
            .map(|v| (HeaderName::from_static(name), v))
            .map_err(|e| WebhookError::Request {
                url: shown.clone(),
                reason: format!("{name}: {e}"),
            })
    };
    let mut headers = vec![
        header("x-probe-event", &message.subject)?,
        header("x-probe-delivery", &stable_id(&message.key))?,
    ];
    if let Some(signature) = signature {
        headers.push(header("x-probe-signature", &signature)?);
    }
    let body = Bytes::from(message.body_text.clone());
    let response = send_json(url, headers, body, verifier, deadline).await?;
    if (200..300).contains(&response.status) {
        Ok(())
    } else {
        Err(WebhookError::Refused {
            url: shown,
            status: response.status,
        })
    }
}

/// POSTs `body` as JSON to `url` with `headers` beside it, over a connection whose certificate
/// verified (for https), and returns the answer whatever its status. Errors name the URL by its
/// host only: chat and paging URLs carry their token.
pub async fn send_json(
    url: &str,
    mut headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    verifier: Verifier,
    deadline: Instant,
) -> Result<crate::observe::ResponseFacts, WebhookError> {
    let shown = endpoint_for_display(url);
    let bad_url = || WebhookError::Url(shown.clone());
    let parsed = url::Url::parse(url).map_err(|_| bad_url())?;
    let https = match parsed.scheme() {
        "https" => true,
        "http" => false,
        _ => return Err(bad_url()),
    };
    let host = parsed
        .host_str()
        .ok_or_else(bad_url)?
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    let port = parsed.port_or_known_default().ok_or_else(bad_url)?;
    let path = match parsed.query() {
        Some(query) => format!("{}?{query}", parsed.path()),
        None => parsed.path().to_string(),
    };
    headers.insert(
        0,
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
    );
    let payload = Payload {
        method: http::Method::POST,
        headers,
        body,
    };
    let spec = HttpRequestSpec {
        scheme: if https { "https" } else { "http" }.into(),
        authority: crate::settings::authority(&parsed),
        path,
        user_agent: concat!("probe/", env!("CARGO_PKG_VERSION")).into(),
        accept: "*/*".into(),
        excerpt_bytes: crate::engine::http::BODY_EXCERPT_BYTES,
        read_limit: crate::engine::http::BODY_READ_LIMIT,
    };
    let unreachable = |reason: String| WebhookError::Unreachable {
        url: shown.clone(),
        reason,
    };
    let timed_out = || WebhookError::Timeout { url: shown.clone() };
    // The system resolver (hosts file included): a webhook is a service of the operator's.
    let addresses: Vec<std::net::SocketAddr> =
        match timeout_at(deadline, tokio::net::lookup_host((host.as_str(), port))).await {
            Ok(Ok(found)) => found.collect(),
            Ok(Err(e)) => return Err(unreachable(format!("cannot resolve {host}: {e}"))),
            Err(_) => return Err(timed_out()),
        };
    let mut tcp = Err(unreachable(format!("{host} has no address")));
    for address in addresses {
        match connect(address, deadline).await {
            Ok(stream) => {
                tcp = Ok(stream);
                break;
            }
            Err(e) if e.kind == ErrorKind::Timeout => tcp = Err(timed_out()),
            Err(e) => tcp = Err(unreachable(e.message)),
        }
    }
    let tcp = tcp?;
    let exchange = if https {
        let now = OffsetDateTime::now_utc();
        let done = handshake(tcp, &host, verifier, &[b"http/1.1"], now, deadline).await;
        let stream = match done.stream {
            Ok(stream) => stream,
            Err(e) if e.kind == ErrorKind::Timeout => return Err(timed_out()),
            Err(e) => return Err(unreachable(format!("TLS: {}", e.message))),
        };
        // The handshake records a certificate it does not trust (a probe reports it); a
        // notification is only sent to a server whose certificate was verified.
        match done.facts {
            Some(facts) if facts.verified => {}
            facts => {
                let why = facts
                    .and_then(|f| f.verify_message)
                    .unwrap_or_else(|| "certificate not verified".into());
                return Err(unreachable(format!("TLS: {why}")));
            }
        }
        exchange_with(stream, false, &spec, &payload, deadline).await
    } else {
        exchange_with(tcp, false, &spec, &payload, deadline).await
    };
    match (exchange.response, exchange.error) {
        (Some(response), _) => Ok(response),
        (None, Some(e)) if e.kind == ErrorKind::Timeout => Err(timed_out()),
        (None, Some(e)) => Err(unreachable(e.message)),
        (None, None) => Err(unreachable("no answer".into())),
    }
}
