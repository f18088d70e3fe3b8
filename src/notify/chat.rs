//! Chat and paging channels: Slack (incoming webhook, Block Kit), Microsoft Teams (Workflows
//! webhook, Adaptive Card), Discord (webhook, embeds), Telegram (Bot API `sendMessage`, HTML),
//! ntfy (JSON publishing), PagerDuty (Events API v2) and Opsgenie (Alert API). Each message says
//! the diagnosis in the provider's idiom — the cause as title, the hop, the first evidence
//! lines, the first next step, the status page — cut to the provider's documented limits.
//!
//! Rendered into the outbox with the run that decided it, like mail: the request body is kept
//! there, never a secret; the webhook URL, token or key is read from the environment when the
//! message is delivered. A paging service gets `trigger` / create on trouble and `resolve` /
//! close on recovery, keyed by the incident (`dedup_key`, `alias`), so a delivery sent twice
//! never opens a second page.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use hyper::body::Bytes;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::alert::{Notification, Severity};
use crate::config::{Notifier, Provider};
use crate::engine::tls::Verifier;
use crate::engine::trust_roots;
use crate::notify::mail::{tell, Told};
use crate::notify::outbox::{Channel, DeliveryError};
use crate::notify::webhook::{send_json, WebhookError};
use crate::observe::Route;
use crate::store::{Channel as ChannelKind, NewMessage, OutboxMessage};

/// Bound on one delivery: connect, TLS, request and answer.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Evidence lines a chat message quotes.
const EVIDENCE_SHOWN: usize = 3;

/// The documented limits each message is cut to.
mod limits {
    /// Slack: a header block's text, a section's text, the fallback `text`.
    pub const SLACK_HEADER: usize = 150;
    pub const SLACK_SECTION: usize = 3000;
    /// Discord: an embed's title, description, a field's value (all of an embed: 6000).
    pub const DISCORD_TITLE: usize = 256;
    pub const DISCORD_DESCRIPTION: usize = 4096;
    pub const DISCORD_FIELD: usize = 1024;
    /// Telegram: a message's text.
    pub const TELEGRAM_TEXT: usize = 4096;
    /// ntfy: a message's body (bytes) and title.
    pub const NTFY_MESSAGE: usize = 4096;
    pub const NTFY_TITLE: usize = 250;
    /// PagerDuty: the payload's summary.
    pub const PAGERDUTY_SUMMARY: usize = 1024;
    /// Opsgenie: message, alias, description.
    pub const OPSGENIE_MESSAGE: usize = 130;
    pub const OPSGENIE_ALIAS: usize = 512;
    pub const OPSGENIE_DESCRIPTION: usize = 15000;
    /// Teams (Power Automate): a card's text kept well inside the 28 KB message limit.
    pub const TEAMS_TEXT: usize = 4000;
}

/// What a chat message says, taken from the mail's words for the notification.
struct Said {
    title: String,
    summary: String,
    hop: Option<&'static str>,
    cause: Option<&'static str>,
    evidence: Vec<String>,
    next_step: Option<String>,
    severity: Severity,
    trouble: bool,
    site: String,
    url: String,
    status_page: Option<String>,
}

impl Said {
    fn of(m: ChatMessage<'_>, status_page: Option<&str>) -> Said {
        let told = m.told;
        let d = told.diagnosis;
        let evidence = d.map_or(told.evidence.clone(), |d| {
            let mut lines = told.evidence.clone();
            lines.extend(d.evidence.iter().cloned());
            lines
        });
        let steps = d.map_or(told.steps.clone(), |d| d.next_steps.clone());
        Said {
            title: told.subject,
            summary: d.map_or(told.lead.clone(), |d| {
                if told.evidence.is_empty() {
                    d.summary.clone()
                } else {
                    // A shared incident: its lead, then the first site's diagnosis.
                    format!("{} {}", told.lead, d.summary)
                }
            }),
            hop: d.map(|d| d.hop.as_str()),
            cause: d.map(|d| d.cause.as_str()),
            evidence: evidence.into_iter().take(EVIDENCE_SHOWN).collect(),
            next_step: steps.into_iter().next(),
            severity: m.severity,
            trouble: m.trouble,
            site: m.site,
            url: m.url,
            status_page: status_page.map(str::to_string),
        }
    }

    /// Where a click goes: the status page, else the site.
    fn link(&self) -> Option<&str> {
        self.status_page
            .as_deref()
            .or((!self.url.is_empty()).then_some(self.url.as_str()))
    }
}

