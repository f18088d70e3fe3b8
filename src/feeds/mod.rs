//! The status feeds: `status.json` (Statuspage's v2 summary shape), `incidents.atom` (RFC 4287),
//! `metrics` (Prometheus text, blackbox_exporter's names), an HTML status page and one SVG badge
//! per site.
//!
//! One snapshot is read from the store (`snapshot`), and every feed is rendered from it by pure
//! functions (`render_all`), so the files `probe run --feeds-dir` writes and what `probe watch
//! --listen` serves are the same bytes, and every feed shows the same uptime figures.

mod atom;
mod html;
mod metrics;
mod status;

use std::path::Path;

use ring::digest::{digest, SHA256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::{Config, MaintenanceWindow};
use crate::observe::{ProbeReport, Status};
use crate::store::{IncidentRecord, Store, StoreError, UptimeHour};

/// Days of history the feeds show (uptime bars, the longest uptime window, incidents).
pub const HISTORY_DAYS: i64 = 90;

/// The uptime windows every feed reports, with their labels.
pub const WINDOWS: [(&str, i64); 4] = [
    ("24h", 3600 * 24),
    ("7d", 86_400 * 7),
    ("30d", 86_400 * 30),
    ("90d", 86_400 * 90),
];

/// Everything the feeds show, read at one moment.
#[derive(Debug, Clone)]
pub struct FeedSnapshot {
    pub generated_at: OffsetDateTime,
    pub title: String,
    /// Where the page is published (ends in `/`), if configured.
    pub url: Option<String>,
    pub sites: Vec<SiteFeed>,
    /// Incidents open now or closed within the history, newest first.
    pub incidents: Vec<IncidentRecord>,
    /// Maintenance windows in progress or to come.
    pub maintenance: Vec<MaintenanceWindow>,
}

/// One site as the feeds show it.
#[derive(Debug, Clone)]
pub struct SiteFeed {
    pub name: String,
    pub url: String,
    /// The latest result: when, and the report.
    pub latest: Option<(OffsetDateTime, ProbeReport)>,
    /// A maintenance window covers the site now.
    pub in_maintenance: bool,
    /// Share of results not `down`, per window of `WINDOWS`; `None` without results.
    pub uptime: [Option<f64>; 4],
    /// One entry per day of the history, oldest first: (day's start, results, down results).
    pub days: Vec<(OffsetDateTime, u32, u32)>,
}

impl SiteFeed {
    /// The site's status now (`Unknown` before its first result).
    pub fn status(&self) -> Status {
        self.latest
            .as_ref()
            .map_or(Status::Unknown, |(_, r)| r.status)
    }
}

/// A rendered feed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedFile {
    /// Relative path: `status.json`, `badge/shop.svg`, `index.html`.
    pub path: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl FeedFile {
    /// A strong ETag: the start of the body's SHA-256.
    pub fn etag(&self) -> String {
        let hash = digest(&SHA256, &self.body);
        format!("\"{}\"", hex(&hash.as_ref()[..12]))
    }
}

/// Reads what the feeds show for the sites of `config`, as of `now`.
pub fn snapshot(
    config: &Config,
    store: &dyn Store,
    now: OffsetDateTime,
) -> Result<FeedSnapshot, StoreError> {
    let history_start = now - time::Duration::days(HISTORY_DAYS);
    let latest = store.latest_results()?;
    let hours = store.uptime_hours(history_start)?;
    let names: Vec<&str> = config.sites.iter().map(|s| s.name.as_str()).collect();
    let incidents = store
        .incidents(history_start)?
        .into_iter()
        .filter(|i| names.contains(&i.site.as_str()))
        .collect();
    let sites = config
        .sites
        .iter()
        .map(|site| {
            let site_hours: Vec<UptimeHour> = hours
                .iter()
                .filter(|(name, _)| *name == site.name)
                .map(|(_, h)| *h)
                .collect();
            SiteFeed {
                name: site.name.clone(),
                url: site.target.url.clone(),
                latest: latest
                    .iter()
                    .find(|l| l.site == site.name)
                    .map(|l| (l.at, l.report.clone())),
                in_maintenance: config.maintenance.iter().any(|w| {
                    w.start <= now
                        && now < w.end
                        && (w.sites.is_empty() || w.sites.contains(&site.name))
                }),
                uptime: WINDOWS.map(|(_, seconds)| uptime(&site_hours, now, seconds)),
                days: days(&site_hours, now),
            }
        })
        .collect();
    Ok(FeedSnapshot {
        generated_at: now,
        title: config.feeds.title.clone(),
        url: config.feeds.url.clone(),
        sites,
        incidents,
        maintenance: config
            .maintenance
            .iter()
            .filter(|w| w.end > now)
            .cloned()
            .collect(),
    })
}

/// The share of results that were not `down` in the hours that began within `seconds` of `now`.
fn uptime(hours: &[UptimeHour], now: OffsetDateTime, seconds: i64) -> Option<f64> {
    let start = now.unix_timestamp() - seconds;
    let (total, down) = hours
        .iter()
        .filter(|h| h.hour + 3600 > start)
        .fold((0u64, 0u64), |(t, d), h| {
            (t + u64::from(h.total), d + u64::from(h.down))
        });
    (total > 0).then(|| (total - down) as f64 / total as f64)
}

/// The history as UTC days, oldest first, today last.
fn days(hours: &[UptimeHour], now: OffsetDateTime) -> Vec<(OffsetDateTime, u32, u32)> {
    let today = now.unix_timestamp() - now.unix_timestamp().rem_euclid(86_400);
    (0..HISTORY_DAYS)
        .rev()
        .map(|back| {
            let start = today - back * 86_400;
            let (total, down) = hours
                .iter()
                .filter(|h| h.hour >= start && h.hour < start + 86_400)
                .fold((0, 0), |(t, d), h| (t + h.total, d + h.down));
            let day = OffsetDateTime::from_unix_timestamp(start).expect("a day within range");
            (day, total, down)
        })
        .collect()
}

/// Every feed file, rendered from one snapshot.
pub fn render_all(snapshot: &FeedSnapshot) -> Vec<FeedFile> {
    let mut files = vec![
        FeedFile {
            path: "index.html".into(),
            content_type: "text/html; charset=utf-8",
            body: html::page(snapshot).into_bytes(),
        },
        FeedFile {
            path: "status.json".into(),
            content_type: "application/json",
            body: status::summary(snapshot).into_bytes(),
        },
        FeedFile {
            path: "incidents.atom".into(),
            content_type: "application/atom+xml; charset=utf-8",
            body: atom::feed(snapshot).into_bytes(),
        },
        FeedFile {
            path: "metrics".into(),
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics::exposition(snapshot).into_bytes(),
        },
    ];
    for site in &snapshot.sites {
        files.push(FeedFile {
            path: format!("badge/{}.svg", file_name(&site.name)),
            content_type: "image/svg+xml",
            body: html::badge(site).into_bytes(),
        });
    }
    files
}

/// Writes every file under `dir`, each atomically (a temporary file renamed over the old one),
/// so a reader or an uploader never sees half a file.
pub fn write_dir(dir: &Path, files: &[FeedFile]) -> std::io::Result<()> {
    for file in files {
        let path = dir.join(&file.path);
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = parent.join(format!(".{name}.tmp"));
        std::fs::write(&temporary, &file.body)?;
        std::fs::rename(&temporary, &path)?;
    }
    Ok(())
}

/// A site name as a file name: kept when it is made of letters, digits, `.`, `-` and `_` (and
/// does not start with a dot); otherwise percent-encoded, so no name can leave the directory.
pub fn file_name(name: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if !name.is_empty() && !name.starts_with('.') && name.chars().all(safe) {
        return name.to_string();
    }
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A stable short id from a string (Statuspage ids, Atom entry ids).
pub(crate) fn short_id(text: &str) -> String {
    hex(&digest(&SHA256, text.as_bytes()).as_ref()[..6])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("a UTC time formats")
}

/// Escapes text for HTML and XML.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An uptime share as a percentage with three decimals, as status pages show it.
pub(crate) fn percent(share: Option<f64>) -> String {
    share.map_or("–".to_string(), |s| format!("{:.3}%", s * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    #[test]
    fn uptime_counts_the_hours_of_each_window() {
        let now = at(1_900_000_000);
        let hour = |back: i64, total, down| UptimeHour {
            hour: now.unix_timestamp() - now.unix_timestamp().rem_euclid(3600) - back * 3600,
            total,
            down,
        };
        // Down the whole hour two days ago, healthy in the last hour.
        let hours = [hour(48, 60, 60), hour(0, 60, 0)];
        assert_eq!(uptime(&hours, now, 86_400), Some(1.0));
        assert_eq!(uptime(&hours, now, 7 * 86_400), Some(0.5));
        assert_eq!(uptime(&[], now, 86_400), None);
        let bars = days(&hours, now);
        assert_eq!(bars.len(), 90);
        assert_eq!(bars[89].1, 60, "today last");
        assert_eq!(bars.iter().map(|d| d.2).sum::<u32>(), 60);
    }

    #[test]
    fn file_names_never_leave_the_directory() {
        assert_eq!(file_name("shop-eu_1.example"), "shop-eu_1.example");
        assert_eq!(file_name("../etc/passwd"), "%2E%2E%2Fetc%2Fpasswd");
        assert_eq!(file_name(".hidden"), "%2Ehidden");
        assert_eq!(file_name("a b/ü"), "a%20b%2F%C3%BC");
    }
}
