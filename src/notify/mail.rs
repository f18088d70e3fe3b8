//! Alert mail: rendering a notification (plain text + HTML) and delivering the outbox over SMTP.
//!
//! Delivery goes through the store's outbox: a notification is queued as one message per
//! recipient in the same transaction as the run that decided it, sent later, and marked sent only
//! once the server accepted it. A recipient or a message the server refuses for good (5xx to RCPT
//! or DATA) is given up with the server's reply and never retried, and never holds back the other
//! recipients; a refusal for now (4xx) or a server that cannot be reached waits with a backoff.
//! Failures that are about the server or our settings rather than one message (connecting,
//! STARTTLS, the login, our sender refused at MAIL FROM) hold the whole queue, however the server
//! words them: fixing the settings delivers what waited.
//!
//! The Message-ID comes from the notification's key, so every recipient's copy and every retry is
//! recognisably the same mail. The password comes from the environment at send time, is never
//! logged, and is never sent over an unencrypted connection unless the config says
//! `allow_plaintext_auth: true`.

use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::Message;
use time::OffsetDateTime;

use crate::alert::{CertSeen, Notification, Severity};
use crate::config::{Smtp, SmtpSecurity};
use crate::diagnose::Diagnosis;
use crate::notify::outbox::{self, Channel, DeliveryError, FlushSummary, Recorder};
use crate::store::{Channel as ChannelKind, NewMessage, OutboxMessage, Store, StoreError};
use crate::text::{printable, xml};

/// What a mail says of its incident beyond the notification itself.
#[derive(Debug, Clone, Default)]
pub struct About<'a> {
    /// When the incident began (its first failing run).
    pub since: Option<OffsetDateTime>,
    /// The incident's cause as it stood (said again in its recovery).
    pub cause: Option<crate::diagnose::Cause>,
    /// When this was decided.
    pub at: Option<OffsetDateTime>,
    /// How an outage's opening was confirmed: failing runs in a row, and attempts within each.
    pub confirmed_by: Option<(u32, u32)>,
    /// How a warning's opening was confirmed: degraded runs in a row.
    pub degraded_runs: Option<u32>,
    /// Where the status page is published.
    pub page: Option<&'a str>,
    /// The zone its times are shown in (UTC when none).
    pub zone: Option<&'a crate::text::Zone>,
}

/// Renders a notification about `site` into one message per recipient.
pub fn render(
    site: &str,
    url: &str,
    notification: &Notification,
    recipients: &[String],
) -> Vec<NewMessage> {
    render_about(site, url, notification, recipients, &About::default())
}

/// What any message about a notification says, whatever carries it (mail, chat, paging): a
/// subject line, a lead sentence, the diagnosis and the evidence and next steps beside it.
pub struct Told<'a> {
    pub subject: String,
    pub lead: String,
    pub diagnosis: Option<&'a crate::diagnose::Diagnosis>,
    pub evidence: Vec<String>,
    pub steps: Vec<String>,
}