/// One chat or paging message: its words (the mail's, `Told`) and what it is about.
pub struct ChatMessage<'a> {
    pub told: Told<'a>,
    /// What it names: a site, or a shared incident's sites (`2 sites on 203.0.113.10`).
    pub site: String,
    /// Where a click goes when there is no status page (empty for no one URL).
    pub url: String,
    pub severity: Severity,
    /// It says something is wrong (else that it is over).
    pub trouble: bool,
    /// It ends the paging service's incident (resolve, close).
    pub ends: bool,
    /// A reminder: paging services are not reminded.
    pub reminder: bool,
    /// `opened`, `recovered`, …: the class of a paging event without a cause.
    pub transition: &'static str,
    /// The paging services' incident: one key for its trouble and its end.
    pub incident_key: String,
}

impl<'a> ChatMessage<'a> {
    /// The message of a notification about one site; `None` for what is told elsewhere.
    pub fn of_site(site: &str, url: &str, n: &'a Notification) -> Option<ChatMessage<'a>> {
        let told = tell(site, n)?;
        Some(ChatMessage {
            told,
            site: site.to_string(),
            url: url.to_string(),
            severity: n.severity(),
            trouble: n.is_trouble(),
            ends: matches!(
                n,
                Notification::Recovered { .. }
                    | Notification::Folded { .. }
                    | Notification::CertRenewed { .. }
                    | Notification::ConnectivityRestored { .. }
                    | Notification::RegionOnline { .. }
            ),
            reminder: matches!(n, Notification::Reminder { .. }),
            transition: n.transition(),
            incident_key: incident_key(site, n),
        })
    }
}

/// The chat and paging deliveries of one notification about `site`: one per channel that
/// covers the site and the notification's severity (and takes this kind of notification).
pub fn render(
    site: &str,
    url: &str,
    n: &Notification,
    notifiers: &[Notifier],
    status_page: Option<&str>,
    at: OffsetDateTime,
) -> Vec<NewMessage> {
    let key = n.key(site);
    let severity = n.severity();
    notifiers
        .iter()
        .filter(|c| c.covers(site, severity.as_str()))
        .filter_map(|c| {
            let folded = matches!(n, Notification::Folded { .. });
            // A chat hears of a folded incident in the graver one's opening; a paging
            // service closes it.
            let message = if folded && c.provider.pages() {
                ChatMessage {
                    told: Told {
                        subject: String::new(),
                        lead: String::new(),
                        diagnosis: None,
                        evidence: Vec::new(),
                        steps: Vec::new(),
                    },
                    site: site.to_string(),
                    url: url.to_string(),
                    severity,
                    trouble: false,
                    ends: true,
                    reminder: false,
                    transition: n.transition(),
                    incident_key: incident_key(site, n),
                }
            } else {
                ChatMessage::of_site(site, url, n)?
            };
            message_for(c, &key, n.transition(), None, message, status_page, at)
        })
        .collect()
}

/// The delivery of `message` to channel `c`, as part of notification `key`; `None` when the
/// channel is not told of it (a paging service is not reminded).
pub fn message_for(
    c: &Notifier,
    key: &str,
    transition: &str,
    thread: Option<String>,
    message: ChatMessage<'_>,
    status_page: Option<&str>,
    at: OffsetDateTime,
) -> Option<NewMessage> {
    let body = body_for(c, message, status_page, at)?;
    Some(NewMessage {
        channel: ChannelKind::Chat,
        key: format!("{key}#{}", c.id),
        notification: key.to_string(),
        recipients: vec![c.id.clone()],
        subject: transition.to_string(),
        body_text: crate::text::json(&body),
        body_html: String::new(),
        thread,
    })
}

/// The provider's request for `m`, or `None` when this channel is not told of it.
fn body_for(
    c: &Notifier,
    m: ChatMessage<'_>,
    status_page: Option<&str>,
    at: OffsetDateTime,
) -> Option<Value> {
    if c.provider.pages() {
        return page(c.provider, m, status_page, at);
    }
    let said = Said::of(m, status_page);
    Some(match c.provider {
        Provider::Slack => slack(&said),
        Provider::Teams => teams(&said),
        Provider::Discord => discord(&said, at),
        Provider::Telegram => telegram(&said),
        Provider::Ntfy => ntfy(&said, c.url.as_deref().unwrap_or_default()),
        Provider::PagerDuty | Provider::Opsgenie => unreachable!("paging services page"),
    })
}

// ---- the providers' idioms ----------------------------------------------------------------

/// `text` cut to `max` characters, with an ellipsis when it was longer.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` cut to at most `max` bytes (on a character boundary), with an ellipsis.
fn cut_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Markdown's marks escaped with a backslash (Adaptive Cards' text).
fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '[' | ']' | '(' | ')' | '*' | '_' | '~' | '`' | '#' | '>' | '!'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Slack's mrkdwn: `&`, `<` and `>` are its control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn slack(s: &Said) -> Value {
    let mut lead = String::new();
    if !s.url.is_empty() {
        lead.push_str(&format!(
            "*<{}|{}>*",
            slack_escape(&s.url),
            slack_escape(&s.site)
        ));
    } else {
        lead.push_str(&format!("*{}*", slack_escape(&s.site)));
    }
    if let (Some(hop), Some(cause)) = (s.hop, s.cause) {
        lead.push_str(&format!(" · hop `{hop}` · cause `{cause}`"));
    }
    lead.push('\n');
    lead.push_str(&slack_escape(&s.summary));
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": cut(&s.title, limits::SLACK_HEADER), "emoji": false}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&lead, limits::SLACK_SECTION)}}),
    ];
    if !s.evidence.is_empty() {
        let lines: Vec<String> = s
            .evidence
            .iter()
            .map(|l| format!("• {}", slack_escape(l)))
            .collect();
        let text = format!("*Evidence*\n{}", lines.join("\n"));
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&text, limits::SLACK_SECTION)}}));
    }
    if let Some(step) = &s.next_step {
        // Inside a code block Slack shows the text as it is (still escaped).
        let text = format!("*Next step*\n```{}```", slack_escape(step));
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(&text, limits::SLACK_SECTION)}}));
    }
    if let Some(page) = &s.status_page {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("<{}|Status page> · probe", slack_escape(page))}]}));
    }
    json!({ "text": cut(&s.title, limits::SLACK_SECTION), "blocks": blocks })
}

