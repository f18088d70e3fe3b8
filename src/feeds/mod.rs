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
pub mod server;
mod status;

pub use status::ComponentStatus;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest::{digest, SHA256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::alert::{AlertPhase, RegionSeen, Severity};
use crate::config::{Config, MaintenanceWindow, DEFAULT_REGION};
use crate::diagnose::{Cause, Confidence, Diagnosis, Hop};
use crate::engine::ProbeReport;
use crate::observe::{PathRole, PhaseTimings, Route, Status};
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
pub struct FeedSnapshot<'a> {
    pub generated_at: OffsetDateTime,
    pub title: String,
    /// Where the page is published (ends in `/`), if configured.
    pub url: Option<String>,
    /// The page and status.json are public: plain summaries, no versions, addresses or commands.
    pub public: bool,
    /// The zone the page shows times in.
    pub zone: crate::text::Zone,
    pub sites: Vec<SiteFeed<'a>>,
    /// Incidents open now or closed within the history, newest first.
    pub incidents: Vec<IncidentRecord>,
    /// Maintenance windows in progress or to come.
    pub maintenance: Vec<MaintenanceWindow>,
}

/// One site as the feeds show it (its name and URL are the config's).
#[derive(Debug, Clone)]
pub struct SiteFeed<'a> {
    pub name: &'a str,
    pub url: &'a str,
    /// What the latest result showed.
    pub latest: Option<LatestFacts>,
    /// A maintenance window covers the site now.
    pub in_maintenance: bool,
    /// (results, down results) per window of `WINDOWS` (`uptime` gives the shares).
    pub counts: [(u32, u32); 4],
    /// (results, down results) per UTC day of the history, oldest first, today last, from the
    /// first day with results on (`day_bars` gives all `HISTORY_DAYS`, with their dates): a site
    /// watched for a day holds one day, not ninety.
    pub days: Box<[(u32, u32)]>,
    /// Each region's view, when probers in several regions share the store (empty with one).
    pub regions: Box<[RegionFacts]>,
    /// An open warning or intermittent incident (intermittent when both), shown even while
    /// the latest run was fine.
    pub open_lighter: Option<Severity>,
    /// This UTC calendar month and the `MONTHS - 1` before it, newest first: results, down
    /// results, and hours left out for a maintenance window of the site.
    pub months: [MonthCount; MONTHS],
}

/// Calendar months of availability shown: the hourly counts are kept 91 days, which touch at
/// most four months.
pub const MONTHS: usize = 4;

/// One month of a site's availability.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonthCount {
    pub total: u32,
    pub down: u32,
    /// Hours a maintenance window of the site overlapped: their results do not count.
    pub maintenance_hours: u32,
}

impl MonthCount {
    /// Share of the counted results that were not down; `None` without results.
    pub fn availability(self) -> Option<f64> {
        (self.total > 0).then(|| f64::from(self.total - self.down) / f64::from(self.total))
    }
}

/// The first day of the UTC calendar month `back` months before `now`'s.
pub fn month_start(now: OffsetDateTime, back: usize) -> time::Date {
    let index = i64::from(now.year()) * 12 + i64::from(u8::from(now.month())) - 1 - back as i64;
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    time::Date::from_calendar_date(
        year as i32,
        time::Month::try_from(month as u8).expect("a month"),
        1,
    )
    .expect("a first of the month")
}

/// One region's view of a site, as the feeds show it.
#[derive(Debug, Clone)]
pub struct RegionFacts {
    pub region: Arc<str>,
    /// When the region last reported on the site.
    pub at: OffsetDateTime,
    /// What its latest result showed.
    pub seen: Option<RegionSeen>,
    /// The region has confirmed the site down (its own state machine) and not seen it recover.
    pub confirms_down: bool,
    /// It reported within 3 of the site's intervals, so it counts towards the quorum.
    pub live: bool,
}