/// The words for `notification` about `site`; `None` for what is told elsewhere (a folded
/// incident is said in the graver one's opening).
pub fn tell<'a>(site: &str, notification: &'a Notification) -> Option<Told<'a>> {
    let site = printable(site);
    let mut evidence: Vec<String> = Vec::new();
    let mut steps: Vec<String> = Vec::new();
    let (subject, lead, diagnosis) = match notification {
        // Told in the graver incident's opening.
        Notification::Folded { .. } => return None,
        Notification::Opened {
            severity: Severity::Down,
            diagnosis,
            ..
        } => (
            format!(
                "[DOWN] {site}: {} ({})",
                diagnosis.cause.title(),
                diagnosis.cause.as_str()
            ),
            format!("{site} is down."),
            Some(diagnosis),
        ),
        Notification::Opened {
            severity,
            diagnosis,
            ..
        } => (
            format!(
                "{} {site}: {} ({})",
                prefix(*severity),
                diagnosis.cause.title(),
                diagnosis.cause.as_str()
            ),
            match severity {
                Severity::Intermittent => format!(
                    "{site} fails now and then: some visitors get errors while the site is not down."
                ),
                _ => format!("{site} works, but not as it should."),
            },
            Some(diagnosis),
        ),
        Notification::CauseChanged {
            severity,
            from,
            diagnosis,
            ..
        } => (
            match severity {
                Severity::Down => format!(
                    "[CHANGED] {site}: now {} ({}, was {})",
                    diagnosis.cause.title(),
                    diagnosis.cause.as_str(),
                    from.as_str()
                ),
                _ => format!(
                    "{} {site}: now {} ({}, was {})",
                    prefix(*severity),
                    diagnosis.cause.title(),
                    diagnosis.cause.as_str(),
                    from.as_str()
                ),
            },
            format!(
                "{site} is still {}, for another reason: {} → {}.",
                state_word(*severity),
                from.as_str(),
                diagnosis.cause.as_str()
            ),
            Some(diagnosis),
        ),
        Notification::Reminder {
            severity,
            open_for,
            diagnosis,
            ..
        } => (
            match severity {
                Severity::Down => format!(
                    "[STILL DOWN] {site}: {} ({}) for {}",
                    diagnosis.cause.title(),
                    diagnosis.cause.as_str(),
                    human(*open_for)
                ),
                _ => format!(
                    "{} {site}: still {} ({}) after {}",
                    prefix(*severity),
                    state_word(*severity),
                    diagnosis.cause.as_str(),
                    human(*open_for)
                ),
            },
            format!(
                "{site} has been {} for {}.",
                state_word(*severity),
                human(*open_for)
            ),
            Some(diagnosis),
        ),
        Notification::Recovered {
            severity: Severity::Down,
            lasted,
            ..
        } => (
            format!("[RECOVERED] {site} after {}", human(*lasted)),
            format!("{site} answers again after {} down.", human(*lasted)),
            None,
        ),
        Notification::Recovered {
            severity,
            lasted,
            cause,
            ..
        } => {
            let what = cause.map_or("the warning".to_string(), |c| {
                format!("{} ({})", c.title(), c.as_str())
            });
            (
                format!(
                    "[RESOLVED] {site}: {} over after {}",
                    match severity {
                        Severity::Intermittent => "the intermittent failures are",
                        _ => "the warning is",
                    },
                    human(*lasted)
                ),
                match severity {
                    Severity::Intermittent => format!(
                        "{site} has not failed for a full window of runs: the intermittent incident is closed after {}.",
                        human(*lasted)
                    ),
                    _ => format!(
                        "{site} no longer shows what the warning was about ({what}), after {}.",
                        human(*lasted)
                    ),
                },
                None,
            )
        }
        Notification::CertExpiring { cert, threshold } => {
            evidence = describe_cert(cert);
            steps = renewal_steps(cert);
            (
                format!(
                    "[WARNING] {site}: certificate {} {} ({} route)",
                    printable(&cert.subject),
                    expires_in(cert.days_left),
                    cert.route
                ),
                format!(
                    "The certificate {site} presents on the {} route {} (the notice at {}).",
                    cert.route,
                    expires_in(cert.days_left),
                    crate::words::plural(*threshold as u64, "day", "days")
                ),
                None,
            )
        }
        Notification::CertRenewed { cert, by } => {
            evidence = [
                describe_cert(cert),
                vec![format!(
                    "replaced by: {} · valid until {} · {} left",
                    by.subject,
                    day_of(&by.not_after),
                    crate::words::plural(by.days_left.max(0) as u64, "day", "days")
                )],
            ]
            .concat();
            (
                format!(
                    "[RENEWED] {site}: certificate {} renewed ({} route)",
                    printable(&cert.subject),
                    cert.route
                ),
                format!(
                    "Good news: the {} route of {site} presents a new certificate, valid until {}. The expiry notice is closed.",
                    cert.route,
                    day_of(&by.not_after)
                ),
                None,
            )
        }
        Notification::ConnectivityLost { evidence: seen, .. } => {
            evidence = seen.clone();
            (
                "[PROBE OFFLINE] the prober lost its own connectivity".to_string(),
                "Every site and every control check failed in the same run: the prober's own \
                 network is the likely fault, not the sites. Per-site alerts are held until it \
                 reaches the network again."
                    .to_string(),
                None,
            )
        }
        Notification::RegionOffline {
            region,
            evidence: seen,
            ..
        } => {
            evidence = seen.clone();
            (
                format!("[REGION OFFLINE] every prober of {region} went silent"),
                format!(
                    "No prober of region {region} has reported for a while: its sites are not \
                     watched from there, and the quorum counts the regions still reporting. \
                     Look at the prober's container or host in that region (its logs, its \
                     network, its route to the database)."
                ),
                None,
            )
        }
        Notification::RegionOnline { region, lasted, .. } => (
            format!(
                "[REGION ONLINE] {region} reports again after {}",
                human(*lasted)
            ),
            format!(
                "A prober of region {region} reports again after {} silent.",
                human(*lasted)
            ),
            None,
        ),
        Notification::ConnectivityRestored { lasted, .. } => (
            format!("[PROBE ONLINE] the prober is back after {}", human(*lasted)),
            format!(
                "The prober reaches the network again after {} cut off; per-site alerting resumes.",
                human(*lasted)
            ),
            None,
        ),
    };
    Some(Told {
        subject,
        lead,
        diagnosis,
        evidence,
        steps,
    })
}