fn discord(s: &Said, at: OffsetDateTime) -> Value {
    let colour = match (s.trouble, s.severity) {
        (false, _) => 0x2e_b8_6b,
        (true, Severity::Down) => 0xd9_3f_3f,
        (true, Severity::Intermittent) => 0xe0_7b_24,
        (true, Severity::Warning) => 0xe0_b4_24,
    };
    let title = cut(&s.title, limits::DISCORD_TITLE);
    let description = cut(&s.summary, limits::DISCORD_DESCRIPTION.min(2000));
    let mut fields = Vec::new();
    if let (Some(hop), Some(cause)) = (s.hop, s.cause) {
        fields.push(json!({"name": "Hop", "value": hop, "inline": true}));
        fields.push(json!({"name": "Cause", "value": cause, "inline": true}));
    }
    if !s.evidence.is_empty() {
        // In a code block: what a server wrote (a `Server` header, a page) is shown, never
        // rendered as a link or a mention.
        let lines: Vec<String> = s
            .evidence
            .iter()
            .map(|l| format!("- {}", l.replace("```", "'''")))
            .collect();
        let value = format!(
            "```\n{}\n```",
            cut(&lines.join("\n"), limits::DISCORD_FIELD - 8)
        );
        fields.push(json!({"name": "Evidence", "value": value}));
    }
    if let Some(step) = &s.next_step {
        // A code span cannot hold a backtick: the command is shown as it is, in a block.
        let value = cut(
            &format!("```\n{}\n```", step.replace("```", "'''")),
            limits::DISCORD_FIELD - 4,
        );
        fields.push(json!({"name": "Next step", "value": value}));
    }
    let mut embed = json!({
        "title": title,
        "description": description,
        "color": colour,
        "fields": fields,
        "footer": {"text": "probe"},
        "timestamp": crate::text::rfc3339(at),
    });
    if let Some(link) = s.link() {
        embed["url"] = json!(link);
    }
    // Its parts are each bounded, and together stay under Discord's total for an embed
    // (title 256 + description 2000 + fields 4 × 1024 + footer).
    // Nothing in a site's text may ping anyone.
    json!({ "username": "probe", "embeds": [embed], "allowed_mentions": {"parse": []} })
}