impl SiteFeed<'_> {
    /// The history's days with their start, oldest first: (day's start, results, down results).
    /// `now` is the snapshot's time.
    pub fn day_bars(
        &self,
        now: OffsetDateTime,
    ) -> impl Iterator<Item = (OffsetDateTime, u32, u32)> + '_ {
        let today = now.unix_timestamp() - now.unix_timestamp().rem_euclid(86_400);
        let first = today - (HISTORY_DAYS - 1) * 86_400;
        let before = HISTORY_DAYS as usize - self.days.len().min(HISTORY_DAYS as usize);
        std::iter::repeat_n((0, 0), before)
            .chain(self.days.iter().copied())
            .take(HISTORY_DAYS as usize)
            .enumerate()
            .map(move |(i, (total, down))| {
                let start = first + i as i64 * 86_400;
                let day = OffsetDateTime::from_unix_timestamp(start).expect("a day within range");
                (day, total, down)
            })
    }

    /// Share of results not `down`, per window of `WINDOWS`; `None` without results.
    pub fn uptime(&self) -> [Option<f64>; 4] {
        self.counts
            .map(|(total, down)| (total > 0).then(|| f64::from(total - down) / f64::from(total)))
    }

    /// The site's status now (`Unknown` before its first result).
    pub fn status(&self) -> Status {
        self.latest
            .as_ref()
            .map_or(Status::Unknown, |l| l.diagnosis.status)
    }
}

/// What the feeds show of a site's latest result: its diagnosis (verdict and summary, without
/// evidence, next steps or alternatives) and each page request.
#[derive(Debug, Clone)]
pub struct LatestFacts {
    pub at: OffsetDateTime,
    pub diagnosis: Verdict,
    /// The first sample's page request on each route and address.
    /// Boxed to their number (a collected list keeps room for four: ~0.4 KB a site).
    pub requests: Box<[RequestFacts]>,
}

/// A diagnosis as the feeds show it: the verdict and its summary (the evidence, next steps and
/// alternatives stay in the store: thousands of sites' worth would dwarf the rest of a snapshot).
#[derive(Debug, Clone)]
pub struct Verdict {
    pub status: Status,
    pub hop: Hop,
    pub cause: Cause,
    pub confidence: Confidence,
    /// Shared by the sites whose summaries read the same (most healthy ones do).
    pub summary: Arc<str>,
}

impl From<Diagnosis> for Verdict {
    fn from(d: Diagnosis) -> Self {
        Self::of(d, &mut Summaries::default())
    }
}

impl Verdict {
    fn of(d: Diagnosis, summaries: &mut Summaries) -> Self {
        Self {
            status: d.status,
            hop: d.hop,
            cause: d.cause,
            confidence: d.confidence,
            summary: summaries.shared(d.summary),
        }
    }
}

/// The summaries seen while a snapshot is read: one copy of each (up to `MAX_SHARED` of them).
#[derive(Default)]
struct Summaries(std::collections::HashSet<Arc<str>>);

impl Summaries {
    const MAX_SHARED: usize = 4096;

    fn shared(&mut self, summary: String) -> Arc<str> {
        if let Some(seen) = self.0.get(summary.as_str()) {
            return seen.clone();
        }
        let summary: Arc<str> = summary.into();
        if self.0.len() < Self::MAX_SHARED {
            self.0.insert(summary.clone());
        }
        summary
    }
}

/// One page request, as the metrics show it.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub route: Route,
    pub address: Option<SocketAddr>,
    /// The HTTP status (0: no answer).
    pub status: u16,
    /// No error, and an answer below 400.
    pub answered: bool,
    pub timings: Timings,
    /// The earliest `not_after` of the certificates presented, in Unix seconds.
    pub earliest_cert_expiry: Option<i64>,
    /// `HTTP/1.0` 10, `HTTP/1.1` 11, `HTTP/2` 20; 0 without an answer.
    pub http_version: u8,
    /// Redirects followed.
    pub redirects: u8,
    /// The answer's `Content-Length` (-1 when it gave none, as blackbox_exporter says).
    pub content_length: i64,
    /// What the TLS handshake showed; `None` for http:// or a handshake that did not finish.
    pub tls: Option<Box<TlsSeen>>,
    /// Why the request failed (`connect_refused`, `status_502`, …); `None` when it did not.
    pub failure: Option<Arc<str>>,
}

/// A request's TLS facts as the metrics label them (blackbox_exporter's names and forms).
#[derive(Debug, Clone)]
pub struct TlsSeen {
    /// `TLS 1.3`, `TLS 1.2`.
    pub version: Arc<str>,
    /// The IANA name, `TLS_AES_128_GCM_SHA256`.
    pub cipher: Arc<str>,
    /// The chain verified.
    pub verified: bool,
    /// The earliest `not_after` of the chain when it verified, in Unix seconds.
    pub chain_expiry: Option<i64>,
    pub leaf_sha256: Arc<str>,
    pub leaf_subject: Arc<str>,
    pub leaf_issuer: Arc<str>,
    /// The leaf's subjectAltNames, comma-separated.
    pub leaf_sans: Arc<str>,
    pub leaf_serial: Arc<str>,
}