/// `render`, saying what `about` knows of the incident: since when, its number, how it was
/// confirmed, its cause and span at recovery, and the status page.
pub fn render_about(
    site: &str,
    url: &str,
    notification: &Notification,
    recipients: &[String],
    about: &About<'_>,
) -> Vec<NewMessage> {
    let (key, site_key) = (notification.key(site), site);
    let Some(Told {
        subject,
        lead,
        diagnosis,
        evidence,
        steps,
    }) = tell(site, notification)
    else {
        return Vec::new();
    };
    let url = printable(url);
    let evidence = &evidence[..];
    // The prober's own notices are about no one URL.
    let (mut text, mut html) = if url.is_empty() {
        (
            format!("{lead}\n"),
            format!("<p><strong>{}</strong></p>\n", xml(&lead)),
        )
    } else {
        (
            format!("{lead}\n{url}\n"),
            format!(
                "<p><strong>{}</strong><br><a href=\"{}\">{}</a></p>\n",
                xml(&lead),
                xml(&url),
                xml(&url)
            ),
        )
    };
    let facts = incident_facts(notification, about);
    if !facts.is_empty() {
        use std::fmt::Write as _;
        text.push('\n');
        html.push_str("<p>");
        for (n, line) in facts.iter().enumerate() {
            let _ = writeln!(text, "{line}");
            let _ = write!(html, "{}{}", if n > 0 { "<br>" } else { "" }, xml(line));
        }
        html.push_str("</p>\n");
    }
    if let Some(d) = diagnosis {
        append_diagnosis(&mut text, &mut html, d);
    }
    append_list(&mut text, &mut html, "Evidence", evidence);
    append_list(&mut text, &mut html, "Next steps", &steps);
    text.push_str("\n-- \nprobe\n");
    let html = format!("<!DOCTYPE html><html><body>\n{html}</body></html>\n");
    let mut once: Vec<&String> = Vec::with_capacity(recipients.len());
    for to in recipients {
        if !once.contains(&to) {
            once.push(to);
        }
    }
    once.into_iter()
        .map(|to| NewMessage {
            channel: ChannelKind::Mail,
            key: format!("{key}#mail-{to}"),
            notification: key.clone(),
            recipients: vec![to.clone()],
            subject: subject.clone(),
            body_text: text.clone(),
            body_html: html.clone(),
            thread: notification.thread_key(site_key),
        })
        .collect()
}

