//! Alert mail: rendering a notification (plain text + HTML) and delivering the outbox over SMTP.
//!
//! Delivery goes through the store's outbox: a message is queued in the same transaction as the
//! run that decided it, sent later, and marked sent only once the server accepted it; a failure
//! (server down, 4xx) leaves it queued with a backoff. Its Message-ID is derived from the
//! notification's stable key, so the same alert is recognisably the same mail. The SMTP password
//! comes from the environment at send time and is never logged.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use time::OffsetDateTime;

use crate::alert::Notification;
use crate::config::{Smtp, SmtpSecurity};
use crate::diagnose::Diagnosis;
use crate::store::{Channel, NewMessage, OutboxMessage, Store, StoreError};

/// Why a message could not be delivered (it stays queued).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// The SMTP settings cannot be used (CA file, password variable, addresses).
    #[error("SMTP settings: {0}")]
    Settings(String),
    /// The message could not be built.
    #[error("cannot build the message: {0}")]
    Message(String),
    /// The server refused or could not be reached.
    #[error("SMTP delivery failed: {0}")]
    Delivery(String),
}

/// Renders a notification about `site` into a message for `recipients`.
pub fn render(
    site: &str,
    url: &str,
    notification: &Notification,
    recipients: &[String],
) -> NewMessage {
    let mut evidence: &[String] = &[];
    let (subject, lead, diagnosis) = match notification {
        Notification::Opened { diagnosis, .. } => (
            format!(
                "[DOWN] {site}: {} ({})",
                diagnosis.cause.title(),
                diagnosis.cause.as_str()
            ),
            format!("{site} is down."),
            Some(diagnosis),
        ),
        Notification::CauseChanged {
            from, diagnosis, ..
        } => (
            format!(
                "[CHANGED] {site}: now {} ({}, was {})",
                diagnosis.cause.title(),
                diagnosis.cause.as_str(),
                from.as_str()
            ),
            format!(
                "{site} is still down, for another reason: {} → {}.",
                from.as_str(),
                diagnosis.cause.as_str()
            ),
            Some(diagnosis),
        ),
        Notification::Reminder {
            open_for,
            diagnosis,
            ..
        } => (
            format!(
                "[STILL DOWN] {site}: {} ({}) for {}",
                diagnosis.cause.title(),
                diagnosis.cause.as_str(),
                human(*open_for)
            ),
            format!("{site} has been down for {}.", human(*open_for)),
            Some(diagnosis),
        ),
        Notification::Recovered { lasted, .. } => (
            format!("[RECOVERED] {site} after {}", human(*lasted)),
            format!("{site} answers again after {} down.", human(*lasted)),
            None,
        ),
        Notification::ConnectivityLost { evidence: seen, .. } => {
            evidence = seen;
            (
                "[PROBE OFFLINE] the prober lost its own connectivity".to_string(),
                "Every site and every control check failed in the same run: the prober's own \
                 network is the likely fault, not the sites. Per-site alerts are held until it \
                 reaches the network again."
                    .to_string(),
                None,
            )
        }
        Notification::ConnectivityRestored { lasted, .. } => (
            format!("[PROBE ONLINE] the prober is back after {}", human(*lasted)),
            format!(
                "The prober reaches the network again after {} cut off; per-site alerting resumes.",
                human(*lasted)
            ),
            None,
        ),
    };
    // The prober's own notices are about no one URL.
    let (mut text, mut html) = if url.is_empty() {
        (
            format!("{lead}\n"),
            format!("<p><strong>{}</strong></p>\n", escape(&lead)),
        )
    } else {
        (
            format!("{lead}\n{url}\n"),
            format!(
                "<p><strong>{}</strong><br><a href=\"{}\">{}</a></p>\n",
                escape(&lead),
                escape(url),
                escape(url)
            ),
        )
    };
    if let Some(d) = diagnosis {
        append_diagnosis(&mut text, &mut html, d);
    }
    append_list(&mut text, &mut html, "Evidence", evidence);
    text.push_str("\n-- \nprobe\n");
    NewMessage {
        channel: Channel::Mail,
        key: notification.key(site),
        recipients: recipients.to_vec(),
        subject,
        body_text: text,
        body_html: format!("<!DOCTYPE html><html><body>\n{html}</body></html>\n"),
    }
}

fn append_diagnosis(text: &mut String, html: &mut String, d: &Diagnosis) {
    use std::fmt::Write as _;
    let _ = write!(
        text,
        "\n{} · {} · {} ({} confidence)\n{}\n",
        d.status.as_str().to_uppercase(),
        d.hop.as_str(),
        d.cause.as_str(),
        d.confidence.as_str(),
        d.summary
    );
    let _ = writeln!(
        html,
        "<p><strong>{} · {} · {}</strong> ({} confidence)<br>{}</p>",
        d.status.as_str().to_uppercase(),
        d.hop.as_str(),
        d.cause.as_str(),
        d.confidence.as_str(),
        escape(&d.summary)
    );
    append_list(text, html, "Evidence", &d.evidence);
    append_list(text, html, "Next steps", &d.next_steps);
    if !d.alternatives.is_empty() {
        let _ = writeln!(text, "\nAlso possible:");
        let _ = writeln!(html, "<h3>Also possible</h3><ul>");
        for a in &d.alternatives {
            let _ = writeln!(text, "  {}: {}", a.cause.as_str(), a.why);
            let _ = writeln!(html, "<li>{}: {}</li>", a.cause.as_str(), escape(&a.why));
        }
        html.push_str("</ul>\n");
    }
}