/// A request's phase timings held as whole microseconds (what a report carries: its milliseconds
/// are rounded to the microsecond), a quarter of their size as optional floats.
#[derive(Debug, Clone, Copy)]
pub struct Timings([u32; 6]);

impl Timings {
    const ABSENT: u32 = u32::MAX;

    fn of(t: &PhaseTimings) -> Self {
        let micros = |ms: Option<f64>| {
            ms.map_or(Self::ABSENT, |ms| {
                (ms * 1000.0)
                    .round()
                    .clamp(0.0, f64::from(Self::ABSENT - 1)) as u32
            })
        };
        Self([
            micros(t.dns),
            micros(t.connect),
            micros(t.tls),
            micros(t.ttfb),
            micros(t.transfer),
            micros(Some(t.total)),
        ])
    }

    fn ms(self, i: usize) -> Option<f64> {
        (self.0[i] != Self::ABSENT).then(|| f64::from(self.0[i]) / 1000.0)
    }
    pub fn dns(self) -> Option<f64> {
        self.ms(0)
    }
    pub fn connect(self) -> Option<f64> {
        self.ms(1)
    }
    pub fn tls(self) -> Option<f64> {
        self.ms(2)
    }
    pub fn ttfb(self) -> Option<f64> {
        self.ms(3)
    }
    pub fn transfer(self) -> Option<f64> {
        self.ms(4)
    }
    pub fn total(self) -> f64 {
        self.ms(5).unwrap_or(0.0)
    }
}

impl LatestFacts {
    fn of(at: OffsetDateTime, report: ProbeReport, summaries: &mut Summaries) -> Self {
        let requests = report
            .observations
            .iter()
            .filter(|o| o.path_role == PathRole::Page && o.sample == 1)
            .map(|o| {
                let status = o.response.as_ref().map_or(0, |r| r.status);
                let answered = o.error.is_none() && (1..400).contains(&status);
                let expiries = |chain: &[crate::observe::CertFacts]| {
                    chain
                        .iter()
                        .filter_map(|c| OffsetDateTime::parse(&c.not_after, &Rfc3339).ok())
                        .map(OffsetDateTime::unix_timestamp)
                        .min()
                };
                let failure = match (&o.error, status) {
                    _ if answered => None,
                    (Some(e), _) => Some(format!("{}_{}", e.phase.as_str(), e.kind.as_str())),
                    (None, status) => Some(format!("status_{status}")),
                };
                RequestFacts {
                    route: o.route,
                    address: o.address,
                    status,
                    answered,
                    timings: Timings::of(&o.timings_ms),
                    earliest_cert_expiry: o.tls.as_ref().and_then(|t| expiries(&t.chain)),
                    http_version: match o.response.as_ref().map(|r| r.http_version.as_str()) {
                        Some("HTTP/2") => 20,
                        Some("HTTP/1.1") => 11,
                        Some("HTTP/1.0") => 10,
                        _ => 0,
                    },
                    redirects: o.redirects.len().min(255) as u8,
                    content_length: o
                        .response
                        .as_ref()
                        .and_then(|r| r.headers.content_length.as_deref())
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(-1),
                    tls: o.tls.as_ref().and_then(|t| {
                        let leaf = t.leaf()?;
                        let mut shared = |text: String| summaries.shared(text);
                        Some(Box::new(TlsSeen {
                            version: shared(
                                t.version.as_deref().unwrap_or("").replace("TLSv", "TLS "),
                            ),
                            cipher: shared(
                                t.cipher.as_deref().unwrap_or("").replace("TLS13_", "TLS_"),
                            ),
                            verified: t.verified,
                            chain_expiry: if t.verified { expiries(&t.chain) } else { None },
                            // What is each certificate's own is not interned: it would only
                            // fill the interner's room for the summaries.
                            leaf_sha256: Arc::from(leaf.sha256.as_str()),
                            leaf_subject: Arc::from(leaf.subject.as_str()),
                            leaf_issuer: shared(leaf.issuer.clone()),
                            leaf_sans: Arc::from(leaf.sans.join(",")),
                            leaf_serial: Arc::from(leaf.serial.as_str()),
                        }))
                    }),
                    failure: failure.map(|f| summaries.shared(f)),
                }
            })
            .collect();
        Self {
            at,
            diagnosis: Verdict::of(report.diagnosis, summaries),
            requests,
        }
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
        etag_of(digest(&SHA256, &self.body).as_ref())
    }
}

