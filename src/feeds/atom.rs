//! `incidents.atom`: an Atom feed (RFC 4287), one entry per incident of the history. An entry's
//! `updated` moves when the cause changes and when the incident is resolved, so feed readers
//! show it again; its content is the cause history with the evidence of each cause.

use std::fmt::Write as _;

use super::status::cause_title;
use super::FeedSnapshot;
use crate::alert::Severity;
use crate::text::{rfc3339, short_id, xml};

/// The Atom feed; `self_path` is where it is published (`incidents.atom`, `history.atom`).
pub(super) fn feed(snapshot: &FeedSnapshot, self_path: &str) -> String {
    let feed_id = format!("urn:probe:feed:{}", short_id(&snapshot.title));
    // The feed changes when its newest entry does; an empty feed keeps the snapshot's time.
    let updated = feed_updated(snapshot);
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = writeln!(out, r#"<feed xmlns="http://www.w3.org/2005/Atom">"#);
    let _ = writeln!(out, "  <id>{feed_id}</id>");
    let _ = writeln!(out, "  <title>{} — incidents</title>", xml(&snapshot.title));
    let _ = writeln!(out, "  <updated>{}</updated>", rfc3339(updated));
    let _ = writeln!(out, "  <author><name>probe</name></author>");
    let _ = writeln!(out, r#"  <generator>probe</generator>"#);
    if let Some(url) = &snapshot.url {
        let _ = writeln!(
            out,
            r#"  <link rel="alternate" type="text/html" href="{}"/>"#,
            xml(url)
        );
        let _ = writeln!(
            out,
            r#"  <link rel="self" type="application/atom+xml" href="{}{self_path}"/>"#,
            xml(url)
        );
    }
    for incident in &snapshot.incidents {
        let Told {
            id,
            title,
            summary,
            html,
        } = told(snapshot, incident);
        let _ = writeln!(out, "  <entry>");
        let _ = writeln!(out, "    <id>{id}</id>");
        let _ = writeln!(out, "    <title>{}</title>", xml(&title));
        let _ = writeln!(
            out,
            r#"    <category term="{}" label="severity"/>"#,
            incident.severity.as_str()
        );
        let _ = writeln!(
            out,
            "    <published>{}</published>",
            rfc3339(incident.opened_at)
        );
        let _ = writeln!(
            out,
            "    <updated>{}</updated>",
            rfc3339(entry_updated(incident))
        );
        if let Some(url) = &snapshot.url {
            let _ = writeln!(out, r#"    <link rel="alternate" href="{}"/>"#, xml(url));
        }
        if let Some(summary) = summary {
            let _ = writeln!(out, "    <summary>{}</summary>", xml(&summary));
        }
        let _ = writeln!(out, r#"    <content type="html">{}</content>"#, xml(&html));
        let _ = writeln!(out, "  </entry>");
    }
    out.push_str("</feed>\n");
    out
}

/// `history.rss`: the same incidents as RSS 2.0, for readers that take RSS only.
pub(super) fn rss(snapshot: &FeedSnapshot) -> String {
    use time::format_description::well_known::Rfc2822;
    let date = |t: time::OffsetDateTime| t.format(&Rfc2822).unwrap_or_default();
    let updated = feed_updated(snapshot);
    let link = snapshot.url.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="utf-8"?>"#);
    let _ = writeln!(out, r#"<rss version="2.0">"#);
    let _ = writeln!(out, "  <channel>");
    let _ = writeln!(
        out,
        "    <title>{} — incidents</title>",
        xml(&snapshot.title)
    );
    let _ = writeln!(out, "    <link>{}</link>", xml(&link));
    let _ = writeln!(
        out,
        "    <description>Incident history of {}</description>",
        xml(&snapshot.title)
    );
    let _ = writeln!(out, "    <lastBuildDate>{}</lastBuildDate>", date(updated));
    let _ = writeln!(out, "    <generator>probe</generator>");
    for incident in &snapshot.incidents {
        let Told {
            id, title, html, ..
        } = told(snapshot, incident);
        let _ = writeln!(out, "    <item>");
        let _ = writeln!(out, "      <title>{}</title>", xml(&title));
        if !link.is_empty() {
            let _ = writeln!(out, "      <link>{}</link>", xml(&link));
        }
        let _ = writeln!(out, r#"      <guid isPermaLink="false">{id}</guid>"#);
        let _ = writeln!(
            out,
            "      <category>{}</category>",
            incident.severity.as_str()
        );
        let _ = writeln!(
            out,
            "      <pubDate>{}</pubDate>",
            date(entry_updated(incident))
        );
        let _ = writeln!(out, "      <description>{}</description>", xml(&html));
        let _ = writeln!(out, "    </item>");
    }
    out.push_str("  </channel>\n</rss>\n");
    out
}

/// What the feeds say of one incident.
struct Told {
    id: String,
    title: String,
    summary: Option<String>,
    html: String,
}

fn told(snapshot: &FeedSnapshot, incident: &crate::store::IncidentRecord) -> Told {
    {
        let id = format!(
            "urn:probe:incident:{}:{}",
            short_id(&format!("site:{}", incident.site)),
            incident.number
        );
        let last = incident.causes.last();
        let what = last.map_or("down".to_string(), |c| {
            format!("{} ({})", cause_title(&c.cause), c.cause)
        });
        let kind = match incident.severity {
            Severity::Down => "DOWN",
            Severity::Warning => "WARNING",
            Severity::Intermittent => "INTERMITTENT",
        };
        let sites = incident.sites_label();
        let title = match incident.closed_at {
            Some(_) if incident.severity == Severity::Down => {
                format!("[RESOLVED] {sites}: {what}")
            }
            Some(_) => format!("[RESOLVED {kind}] {sites}: {what}"),
            None => format!("[{kind}] {sites}: {what}"),
        };
        let mut html = String::new();
        let began = match incident.severity {
            Severity::Down => "went down",
            Severity::Warning => "was degraded",
            Severity::Intermittent => "began failing now and then",
        };
        let _ = write!(
            html,
            "<p>{} {began} at {}.",
            xml(&sites),
            rfc3339(incident.opened_at)
        );
        match incident.closed_at {
            Some(closed) => {
                // Said as the mails say it.
                let lasted =
                    std::time::Duration::try_from(closed - incident.opened_at).unwrap_or_default();
                let _ = write!(
                    html,
                    " Resolved at {} after {}.</p>",
                    rfc3339(closed),
                    crate::text::duration(lasted)
                );
            }
            None => html.push_str(" Still open.</p>"),
        }
        for cause in &incident.causes {
            // Public: the cause, not the servers' words (versions, addresses, commands).
            let summary = if snapshot.public {
                String::new()
            } else {
                format!("<p>{}</p>", xml(&cause.summary))
            };
            let _ = write!(
                html,
                "<h3>{} · {} ({})</h3>{summary}",
                rfc3339(cause.at),
                xml(&cause_title(&cause.cause)),
                xml(&cause.cause),
            );
            if !cause.evidence.is_empty() && !snapshot.public {
                html.push_str("<ul>");
                for line in &cause.evidence {
                    let _ = write!(html, "<li><code>{}</code></li>", xml(line));
                }
                html.push_str("</ul>");
            }
        }
        let summary = last.map(|cause| {
            if snapshot.public {
                cause_title(&cause.cause)
            } else {
                cause.summary.clone()
            }
        });
        Told {
            id,
            title,
            summary,
            html,
        }
    }
}

/// When the feed last changed: its newest entry, else (empty) the snapshot's time.
fn feed_updated(snapshot: &FeedSnapshot) -> time::OffsetDateTime {
    snapshot
        .incidents
        .iter()
        .map(entry_updated)
        .max()
        .unwrap_or(snapshot.generated_at)
}

/// When an incident last changed: its resolution, else its latest cause, else its opening.
fn entry_updated(incident: &crate::store::IncidentRecord) -> time::OffsetDateTime {
    incident
        .closed_at
        .or(incident.causes.last().map(|c| c.at))
        .unwrap_or(incident.opened_at)
}