fn teams(s: &Said) -> Value {
    let mut body = vec![
        json!({"type": "TextBlock", "text": cut(&s.title, 300), "weight": "Bolder", "size": "Medium", "wrap": true}),
        json!({"type": "TextBlock", "text": cut(&s.summary, limits::TEAMS_TEXT), "wrap": true}),
    ];
    let mut facts = vec![json!({"title": "Site", "value": s.site})];
    if let (Some(hop), Some(cause)) = (s.hop, s.cause) {
        facts.push(json!({"title": "Hop", "value": hop}));
        facts.push(json!({"title": "Cause", "value": cause}));
    }
    body.push(json!({"type": "FactSet", "facts": facts}));
    if !s.evidence.is_empty() {
        // Markdown's link and emphasis marks escaped: what a server wrote is shown as written.
        let lines: Vec<String> = s
            .evidence
            .iter()
            .map(|l| format!("- {}", markdown_escape(l)))
            .collect();
        body.push(json!({"type": "TextBlock", "text": cut(&format!("**Evidence**\n\n{}", lines.join("\n")), limits::TEAMS_TEXT), "wrap": true}));
    }
    if let Some(step) = &s.next_step {
        body.push(json!({"type": "TextBlock", "text": "**Next step**", "wrap": true}));
        body.push(json!({"type": "TextBlock", "text": cut(step, limits::TEAMS_TEXT), "fontType": "Monospace", "wrap": true}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    });
    if let Some(link) = s.link() {
        let title = if s.status_page.is_some() {
            "Status page"
        } else {
            "Open the site"
        };
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": title, "url": link}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

/// Telegram's HTML: `<`, `>` and `&` are escaped, and only the tags it knows are used.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The chat is set when the message is sent (the channel's settings then).
fn telegram(s: &Said) -> Value {
    // Each part is cut before it is escaped and wrapped, so a cut never splits a tag or an
    // entity, and the whole stays under the limit.
    let budget = limits::TELEGRAM_TEXT - 400;
    let mut text = format!(
        "<b>{}</b>\n{}",
        html_escape(&cut(&s.title, 300)),
        html_escape(&cut(&s.summary, budget / 3))
    );
    if let (Some(hop), Some(cause)) = (s.hop, s.cause) {
        text.push_str(&format!(
            "\nhop <code>{hop}</code> · cause <code>{cause}</code>"
        ));
    }
    if !s.evidence.is_empty() {
        text.push_str("\n\n<b>Evidence</b>");
        for line in &s.evidence {
            text.push_str(&format!(
                "\n• {}",
                html_escape(&cut(line, budget / 3 / EVIDENCE_SHOWN))
            ));
        }
    }
    if let Some(step) = &s.next_step {
        text.push_str(&format!(
            "\n\n<b>Next step</b>\n<code>{}</code>",
            html_escape(&cut(step, 500))
        ));
    }
    let mut links = Vec::new();
    if !s.url.is_empty() {
        links.push(format!(
            "<a href=\"{}\">{}</a>",
            html_escape(&s.url),
            html_escape(&cut(&s.site, 100))
        ));
    }
    if let Some(page) = &s.status_page {
        links.push(format!("<a href=\"{}\">Status page</a>", html_escape(page)));
    }
    if !links.is_empty() {
        text.push_str(&format!("\n\n{}", links.join(" · ")));
    }
    json!({
        "text": text,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": true},
    })
}

fn ntfy(s: &Said, topic_url: &str) -> Value {
    let topic = url::Url::parse(topic_url)
        .map(|u| u.path().trim_matches('/').to_string())
        .unwrap_or_default();
    let (priority, tag) = match (s.trouble, s.severity) {
        (false, _) => (3, "white_check_mark"),
        (true, Severity::Down) => (5, "rotating_light"),
        (true, Severity::Intermittent) => (4, "warning"),
        (true, Severity::Warning) => (3, "warning"),
    };
    let mut message = s.summary.clone();
    for line in &s.evidence {
        message.push_str(&format!("\n- {line}"));
    }
    if let Some(step) = &s.next_step {
        message.push_str(&format!("\nNext: {step}"));
    }
    let mut body = json!({
        "topic": topic,
        "title": cut(&s.title, limits::NTFY_TITLE),
        "message": cut_bytes(&message, limits::NTFY_MESSAGE),
        "priority": priority,
        "tags": [tag, s.severity.as_str()],
    });
    if let Some(link) = s.link() {
        body["click"] = json!(link);
    }
    body
}

/// The paging services' incident: the same key for its trouble and its end (`:` between its
/// parts: an Opsgenie alias goes into a URL path, where `/` would split it).
fn incident_key(site: &str, n: &Notification) -> String {
    match n {
        Notification::CertExpiring { cert, .. } | Notification::CertRenewed { cert, .. } => {
            format!("{site}:certificate:{}", cert.id)
        }
        Notification::RegionOffline {
            region, incident, ..
        }
        | Notification::RegionOnline {
            region, incident, ..
        } => format!("@region:{region}:{incident}"),
        _ => format!(
            "{site}:{}:{}",
            n.severity().as_str(),
            n.incident().unwrap_or_default()
        ),
    }
}

/// `text` as one URL path segment: every byte but RFC 3986's unreserved ones percent-encoded
/// (a space is `%20`, never `+`).
fn path_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn page(
    provider: Provider,
    m: ChatMessage<'_>,
    status_page: Option<&str>,
    at: OffsetDateTime,
) -> Option<Value> {
    let dedup = m.incident_key.clone();
    if m.reminder {
        return None;
    }
    if m.ends {
        return Some(match provider {
            Provider::PagerDuty => json!({"event_action": "resolve", "dedup_key": dedup}),
            _ => json!({
                "close": cut(&dedup, limits::OPSGENIE_ALIAS),
                "body": {"source": "probe", "note": format!("{} resolved", m.transition)},
            }),
        });
    }
    let (site, url, transition) = (m.site.clone(), m.url.clone(), m.transition);
    let s = Said::of(m, status_page);
    let details = json!({
        "site": site,
        "url": url,
        "hop": s.hop,
        "cause": s.cause,
        "summary": s.summary,
        "evidence": s.evidence,
        "next_step": s.next_step,
    });
    Some(match provider {
        Provider::PagerDuty => {
            let severity = match s.severity {
                Severity::Down => "critical",
                Severity::Intermittent => "error",
                Severity::Warning => "warning",
            };
            let mut event = json!({
                "event_action": "trigger",
                "dedup_key": dedup,
                "payload": {
                    "summary": cut(&s.title, limits::PAGERDUTY_SUMMARY),
                    "source": if url.is_empty() { site.clone() } else { url.clone() },
                    "severity": severity,
                    "timestamp": crate::text::rfc3339(at),
                    "component": s.hop.unwrap_or("prober"),
                    "class": s.cause.unwrap_or(transition),
                    "custom_details": details,
                },
                "client": "probe",
            });
            if let Some(page) = status_page {
                event["client_url"] = json!(page);
                event["links"] = json!([{"href": page, "text": "Status page"}]);
            }
            event
        }
        _ => {
            let priority = match s.severity {
                Severity::Down => "P1",
                Severity::Intermittent => "P2",
                Severity::Warning => "P3",
            };
            let mut description = s.summary.clone();
            for line in &s.evidence {
                description.push_str(&format!("\n- {line}"));
            }
            if let Some(step) = &s.next_step {
                description.push_str(&format!("\nNext step: {step}"));
            }
            if let Some(page) = status_page {
                description.push_str(&format!("\nStatus page: {page}"));
            }
            let mut tags = vec![s.severity.as_str().to_string()];
            tags.extend(s.cause.map(str::to_string));
            json!({
                "create": {
                    "message": cut(&s.title, limits::OPSGENIE_MESSAGE),
                    "alias": cut(&dedup, limits::OPSGENIE_ALIAS),
                    "description": cut(&description, limits::OPSGENIE_DESCRIPTION),
                    "priority": priority,
                    "tags": tags,
                    "details": {"site": site, "url": url, "hop": s.hop.unwrap_or(""), "cause": s.cause.unwrap_or("")},
                    "entity": cut(&site, 512),
                    "source": "probe",
                }
            })
        }
    })
}

// ---- delivery -------------------------------------------------------------------------------

/// Chat and paging services as a delivery channel, over the engine's own connect, TLS and HTTP
/// code, with the public WebPKI roots and `defaults.ca_file`'s.
pub struct ChatChannel<'a> {
    notifiers: &'a [Notifier],
    verifier: Result<Verifier, String>,
}

impl<'a> ChatChannel<'a> {
    pub fn new(notifiers: &'a [Notifier], extra_roots: &Arc<[CertificateDer<'static>]>) -> Self {
        let verifier = trust_roots(extra_roots)
            .map(|r| r.verifier_for(Route::Edge))
            .map_err(|e| e.to_string());
        Self {
            notifiers,
            verifier,
        }
    }
}

impl Channel for ChatChannel<'_> {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Chat
    }

    fn destination(&self, message: &OutboxMessage) -> String {
        message.recipients.first().cloned().unwrap_or_default()
    }

    async fn deliver(&mut self, message: &OutboxMessage) -> Result<(), DeliveryError> {
        let id = self.destination(message);
        let Some(notifier) = self.notifiers.iter().find(|n| n.id == id) else {
            return Err(DeliveryError::Permanent(format!(
                "{id} is no longer in probes.yaml"
            )));
        };
        let verifier = self
            .verifier
            .clone()
            .map_err(DeliveryError::DestinationFailing)?;
        deliver(notifier, message, verifier).await
    }
}