/// A strong ETag from a body's SHA-256: its first 12 bytes in hex, quoted.
pub fn etag_of(sha256: &[u8]) -> String {
    format!("\"{}\"", crate::text::hex(&sha256[..12]))
}

/// Reads what the feeds show for the sites of `config`, as of `now`.
pub fn snapshot<'a>(
    config: &'a Config,
    store: &dyn Store,
    now: OffsetDateTime,
) -> Result<FeedSnapshot<'a>, StoreError> {
    let history_start = now - time::Duration::days(HISTORY_DAYS);
    // Every site's entry is made first, in the config's order, and filled in place as the store
    // streams by: no map of every site's facts beside the list, and one site's uptime being
    // tallied at a time (the store gives each site's hours together).
    let index: HashMap<&str, usize> = config
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut sites: Vec<SiteFeed> = config
        .sites
        .iter()
        .map(|site| SiteFeed {
            name: &site.name,
            url: site.probe.target.url(),
            latest: None,
            in_maintenance: config.in_maintenance(&site.name, now),
            counts: [(0, 0); 4],
            days: Box::new([]),
            regions: Box::new([]),
            open_lighter: None,
            months: [MonthCount::default(); MONTHS],
        })
        .collect();
    // Reports are reduced to what the feeds show as they stream by: a full report per site
    // would not fit in memory for thousands of sites.
    let mut summaries = Summaries::default();
    store.each_latest(&mut |l| {
        if let Some(&i) = index.get(l.site.as_str()) {
            sites[i].latest = Some(LatestFacts::of(l.at, l.report, &mut summaries));
        }
    })?;
    drop(summaries);
    read_regions(config, store, &index, &mut sites, now)?;
    let mut tallying: Option<(usize, Tally)> = None;
    let done = |tallying: &mut Option<(usize, Tally)>, sites: &mut [SiteFeed]| {
        if let Some((i, tally)) = tallying.take() {
            sites[i].counts = tally.counts();
            sites[i].months = tally.months;
            sites[i].days = tally.days();
        }
    };
    store.each_uptime_hour(history_start, &mut |site, hour| {
        let Some(&i) = index.get(site) else {
            return;
        };
        if tallying.as_ref().is_some_and(|(current, _)| *current != i) {
            done(&mut tallying, &mut sites);
        }
        // Hours of a maintenance window of the site are left out of its monthly availability.
        let (start, end) = (hour.hour, hour.hour + 3600);
        let in_maintenance = config.maintenance.iter().any(|w| {
            (w.sites.is_empty() || w.sites.iter().any(|s| s == site))
                && w.start.unix_timestamp() < end
                && w.end.unix_timestamp() > start
        });
        tallying
            .get_or_insert_with(|| (i, Tally::default()))
            .1
            .add(hour, now, in_maintenance);
    })?;
    done(&mut tallying, &mut sites);
    let incidents: Vec<IncidentRecord> = crate::store::merge_shared(
        store
            .incidents(history_start)?
            .into_iter()
            .filter(|i| index.contains_key(i.site.as_str()))
            .collect(),
    );
    for incident in incidents.iter().filter(|i| i.closed_at.is_none()) {
        for name in incident.sites() {
            let Some(&i) = index.get(name) else { continue };
            let site = &mut sites[i];
            match (incident.severity, site.open_lighter) {
                (Severity::Down, _) | (_, Some(Severity::Intermittent)) => {}
                (severity, _) => site.open_lighter = Some(severity),
            }
        }
    }
    drop(index);
    Ok(FeedSnapshot {
        generated_at: now,
        title: config.feeds.title.clone(),
        url: config.feeds.url.clone(),
        public: config.feeds.public,
        zone: config.feeds.zone.clone(),
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

/// Each region's view of each site, when more than one region reports, and the site's verdict
/// as the regions' quorum sees it: down only when the quorum of live regions confirms it;
/// failing from fewer regions than that, a *regional* warning (degraded), naming who sees what.
fn read_regions(
    config: &Config,
    store: &dyn Store,
    index: &HashMap<&str, usize>,
    sites: &mut [SiteFeed],
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut current: Option<(usize, Vec<RegionFacts>)> = None;
    let mut finished: Vec<(usize, Vec<RegionFacts>)> = Vec::new();
    store.each_region_view(&mut |site, view| {
        let Some(&i) = index.get(site) else {
            return;
        };
        if current.as_ref().is_some_and(|(c, _)| *c != i) {
            finished.extend(current.take());
        }
        let live_since = now - config.sites[i].interval * 3;
        let region = names
            .entry(view.region.clone())
            .or_insert_with(|| view.region.as_str().into())
            .clone();
        current
            .get_or_insert_with(|| (i, Vec::new()))
            .1
            .push(RegionFacts {
                region,
                at: view.at,
                confirms_down: matches!(
                    view.state.phase,
                    AlertPhase::Down | AlertPhase::Recovering
                ),
                live: view.at >= live_since,
                seen: view.seen,
            });
    })?;
    finished.extend(current.take());
    if names.len() < 2 && names.keys().all(|n| n == DEFAULT_REGION) {
        // One prober's store: nothing regional to show.
        return Ok(());
    }
    for (i, regions) in finished {
        judge_by_quorum(&mut sites[i], &regions, config.alerts.quorum);
        sites[i].regions = regions.into();
    }
    Ok(())
}

/// Sets a site's shown verdict from its regions' views (see `read_regions`).
fn judge_by_quorum(site: &mut SiteFeed, regions: &[RegionFacts], quorum: u32) {
    let Some(latest) = site.latest.as_mut() else {
        return;
    };
    let live = regions.iter().filter(|r| r.live).count();
    let needed = (quorum as usize).min(live).max(1);
    let failing: Vec<&RegionFacts> = regions
        .iter()
        .filter(|r| {
            r.live && (r.confirms_down || r.seen.as_ref().is_some_and(|s| s.status == Status::Down))
        })
        .collect();
    let confirming = failing.iter().filter(|r| r.confirms_down).count();
    let well: Vec<&str> = regions
        .iter()
        .filter(|r| r.live && !failing.iter().any(|f| f.region == r.region))
        .map(|r| &*r.region)
        .collect();
    let from = |r: &&RegionFacts| r.seen.as_ref().map(|s| (s.cause, s.summary.clone()));
    if confirming >= needed {
        if latest.diagnosis.status != Status::Down {
            if let Some((cause, summary)) = failing.iter().find_map(from) {
                latest.diagnosis.status = Status::Down;
                latest.diagnosis.cause = cause;
                latest.diagnosis.hop = cause.hop();
                latest.diagnosis.summary = summary.into();
            }
        }
    } else if !failing.is_empty() {
        let names: Vec<&str> = failing.iter().map(|r| &*r.region).collect();
        let (cause, _) = failing
            .iter()
            .find_map(from)
            .unwrap_or((latest.diagnosis.cause, String::new()));
        latest.diagnosis.status = Status::Degraded;
        latest.diagnosis.cause = cause;
        latest.diagnosis.hop = cause.hop();
        latest.diagnosis.summary = if well.is_empty() {
            format!("regional: fails from {} (below the quorum of {needed})", names.join(", "))
        } else {
            format!(
                "regional: fails from {} while {} see it well (the route or the edge location, not the origin)",
                names.join(", "),
                well.join(", ")
            )
        }
        .into();
    }
}

/// A site's uptime counts, added up hour by hour as the store streams them: per window of
/// `WINDOWS` and per day of the history.
#[derive(Debug, Default)]
struct Tally {
    /// (results, down results) per window.
    windows: [(u32, u32); 4],
    /// (results, down results) per day, oldest first, today last; absent until a result comes.
    days: Option<Box<[(u32, u32); HISTORY_DAYS as usize]>>,
    /// Per calendar month, newest first.
    months: [MonthCount; MONTHS],
}

impl Tally {
    fn add(&mut self, hour: UptimeHour, now: OffsetDateTime, in_maintenance: bool) {
        if let Ok(at) = OffsetDateTime::from_unix_timestamp(hour.hour) {
            let months_back = (i64::from(now.year()) * 12 + i64::from(u8::from(now.month())))
                - (i64::from(at.year()) * 12 + i64::from(u8::from(at.month())));
            if let Some(month) = usize::try_from(months_back)
                .ok()
                .and_then(|b| self.months.get_mut(b))
            {
                if in_maintenance {
                    month.maintenance_hours += 1;
                } else {
                    month.total = month.total.saturating_add(hour.total);
                    month.down = month.down.saturating_add(hour.down);
                }
            }
        }
        let now = now.unix_timestamp();
        for ((_, seconds), (total, down)) in WINDOWS.iter().zip(self.windows.iter_mut()) {
            // An hour counts when any of it falls inside the window.
            if hour.hour + 3600 > now - seconds {
                *total = total.saturating_add(hour.total);
                *down = down.saturating_add(hour.down);
            }
        }
        let today = now - now.rem_euclid(86_400);
        let back = (today - (hour.hour - hour.hour.rem_euclid(86_400))) / 86_400;
        if (0..HISTORY_DAYS).contains(&back) {
            let days = self
                .days
                .get_or_insert_with(|| Box::new([(0, 0); HISTORY_DAYS as usize]));
            let day = &mut days[(HISTORY_DAYS - 1 - back) as usize];
            day.0 += hour.total;
            day.1 += hour.down;
        }
    }

    /// (results, down results) per window.
    fn counts(&self) -> [(u32, u32); 4] {
        self.windows
    }

    /// The history's days from the first with results, oldest first, today last.
    fn days(self) -> Box<[(u32, u32)]> {
        match self.days {
            Some(days) => {
                let first = days.iter().position(|&(total, _)| total > 0);
                days[first.unwrap_or(days.len())..].into()
            }
            None => Box::new([]),
        }
    }
}

/// Where rendered feed files go, each written as it is made: `begin` starts a file, its text
/// comes through `fmt::Write`, `end` finishes it. No rendering needs a file's whole text in
/// memory (a sink that compresses as it goes never holds it).
pub trait FeedSink: std::fmt::Write {
    fn begin(&mut self, path: String, content_type: &'static str);
    fn end(&mut self);

    /// A site's badge, `badge/NAME.svg`: written as a file, unless the sink keeps badges its own
    /// way (the feed server keeps each site's state and draws its badge when asked).
    fn badge(&mut self, site_name: &str, status: ComponentStatus) {
        self.begin(badge_path(site_name), BADGE_TYPE);
        let _ = self.write_str(&html::badge(site_name, status));
        self.end();
    }
}

/// The content type of a badge.
const BADGE_TYPE: &str = "image/svg+xml";

/// Where a site's badge is published.
fn badge_path(site_name: &str) -> String {
    format!("badge/{}.svg", file_name(site_name))
}

/// The files as a list, each body whole (`--feeds-dir`, tests).
struct FileList(Vec<FeedFile>);

impl std::fmt::Write for FileList {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let file = self.0.last_mut().ok_or(std::fmt::Error)?;
        file.body.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl FeedSink for FileList {
    fn begin(&mut self, path: String, content_type: &'static str) {
        self.0.push(FeedFile {
            path,
            content_type,
            body: Vec::new(),
        });
    }
    fn end(&mut self) {}
}

/// Every feed file, rendered from one snapshot.
pub fn render_all(snapshot: &FeedSnapshot) -> Vec<FeedFile> {
    let mut files = FileList(Vec::with_capacity(4 + snapshot.sites.len()));
    render_each(snapshot, &mut files);
    files.0
}

/// Renders the feed files one after the other into `sink`, each written as it is made.
pub fn render_each(snapshot: &FeedSnapshot, sink: &mut dyn FeedSink) {
    sink.begin("index.html".into(), "text/html; charset=utf-8");
    html::page(snapshot, sink);
    sink.end();
    sink.begin("status.json".into(), "application/json");
    status::summary(snapshot, sink);
    sink.end();
    sink.begin(
        "incidents.atom".into(),
        "application/atom+xml; charset=utf-8",
    );
    let _ = sink.write_str(&atom::feed(snapshot, "incidents.atom"));
    sink.end();
    // Statuspage's public endpoints, at their paths: what is written for Statuspage reads
    // probe unchanged.
    sink.begin("api/v2/summary.json".into(), "application/json");
    status::summary(snapshot, sink);
    sink.end();
    for (which, path) in status::V2::ALL {
        sink.begin(format!("api/v2/{path}"), "application/json");
        status::v2(snapshot, which, sink);
        sink.end();
    }
    sink.begin("api/v1/sla.json".into(), "application/json");
    status::sla(snapshot, sink);
    sink.end();
    sink.begin("history.atom".into(), "application/atom+xml; charset=utf-8");
    let _ = sink.write_str(&atom::feed(snapshot, "history.atom"));
    sink.end();
    sink.begin("history.rss".into(), "application/rss+xml; charset=utf-8");
    let _ = sink.write_str(&atom::rss(snapshot));
    sink.end();
    sink.begin("metrics".into(), "text/plain; version=0.0.4; charset=utf-8");
    metrics::exposition(snapshot, sink);
    sink.end();
    for site in &snapshot.sites {
        sink.badge(site.name, status::component_status(site));
    }
}

/// Renders every feed file straight into `dir`, each atomically (written to a temporary file,
/// then renamed over the old one) and as it is made: no file's text is held in memory.
pub fn render_into_dir(snapshot: &FeedSnapshot, dir: &Path) -> std::io::Result<()> {
    let mut sink = DirWriter {
        dir,
        current: None,
        failed: None,
    };
    render_each(snapshot, &mut sink);
    sink.end();
    match sink.failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Feed files going into a directory; the first failure stops the writing and is kept.
struct DirWriter<'a> {
    dir: &'a Path,
    /// The file being written: its temporary path, final path and writer.
    current: Option<(PathBuf, PathBuf, std::io::BufWriter<std::fs::File>)>,
    failed: Option<std::io::Error>,
}

impl DirWriter<'_> {
    fn open(
        &self,
        relative: &str,
    ) -> std::io::Result<(PathBuf, PathBuf, std::io::BufWriter<std::fs::File>)> {
        let (temporary, path) = temporary_path(self.dir, relative)?;
        let file = std::fs::File::create(&temporary)?;
        Ok((temporary, path, std::io::BufWriter::new(file)))
    }
}

impl std::fmt::Write for DirWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        use std::io::Write as _;
        if let Some((_, _, writer)) = &mut self.current {
            if let Err(e) = writer.write_all(s.as_bytes()) {
                self.failed.get_or_insert(e);
                if let Some((temporary, _, _)) = self.current.take() {
                    let _ = std::fs::remove_file(temporary);
                }
            }
        }
        Ok(())
    }
}

impl FeedSink for DirWriter<'_> {
    fn begin(&mut self, path: String, _content_type: &'static str) {
        self.end();
        if self.failed.is_none() {
            match self.open(&path) {
                Ok(current) => self.current = Some(current),
                Err(e) => self.failed = Some(e),
            }
        }
    }

    fn end(&mut self) {
        let Some((temporary, path, writer)) = self.current.take() else {
            return;
        };
        let done = writer
            .into_inner()
            .map_err(std::io::IntoInnerError::into_error)
            .and_then(|_| std::fs::rename(&temporary, &path));
        if let Err(e) = done {
            let _ = std::fs::remove_file(&temporary);
            self.failed.get_or_insert(e);
        }
    }
}