pub(crate) fn append_diagnosis(text: &mut String, html: &mut String, d: &Diagnosis) {
    use std::fmt::Write as _;
    let verdict = format!(
        "{} · {} · {}",
        d.status.as_str().to_uppercase(),
        d.hop.as_str(),
        d.cause.as_str()
    );
    let summary = printable(&d.summary);
    let confidence = d.confidence.as_str();
    let _ = write!(text, "\n{verdict} ({confidence} confidence)\n{summary}\n");
    let _ = writeln!(
        html,
        "<p><strong>{verdict}</strong> ({confidence} confidence)<br>{}</p>",
        xml(&summary)
    );
    append_list(text, html, "Evidence", &d.evidence);
    append_list(text, html, "Next steps", &d.next_steps);
    if !d.alternatives.is_empty() {
        let _ = writeln!(text, "\nAlso possible:");
        let _ = writeln!(html, "<h3>Also possible</h3><ul>");
        for a in &d.alternatives {
            let why = printable(&a.why);
            let _ = writeln!(text, "  {}: {why}", a.cause.as_str());
            let _ = writeln!(html, "<li>{}: {}</li>", a.cause.as_str(), xml(&why));
        }
        html.push_str("</ul>\n");
    }
}

/// A titled list of lines (evidence, commands), skipped when empty.
pub(crate) fn append_list(text: &mut String, html: &mut String, title: &str, lines: &[String]) {
    use std::fmt::Write as _;
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(text, "\n{title}:");
    let _ = writeln!(html, "<h3>{title}</h3><ul>");
    for line in lines {
        let _ = writeln!(text, "  {}", printable(line));
        let _ = writeln!(html, "<li><code>{}</code></li>", xml(line));
    }
    html.push_str("</ul>\n");
}

/// The incident's own facts: its number and since when, when and how it was confirmed, its
/// cause and span at its end, where the status page is. Times are clock times, never "ago":
/// a mail may be read, or even sent, long after it was written.
fn incident_facts(notification: &Notification, about: &About<'_>) -> Vec<String> {
    use crate::text::duration;
    use crate::words::plural;
    let utc = crate::text::Zone::default();
    let zone = about.zone.unwrap_or(&utc);
    let mut lines = Vec::new();
    match notification {
        Notification::Opened { incident, .. }
        | Notification::CauseChanged { incident, .. }
        | Notification::Reminder { incident, .. } => {
            lines.push(match about.since {
                Some(t) => format!("Incident #{incident}, failing since {}.", zone.moment(t)),
                None => format!("Incident #{incident}."),
            });
            let confirmed = |how: String| match about.at {
                Some(at) => format!("Confirmed at {} by {how}.", zone.time_of_day(at)),
                None => format!("Confirmed by {how}."),
            };
            if let (Notification::Opened { .. }, Some((runs, attempts))) =
                (notification, about.confirmed_by)
            {
                lines.push(confirmed(confirmation(runs, attempts)));
            }
            if let (Notification::Opened { .. }, Some(runs)) = (notification, about.degraded_runs) {
                lines.push(confirmed(format!(
                    "{} in a row",
                    plural(u64::from(runs), "degraded run", "degraded runs")
                )));
            }
        }
        Notification::Recovered {
            incident,
            lasted,
            severity,
            cause,
            earlier,
            ..
        } => {
            if let Some(cause) = cause.or(about.cause) {
                lines.push(incident_causes(*incident, earlier, cause));
            }
            if let (Some(from), Some(to)) = (about.since, about.at) {
                let how = match severity {
                    Severity::Down => "Down",
                    Severity::Warning => "Degraded",
                    Severity::Intermittent => "Failing now and then",
                };
                lines.push(format!(
                    "{how} from {}: {}.",
                    zone.span(from, to),
                    duration(*lasted)
                ));
            }
        }
        _ => {}
    }
    if let Some(page) = about.page.filter(|_| !lines.is_empty()) {
        lines.push(format!("Status page: {page}"));
    }
    lines
}