/// The request to make for a stored message: where, with which headers, what body.
struct Request {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Value,
}

/// Sends one stored message to its provider and reads the answer as the provider documents it.
pub async fn deliver(
    notifier: &Notifier,
    message: &OutboxMessage,
    verifier: Verifier,
) -> Result<(), DeliveryError> {
    let name = &notifier.id;
    let body: Value = serde_json::from_str(&message.body_text).map_err(|e| {
        DeliveryError::Permanent(format!("{name}: the stored request is not JSON: {e}"))
    })?;
    let request = request(notifier, body)?;
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    let answer = send_json(
        &request.url,
        request.headers,
        Bytes::from(crate::text::json(&request.body)),
        verifier,
        deadline,
    )
    .await
    // Unreachable, timing out, a URL that does not parse: the channel's settings or its
    // service, the same for every message of it.
    .map_err(|e: WebhookError| DeliveryError::DestinationFailing(format!("{name}: {e}")))?;
    judge(notifier.provider, name, &answer)
}

/// The secret a channel's settings name, from the environment now.
fn secret(notifier: &Notifier) -> Result<Option<String>, DeliveryError> {
    match &notifier.secret_env {
        Some(var) => std::env::var(var).map(Some).map_err(|_| {
            DeliveryError::Settings(format!(
                "{}: {var} is not set in this environment",
                notifier.id
            ))
        }),
        None => Ok(None),
    }
}