/// Where a feed file is written first (a hidden file beside it), and where it goes; the
/// directories on the way are made.
fn temporary_path(dir: &Path, relative: &str) -> std::io::Result<(PathBuf, PathBuf)> {
    let path = dir.join(relative);
    let parent = path.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((parent.join(format!(".{name}.tmp")), path))
}

/// Writes every file under `dir`, each atomically (a temporary file renamed over the old one),
/// so a reader or an uploader never sees half a file.
pub fn write_dir(dir: &Path, files: &[FeedFile]) -> std::io::Result<()> {
    for file in files {
        let (temporary, path) = temporary_path(dir, &file.path)?;
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

/// An uptime share as a percentage with three decimals, as status pages show it.
/// A share as a percentage with two decimals; "100%" only when nothing failed at all (99.999 %
/// reads 99.99 %).
pub(crate) fn percent(share: Option<f64>) -> String {
    match share {
        None => "–".to_string(),
        Some(s) if s >= 1.0 => "100%".to_string(),
        // Floored, so 99.999 % never reads 100 %; the tolerance keeps 57/100 from reading
        // 56.99 % (0.57 × 10,000 is 5,699.999… in binary).
        Some(s) => format!("{:.2}%", ((s * 10_000.0) + 1e-6).floor() / 100.0),
    }
}

/// What the public may read of a verdict: the cause's title (which names the hop), never a
/// server's version, an address or a command. A regional verdict is ours (region names and
/// the cause) and stays as it is.
pub(crate) fn public_summary(cause: Cause, summary: &str) -> String {
    if summary.starts_with("regional:") {
        return summary.to_string();
    }
    let title = cause.title();
    let mut chars = title.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
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
        let mut tally = Tally::default();
        tally.add(hour(48, 60, 60), now, false);
        tally.add(hour(0, 60, 0), now, false);
        // An hour of maintenance: left out of the month, counted in the windows.
        tally.add(hour(1, 60, 60), now, true);
        let months = tally.months;
        let site = SiteFeed {
            name: "a",
            url: "https://a.example/",
            latest: None,
            in_maintenance: false,
            counts: tally.counts(),
            days: tally.days(),
            regions: Box::new([]),
            open_lighter: None,
            months,
        };
        assert_eq!(
            site.uptime(),
            [Some(0.5), Some(1.0 / 3.0), Some(1.0 / 3.0), Some(1.0 / 3.0)]
        );
        // 2030-03-17: both counted hours in March; the maintenance hour said apart.
        assert_eq!(
            site.months[0],
            MonthCount {
                total: 120,
                down: 60,
                maintenance_hours: 1
            }
        );
        assert_eq!(site.months[0].availability(), Some(0.5));
        assert_eq!(site.months[1].availability(), None);
        assert_eq!(month_start(now, 3).to_string(), "2029-12-01");
        let unwatched = SiteFeed {
            counts: Tally::default().counts(),
            ..site.clone()
        };
        assert_eq!(unwatched.uptime(), [None; 4]);
        assert_eq!(site.days.len(), 3, "from the first day with results");
        let timings = PhaseTimings {
            dns: None,
            connect: Some(0.125),
            tls: Some(3.004),
            ttfb: Some(1.0),
            transfer: Some(0.0),
            total: 4.129,
        };
        let held = Timings::of(&timings);
        assert_eq!(
            (
                held.dns(),
                held.connect(),
                held.tls(),
                held.ttfb(),
                held.transfer()
            ),
            (None, Some(0.125), Some(3.004), Some(1.0), Some(0.0)),
            "the report's milliseconds, to the microsecond"
        );
        assert_eq!(held.total(), 4.129);
        let bars: Vec<_> = site.day_bars(now).collect();
        assert_eq!(bars.len(), 90);
        assert_eq!(
            bars[89].1, 120,
            "today last (the maintenance hour counts in the bars)"
        );
        assert_eq!((bars[87].1, bars[87].2), (60, 60), "two days ago");
        assert_eq!(bars.iter().map(|d| d.2).sum::<u32>(), 120);
        let today = now.unix_timestamp() - now.unix_timestamp().rem_euclid(86_400);
        assert_eq!(bars[89].0.unix_timestamp(), today);
        assert_eq!(bars[0].0.unix_timestamp(), today - 89 * 86_400);
    }

    #[test]
    fn percentages_have_two_decimals_and_read_100_only_without_a_failure() {
        let share = |up: u32, total: u32| percent(Some(f64::from(up) / f64::from(total)));
        assert_eq!(share(57, 100), "57.00%");
        assert_eq!(share(29, 100), "29.00%");
        assert_eq!(share(99_999, 100_000), "99.99%");
        assert_eq!(share(100, 100), "100%");
        assert_eq!(share(1, 3), "33.33%");
        assert_eq!(percent(None), "–");
        for total in 1..=200u32 {
            for up in 0..total {
                let exact = u64::from(up) * 10_000 / u64::from(total);
                let shown = format!("{}.{:02}%", exact / 100, exact % 100);
                assert_eq!(share(up, total), shown, "{up}/{total}");
            }
        }
    }

    #[test]
    fn file_names_never_leave_the_directory() {
        assert_eq!(file_name("shop-eu_1.example"), "shop-eu_1.example");
        assert_eq!(file_name("../etc/passwd"), "%2E%2E%2Fetc%2Fpasswd");
        assert_eq!(file_name(".hidden"), "%2Ehidden");
        assert_eq!(file_name("a b/ü"), "a%20b%2F%C3%BC");
    }
}