/// How an outage was confirmed: "2 failing runs in a row, each tried 3 times", "1 failing
/// run, not retried".
pub(crate) fn confirmation(runs: u32, attempts: u32) -> String {
    let tries = |each: &str| match attempts {
        0 | 1 => ", not retried".to_string(),
        n => format!(", {each}tried {n} times"),
    };
    if runs <= 1 {
        format!("1 failing run{}", tries(""))
    } else {
        format!("{runs} failing runs in a row{}", tries("each "))
    }
}

/// "expires in 10 days", "expires today", "has expired" (a certificate past its end fails
/// verification and is an outage of its own).
pub(crate) fn expires_in(days_left: i64) -> String {
    match days_left {
        ..=-1 => "has expired".to_string(),
        0 => "expires within a day".to_string(),
        n => format!(
            "expires in {}",
            crate::words::plural(n as u64, "day", "days")
        ),
    }
}

/// The date of an RFC 3339 time (`2027-03-01`), or the text as it is.
pub(crate) fn day_of(rfc3339: &str) -> &str {
    rfc3339.get(..10).unwrap_or(rfc3339)
}

/// The subject prefix of a severity's notices.
pub(crate) fn prefix(severity: Severity) -> &'static str {
    match severity {
        Severity::Down => "[DOWN]",
        Severity::Warning => "[WARNING]",
        Severity::Intermittent => "[INTERMITTENT]",
    }
}

pub(crate) fn state_word(severity: Severity) -> &'static str {
    match severity {
        Severity::Down => "down",
        Severity::Warning => "degraded",
        Severity::Intermittent => "failing now and then",
    }
}

pub(crate) fn describe_cert(cert: &CertSeen) -> Vec<String> {
    vec![
        format!("subject: {}", cert.subject),
        format!("issuer: {}", cert.issuer),
        format!("route: {}", cert.route),
        format!(
            "valid until {} ({})",
            day_of(&cert.not_after),
            if cert.days_left < 0 {
                "expired".to_string()
            } else {
                format!(
                    "{} left",
                    crate::words::plural(cert.days_left as u64, "day", "days")
                )
            }
        ),
    ]
}

/// How the certificate is renewed, by who issued it and where it is presented: the
/// diagnosis's own steps.
pub(crate) fn renewal_steps(cert: &CertSeen) -> Vec<String> {
    crate::diagnose::certificate::renewal_steps(&crate::diagnose::certificate::RenewalFacts {
        on_edge: cert.route.contains("edge"),
        behind_cdn: false,
        issuer: &cert.issuer,
        cloudflare_origin_ca: cert.origin_ca,
    })
}

fn human(d: Duration) -> String {
    crate::text::duration(d)
}

/// The Message-ID of every mail of a notification: its key made into a stable id (distinct keys
/// never share one), at the sender's domain. `store` is the store's own identity: another store
/// (a new one, another prober's) counts incidents from 1 again, and its "incident #1" must not
/// thread under this one's.
pub fn message_id(notification: &str, from: &Mailbox, store: &str) -> String {
    format!(
        "<{}@{}>",
        crate::notify::outbox::stable_id_in(notification, store),
        from.email.domain()
    )
}

/// A failure before any message could be offered: the queue waits for the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailError {
    /// The SMTP settings cannot be used (CA file, password variable, sender, plaintext login).
    #[error("SMTP settings: {0}")]
    Settings(String),
    /// The server could not be reached, refused the connection, STARTTLS or the login, or did
    /// not answer in time.
    #[error("SMTP server {server}: {reason}")]
    Server { server: String, reason: String },
}

/// Mail as a delivery channel: one SMTP connection per pass, opened at the first message and
/// kept for the next ones while the server keeps answering.
pub struct MailChannel<'a> {
    smtp: &'a Smtp,
    connection: Option<AsyncSmtpConnection>,
    /// The store's identity, in every Message-ID.
    store: String,
}

impl<'a> MailChannel<'a> {
    pub fn new(smtp: &'a Smtp, store: String) -> Self {
        Self {
            smtp,
            connection: None,
            store,
        }
    }
}