fn header(
    name: HeaderName,
    value: &str,
    id: &str,
) -> Result<(HeaderName, HeaderValue), DeliveryError> {
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        DeliveryError::DestinationFailing(format!(
            "{id}: the secret holds a character a header cannot carry"
        ))
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

fn request(notifier: &Notifier, mut body: Value) -> Result<Request, DeliveryError> {
    let id = &notifier.id;
    let secret = secret(notifier)?;
    let base = |default: &str| {
        notifier
            .url
            .clone()
            .unwrap_or_else(|| default.to_string())
            .trim_end_matches('/')
            .to_string()
    };
    let mut headers = Vec::new();
    let url = match notifier.provider {
        Provider::Slack | Provider::Teams | Provider::Discord => {
            // The URL is the secret: it goes in clear to nobody (a relay on this host aside).
            let url = secret.unwrap_or_default();
            let clear = url::Url::parse(&url)
                .is_ok_and(|u| u.scheme() != "https" && !crate::config::notify_is_loopback(&u));
            if clear {
                return Err(DeliveryError::DestinationFailing(format!(
                    "{id}: the webhook URL in ${} is not https",
                    notifier.secret_env.as_deref().unwrap_or_default()
                )));
            }
            url
        }
        Provider::Telegram => {
            body["chat_id"] = json!(notifier.chat_id.clone().unwrap_or_default());
            format!(
                "{}/bot{}/sendMessage",
                base("https://api.telegram.org"),
                secret.unwrap_or_default()
            )
        }
        Provider::Ntfy => {
            if let Some(token) = secret {
                headers.push(header(AUTHORIZATION, &format!("Bearer {token}"), id)?);
            }
            // JSON publishing goes to the server's root; the topic is in the body.
            let topic_url = notifier.url.clone().unwrap_or_default();
            let mut root = url::Url::parse(&topic_url).map_err(|_| {
                DeliveryError::DestinationFailing(format!("{id}: the topic URL does not parse"))
            })?;
            root.set_path("/");
            root.set_query(None);
            root.to_string()
        }
        Provider::PagerDuty => {
            body["routing_key"] = json!(secret.unwrap_or_default());
            base("https://events.pagerduty.com/v2/enqueue")
        }
        Provider::Opsgenie => {
            headers.push(header(
                AUTHORIZATION,
                &format!("GenieKey {}", secret.unwrap_or_default()),
                id,
            )?);
            let api = base("https://api.opsgenie.com");
            if let Some(create) = body.get("create").cloned() {
                body = create;
                format!("{api}/v2/alerts")
            } else {
                let alias = body["close"].as_str().unwrap_or_default().to_string();
                body = body["body"].take();
                format!(
                    "{api}/v2/alerts/{}/close?identifierType=alias",
                    path_segment(&alias)
                )
            }
        }
    };
    Ok(Request { url, headers, body })
}

/// Reads a provider's answer: delivered, refused for good (the request is wrong), not now (a
/// rate limit, with how long to wait), or the channel's settings failing (a revoked token).
fn judge(
    provider: Provider,
    id: &str,
    answer: &crate::observe::ResponseFacts,
) -> Result<(), DeliveryError> {
    let status = answer.status;
    let text: Value = serde_json::from_str(&answer.body_excerpt).unwrap_or(Value::Null);
    // What the provider said, in its own words (never the request: it may hold the secret).
    let said = match provider {
        Provider::Telegram => text["description"].as_str().map(str::to_string),
        Provider::Discord | Provider::Opsgenie => text["message"].as_str().map(str::to_string),
        Provider::PagerDuty => text["errors"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .or_else(|| text["message"].as_str().map(str::to_string)),
        Provider::Ntfy => text["error"].as_str().map(str::to_string),
        Provider::Slack | Provider::Teams => {
            Some(cut(answer.body_excerpt.trim(), 200)).filter(|s| !s.is_empty())
        }
    }
    .map(|s| crate::text::printable(&cut(&s, 300)).into_owned());
    let reason = match &said {
        Some(s) => format!("{id}: {} answered {status}: {s}", provider.as_str()),
        None => format!("{id}: {} answered {status}", provider.as_str()),
    };
    // Telegram says ok:false even where the status is 200.
    let refused_inside = provider == Provider::Telegram && text["ok"] == Value::Bool(false);
    // A 400 about the channel's own settings (a chat the bot is not in, a routing key that is
    // not one) holds its messages until the settings are fixed, like a revoked token.
    let settings_fault = match provider {
        Provider::Telegram => said
            .as_deref()
            .is_some_and(|s| s.contains("chat not found")),
        Provider::PagerDuty => said.as_deref().is_some_and(|s| {
            let s = s.to_ascii_lowercase();
            s.contains("routing_key") || s.contains("routing key")
        }),
        _ => false,
    };
    match status {
        200..=299 if !refused_inside => Ok(()),
        400 if settings_fault => Err(DeliveryError::DestinationFailing(reason)),
        429 => {
            let wait = answer
                .headers
                .retry_after
                .as_deref()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .or_else(|| text["parameters"]["retry_after"].as_f64())
                .or_else(|| text["retry_after"].as_f64())
                .filter(|w| w.is_finite() && *w >= 0.0)
                .map_or(Duration::ZERO, |w| Duration::from_secs_f64(w.min(86_400.0)));
            Err(DeliveryError::Throttled { reason, wait })
        }
        // The channel's settings: a revoked token or key, a webhook or chat that is gone.
        401 | 403 | 404 | 410 => Err(DeliveryError::DestinationFailing(reason)),
        // A paging service's messages must arrive in order (a resolve before its trigger would
        // leave a page open): its failure holds the channel, whose later messages wait.
        408 | 500..=599 if provider.pages() => Err(DeliveryError::DestinationFailing(reason)),
        408 | 500..=599 => Err(DeliveryError::Transient(reason)),
        // The request itself (a field missing or too long): sending it again gets the same.
        _ => Err(DeliveryError::Permanent(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_is_one_path_segment() {
        assert_eq!(path_segment("my shop:down:3"), "my%20shop%3Adown%3A3");
        assert_eq!(path_segment("a/b+c"), "a%2Fb%2Bc");
    }

    #[test]
    fn cuts_keep_within_the_limits_on_character_boundaries() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        let long = "é".repeat(5000);
        assert!(cut_bytes(&long, limits::NTFY_MESSAGE).len() <= limits::NTFY_MESSAGE);
        assert_eq!(slack_escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(
            markdown_escape("[x](https://evil)"),
            "\\[x\\]\\(https://evil\\)"
        );
    }
}