/// A titled list of lines (evidence, commands), skipped when empty.
fn append_list(text: &mut String, html: &mut String, title: &str, lines: &[String]) {
    use std::fmt::Write as _;
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(text, "\n{title}:");
    let _ = writeln!(html, "<h3>{title}</h3><ul>");
    for line in lines {
        let _ = writeln!(text, "  {line}");
        let _ = writeln!(html, "<li><code>{}</code></li>", escape(line));
    }
    html.push_str("</ul>\n");
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        _ => format!("{}h{:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// A Message-ID from a notification key: characters outside RFC 5322's atext become `-`.
fn message_id(key: &str, from: &Mailbox) -> String {
    let local: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("<{local}@{}>", from.email.domain())
}

/// Delivers one message.
pub async fn send(smtp: &Smtp, message: &OutboxMessage) -> Result<(), MailError> {
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| MailError::Settings(format!("from {:?}: {e}", smtp.from)))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .subject(message.subject.clone())
        .message_id(Some(message_id(&message.key, &from)));
    for to in &message.recipients {
        let to: Mailbox = to
            .parse()
            .map_err(|e| MailError::Message(format!("recipient {to:?}: {e}")))?;
        builder = builder.to(to);
    }
    let email = builder
        .multipart(MultiPart::alternative_plain_html(
            message.body_text.clone(),
            message.body_html.clone(),
        ))
        .map_err(|e| MailError::Message(e.to_string()))?;
    // One bound on the whole conversation: a server that stops answering must not hold the
    // run (lettre's own timeout applies per command).
    let transport = transport(smtp)?;
    let sending = transport.send(email);
    match tokio::time::timeout(smtp.timeout, sending).await {
        Ok(result) => result
            .map(|_| ())
            .map_err(|e| MailError::Delivery(e.to_string())),
        Err(_) => Err(MailError::Delivery(format!(
            "no answer from {}:{} within {:?}",
            smtp.host, smtp.port, smtp.timeout
        ))),
    }
}

fn transport(smtp: &Smtp) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let mut tls = TlsParameters::builder(smtp.host.clone());
    if let Some(path) = &smtp.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| MailError::Settings(format!("ca_file {}: {e}", path.display())))?;
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| MailError::Settings(format!("ca_file {}: {e}", path.display())))?;
        tls = tls.add_root_certificate(certificate);
    }
    let tls = || {
        tls.clone()
            .build_rustls()
            .map_err(|e| MailError::Settings(e.to_string()))
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .timeout(Some(smtp.timeout));
    builder = match smtp.security {
        SmtpSecurity::Starttls => builder.tls(Tls::Required(tls()?)),
        SmtpSecurity::Tls => builder.tls(Tls::Wrapper(tls()?)),
        SmtpSecurity::Plain => builder.tls(Tls::None),
    };
    if let (Some(user), Some(var)) = (&smtp.username, &smtp.password_env) {
        let password = std::env::var(var)
            .map_err(|_| MailError::Settings(format!("the password variable {var} is not set")))?;
        // PLAIN only, and only over TLS (lettre refuses it in the clear): a refused password is
        // then one clear 535, not a second mechanism's exchange that some servers leave hanging.
        builder = builder
            .credentials(Credentials::new(user.clone(), password))
            .authentication(vec![Mechanism::Plain]);
    }
    Ok(builder.build())
}

/// What one pass over the outbox did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlushSummary {
    pub sent: usize,
    /// Tried and refused or unreachable: waiting for their backoff.
    pub failed: usize,
    /// Not tried this pass, because the server had just failed: still due next pass.
    pub deferred: usize,
}

/// The wait before the next attempt after `attempts` failures: 1 min, doubling, at most 1 h.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(60u64.saturating_mul(1 << attempts.min(6)).min(3600))
}

/// Tries the due messages; delivered ones are marked sent, a failed one waits its backoff. When
/// the server itself fails (unreachable, refusing, timing out), the pass stops there: the other
/// messages would only wait out the same timeout one after another, holding the run.
pub async fn flush_outbox(
    store: &mut dyn Store,
    smtp: &Smtp,
    now: OffsetDateTime,
) -> Result<FlushSummary, StoreError> {
    let due = store.due_messages(now)?;
    send_due(store, smtp, due, now).await
}

/// Like `flush_outbox`, over outbox messages already read (the mail among them).
pub async fn send_due(
    store: &mut dyn Store,
    smtp: &Smtp,
    due: Vec<OutboxMessage>,
    now: OffsetDateTime,
) -> Result<FlushSummary, StoreError> {
    let mut summary = FlushSummary::default();
    let due: Vec<_> = due
        .into_iter()
        .filter(|m| m.channel == Channel::Mail)
        .collect();
    let total = due.len();
    for message in due {
        match send(smtp, &message).await {
            Ok(()) => {
                store.mark_sent(message.id, OffsetDateTime::now_utc())?;
                summary.sent += 1;
            }
            Err(e) => {
                tracing::warn!(key = %message.key, attempts = message.attempts + 1, error = %e, "mail not delivered; will retry");
                store.mark_failed(message.id, &e.to_string(), now + backoff(message.attempts))?;
                summary.failed += 1;
                if matches!(e, MailError::Delivery(_)) {
                    summary.deferred = total - summary.sent - summary.failed;
                    break;
                }
            }
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        let secs: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    }

    #[test]
    fn message_ids_are_stable_and_valid() {
        let from: Mailbox = "probe <probe@example.com>".parse().unwrap();
        assert_eq!(
            message_id("shop eu/3/opened", &from),
            "<shop-eu/3/opened@example.com>"
        );
        assert_eq!(
            message_id("shop eu/3/opened", &from),
            message_id("shop eu/3/opened", &from)
        );
    }
}