impl Channel for MailChannel<'_> {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Mail
    }

    /// Every mail goes through the one server: when it fails, the queue waits for it.
    fn destination(&self, _message: &OutboxMessage) -> String {
        format!("{}:{}", self.smtp.host, self.smtp.port)
    }

    async fn deliver(&mut self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let smtp = self.smtp;
        if self.connection.as_ref().is_none_or(|c| c.has_broken()) {
            self.connection = None;
            let fresh = match tokio::time::timeout(smtp.timeout, connect(smtp)).await {
                Ok(Ok(fresh)) => fresh,
                Ok(Err(e @ MailError::Settings(_))) => {
                    return Err(DeliveryError::Settings(e.to_string()))
                }
                Ok(Err(e)) => return Err(DeliveryError::DestinationFailing(e.to_string())),
                Err(_) => {
                    let why = format!("no answer within {:?}", smtp.timeout);
                    return Err(DeliveryError::DestinationFailing(why));
                }
            };
            self.connection = Some(fresh);
        }
        let conn = self.connection.as_mut().expect("connected above");
        let outcome = offer(conn, smtp, message, &self.store).await;
        if matches!(outcome, Err(DeliveryError::DestinationFailing(_))) {
            self.connection = None;
        }
        outcome
    }

    async fn finish(&mut self) {
        if let Some(mut conn) = self.connection.take() {
            if !conn.has_broken() {
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.quit()).await;
            }
        }
    }
}

/// Reads the due messages and sends the mail among them (for tests and one-off flushes).
pub async fn flush_outbox(
    store: &mut dyn Store,
    smtp: &Smtp,
    now: OffsetDateTime,
) -> Result<FlushSummary, StoreError> {
    let mut recorder = Recorder::default();
    let due = recorder.due(store, now, &[crate::store::Channel::Mail])?;
    let identity = store.identity()?;
    let mut mail = MailChannel::new(smtp, identity);
    outbox::flush(store, &mut mail, &due, now, &mut recorder).await
}

/// What one SMTP step came to.
enum Step {
    Done,
    /// The server answered no (4xx or 5xx).
    Refused(lettre::transport::smtp::Error),
    /// No answer, a broken connection, a reply we cannot read: the server failed.
    Broken(String),
}

async fn step(
    smtp: &Smtp,
    sending: impl std::future::Future<Output = Result<Response, lettre::transport::smtp::Error>>,
) -> Step {
    match tokio::time::timeout(smtp.timeout, sending).await {
        Ok(Ok(_)) => Step::Done,
        Ok(Err(e)) if e.is_permanent() || e.is_transient() => Step::Refused(e),
        Ok(Err(e)) => Step::Broken(e.to_string()),
        Err(_) => Step::Broken(format!(
            "no answer from {}:{} within {:?}",
            smtp.host, smtp.port, smtp.timeout
        )),
    }
}

/// Offers one message on an open connection, a step at a time, so that each refusal is read for
/// what it is about: the server or our sender (the queue waits), this recipient or this message.
async fn offer(
    conn: &mut AsyncSmtpConnection,
    smtp: &Smtp,
    message: &OutboxMessage,
    store: &str,
) -> Result<(), DeliveryError> {
    use DeliveryError::{DestinationFailing, Permanent, Transient};
    // A message that cannot be built now never can be.
    let (envelope, bytes) = build(smtp, message, store).map_err(Permanent)?;
    let (Some(from), [to]) = (envelope.from(), envelope.to()) else {
        return Err(Permanent("no sender or no recipient".into()));
    };
    let mut parameters = Vec::new();
    let info = conn.server_info();
    let ascii = |a: &lettre::Address| AsRef::<str>::as_ref(a).is_ascii();
    if !ascii(from) || !ascii(to) {
        if !info.supports_feature(Extension::SmtpUtfEight) {
            let why = "a non-ASCII address, and the server does not offer SMTPUTF8";
            return Err(Permanent(why.into()));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !bytes.is_ascii() {
        if !info.supports_feature(Extension::EightBitMime) {
            let why = "a non-ASCII message, and the server does not offer 8BITMIME";
            return Err(Permanent(why.into()));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    // MAIL FROM is about our sender and our settings (a sender refused, "530 authentication
    // required"), the same for every message: the queue waits for the fix, nothing is given up.
    match step(
        smtp,
        conn.command(Mail::new(Some(from.clone()), parameters)),
    )
    .await
    {
        Step::Done => {}
        Step::Refused(e) => {
            conn.abort().await;
            let reason = format!("the server refuses our sender (MAIL FROM): {e}");
            return Err(DestinationFailing(reason));
        }
        Step::Broken(reason) => return Err(DestinationFailing(reason)),
    }
    // RCPT TO is about this recipient; DATA and the message itself about this message.
    for stage in 0..3 {
        let (what, result) = match stage {
            0 => (
                "the recipient",
                step(smtp, conn.command(Rcpt::new(to.clone(), Vec::new()))).await,
            ),
            1 => ("the message", step(smtp, conn.command(Data)).await),
            _ => ("the message", step(smtp, conn.message(&bytes)).await),
        };
        match result {
            Step::Done => {}
            Step::Refused(e) => {
                // The transaction is left half done: the next message opens a new connection.
                conn.abort().await;
                return Err(if e.is_permanent() {
                    Permanent(format!("{what} refused: {e}"))
                } else {
                    Transient(format!("{what} deferred: {e}"))
                });
            }
            Step::Broken(reason) => return Err(DestinationFailing(reason)),
        }
    }
    Ok(())
}

/// The envelope (our sender, this one recipient) and the formatted message.
fn build(smtp: &Smtp, message: &OutboxMessage, store: &str) -> Result<(Envelope, Vec<u8>), String> {
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("sender {:?}: {e}", smtp.from))?;
    let to_text = message
        .recipients
        .first()
        .ok_or_else(|| "no recipient".to_string())?;
    let to: Mailbox = to_text
        .parse()
        .map_err(|e| format!("recipient {to_text:?}: {e}"))?;
    let envelope = Envelope::new(Some(from.email.clone()), vec![to.email.clone()])
        .map_err(|e| e.to_string())?;
    let notification = if message.notification.is_empty() {
        &message.key
    } else {
        &message.notification
    };
    let email = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(printable(&message.subject).into_owned())
        .message_id(Some(message_id(notification, &from, store)));
    // Every mail of an incident threads under its opening mail.
    let email = match &message.thread {
        Some(root) => {
            let root = message_id(root, &from, store);
            email.in_reply_to(root.clone()).references(root)
        }
        None => email,
    };
    let email = email
        .multipart(MultiPart::alternative_plain_html(
            message.body_text.clone(),
            message.body_html.clone(),
        ))
        .map_err(|e| e.to_string())?;
    Ok((envelope, email.formatted()))
}

/// Opens a ready connection: TLS as configured, then the login, if any. The password is never
/// sent unencrypted unless the config allows it.
async fn connect(smtp: &Smtp) -> Result<AsyncSmtpConnection, MailError> {
    let server = format!("{}:{}", smtp.host, smtp.port);
    let failed = |reason: String| MailError::Server {
        server: server.clone(),
        reason,
    };
    let credentials = match (&smtp.username, &smtp.password_env) {
        (Some(user), Some(var)) => {
            let password = std::env::var(var).map_err(|_| {
                MailError::Settings(format!("the password variable {var} is not set"))
            })?;
            Some(Credentials::new(user.clone(), password))
        }
        _ => None,
    };
    let plaintext_login_refused = || {
        MailError::Settings(
            "refusing to send the SMTP password over an unencrypted connection: use security \
             starttls or tls, or set allow_plaintext_auth: true if this network is trusted"
                .into(),
        )
    };
    let hello = ClientId::default();
    let tls = match smtp.security {
        SmtpSecurity::Plain => None,
        SmtpSecurity::Starttls | SmtpSecurity::Tls => Some(tls_parameters(smtp)?),
    };
    let wrapper = tls.clone().filter(|_| smtp.security == SmtpSecurity::Tls);
    let mut conn = AsyncSmtpConnection::connect_tokio1(
        (smtp.host.as_str(), smtp.port),
        Some(smtp.timeout),
        &hello,
        wrapper,
        None,
    )
    .await
    .map_err(|e| failed(e.to_string()))?;
    if let (SmtpSecurity::Starttls, Some(tls)) = (smtp.security, tls) {
        if !conn.can_starttls() {
            return Err(failed(
                "does not offer STARTTLS (security: starttls)".into(),
            ));
        }
        conn.starttls(tls, &hello)
            .await
            .map_err(|e| failed(format!("STARTTLS: {e}")))?;
    }
    if let Some(credentials) = credentials {
        // Checked on the connection itself: whatever the settings say, a password only goes
        // over one that is encrypted, unless the config allows it in the clear.
        if !conn.is_encrypted() && !smtp.allow_plaintext_auth {
            conn.abort().await;
            return Err(plaintext_login_refused());
        }
        // PLAIN only: a refused password is then one clear 535, not a second mechanism's
        // exchange that some servers leave hanging.
        conn.auth(&[Mechanism::Plain], &credentials)
            .await
            .map_err(|e| failed(format!("login refused: {e}")))?;
    }
    Ok(conn)
}

fn tls_parameters(smtp: &Smtp) -> Result<TlsParameters, MailError> {
    let mut tls = TlsParameters::builder(smtp.host.clone());
    if let Some(path) = &smtp.ca_file {
        let roots = crate::settings::load_ca_file(path)
            .map_err(|e| MailError::Settings(format!("ca_file: {e}")))?;
        for der in roots {
            let certificate = Certificate::from_der(der.to_vec())
                .map_err(|e| MailError::Settings(format!("ca_file {}: {e}", path.display())))?;
            tls = tls.add_root_certificate(certificate);
        }
    }
    tls.build_rustls()
        .map_err(|e| MailError::Settings(e.to_string()))
}

/// An ended incident's cause, or its causes in turn when it changed along the way: "Incident
/// #3's causes, in turn: PHP-FPM has no free worker (fpm_saturated), then …".
pub(crate) fn incident_causes(
    incident: u64,
    earlier: &[crate::diagnose::Cause],
    cause: crate::diagnose::Cause,
) -> String {
    let said = |c: &crate::diagnose::Cause| format!("{} ({})", c.title(), c.as_str());
    if earlier.is_empty() {
        return format!("Incident #{incident}'s cause: {}.", said(&cause));
    }
    let turns: Vec<String> = earlier.iter().chain([&cause]).map(said).collect();
    format!(
        "Incident #{incident}'s causes, in turn: {}.",
        turns.join(", then ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_stable_valid_and_distinct() {
        let from: Mailbox = "probe <probe@example.com>".parse().unwrap();
        let id = message_id("shop eu/3/opened", &from, "a");
        assert!(id.starts_with("<shop-eu-3-opened."), "{id}");
        assert!(id.ends_with("@example.com>"), "{id}");
        assert_eq!(id, message_id("shop eu/3/opened", &from, "a"));
        assert_ne!(id, message_id("shop-eu/3/opened", &from, "a"));
        assert_ne!(
            message_id("café/1/opened", &from, "a"),
            message_id("cafè/1/opened", &from, "a")
        );
        // Another store's incident #3 is another mail.
        assert_ne!(id, message_id("shop eu/3/opened", &from, "b"));
    }

    #[test]
    fn an_ended_incident_says_its_causes_in_turn() {
        use crate::diagnose::Cause;
        assert_eq!(
            incident_causes(3, &[], Cause::AppError),
            "Incident #3's cause: the application fails (app_error)."
        );
        assert_eq!(
            incident_causes(3, &[Cause::FpmSaturated], Cause::OriginSlow),
            "Incident #3's causes, in turn: PHP-FPM has no free worker (fpm_saturated), \
             then the origin answers too slowly (origin_slow)."
        );
    }
}
