//! The store: results (with their diagnosis, under the region that saw them), incidents with
//! their cause history, each region's and each site's alert state, and the outbox of
//! notifications to deliver. One SQLite file in WAL mode (`sqlite`), or one PostgreSQL database
//! shared by probers in several regions and pools (`postgres`); `copy` moves the first into the
//! second.
//!
//! Everything a run decides is written in one transaction (`record_regional`), so a process
//! killed at any moment leaves either the whole run or none of it: no result without its alert
//! state, no alert state without its queued mail. The site's incident is decided inside that
//! transaction, from every region's state, so probers deciding together decide once.
//!
//! On SQLite one process writes at a time: `SqliteStore::open` takes the store's writer lock (an
//! advisory lock on `FILE.lock`, released by the kernel however the process ends) before it
//! migrates or writes anything, so two `probe run`s never deliver the same alert twice and never
//! race the migrations. A file that is not a probe store is refused before anything is changed.

pub mod copy;
mod postgres;
mod sqlite;

use std::time::Duration;

use time::OffsetDateTime;

pub use postgres::PostgresStore;
pub use sqlite::{SqliteStore, WriterLock, LOCK_WAIT};

use crate::alert::group::GroupState;
use crate::alert::{AlertState, RegionSeen, Severity};
use crate::config::{StoreLocation, DEFAULT_REGION};
use crate::diagnose::Cause;
use crate::engine::ProbeReport;

/// Why the store failed (the tool failing, not a site).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("store {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    /// A stored value could not be read back.
    #[error("store {path}: corrupt {what}: {reason}")]
    Corrupt {
        path: String,
        what: &'static str,
        reason: String,
    },
    /// The file was written by a newer probe.
    #[error("store {path}: schema version {found} is newer than this probe's ({supported}); upgrade probe")]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    /// The file is not a probe store (another program's database, or not SQLite at all); it was
    /// left as it was.
    #[error("store {path}: not a probe store ({what}); it was left untouched: give store.path a file of its own")]
    Foreign { path: String, what: String },
    /// Another process holds the store's writer lock.
    #[error("store {path}: in use by another probe process{holder}; waited {waited:?} for it. One process writes to a store at a time: let the other finish, or give each its own store.path")]
    Busy {
        path: String,
        /// ` (pid N)` when the holder wrote its pid.
        holder: String,
        waited: Duration,
    },
    /// PostgreSQL reported an error, or the database could not be reached.
    #[error("store {store}: {message}")]
    Postgres {
        /// The database as it may be shown (never with its password).
        store: String,
        message: String,
        /// Whether trying again later can help (a lost connection, a restart, a deadlock).
        transient: bool,
    },
    /// The database URL is unusable (it is never repeated: it may hold a password).
    #[error("store {store}: {reason}")]
    Url { store: String, reason: String },
    /// The lock file cannot be created or locked.
    #[error("store {path}: cannot lock {lock}: {source}")]
    Lock {
        path: String,
        lock: String,
        source: std::io::Error,
    },
}

impl StoreError {
    /// Whether trying again later can help (a locked or busy file, a full disk) rather than the
    /// file itself being unusable.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::DatabaseBusy
                        | rusqlite::ErrorCode::DatabaseLocked
                        | rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                )
            ),
            StoreError::Busy { .. } => true,
            StoreError::Postgres { transient, .. } => *transient,
            _ => false,
        }
    }
}

/// How a queued notification is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// By SMTP: `recipients` are addresses, the bodies text and HTML.
    Mail,
    /// By HTTP POST: `recipients` holds the URL, `body_text` the JSON payload.
    Webhook,
    /// To a chat or paging service: `recipients` holds the channel's id in probes.yaml
    /// (`notify[0]:slack`; its secrets are read when it is sent), `body_text` the provider's
    /// request.
    Chat,
}

impl Channel {
    /// The channel a stored name stands for.
    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "mail" => Some(Channel::Mail),
            "webhook" => Some(Channel::Webhook),
            "chat" => Some(Channel::Chat),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mail => "mail",
            Channel::Webhook => "webhook",
            Channel::Chat => "chat",
        }
    }
}

/// A delivery waiting to be made: one notification to one destination (a mail recipient, a
/// webhook URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub id: i64,
    pub channel: Channel,
    /// The delivery's stable key (unique in the outbox).
    pub key: String,
    /// The key of the notification it carries, shared by all its deliveries (the mail's
    /// Message-ID comes from it).
    pub notification: String,
    /// The destination: one mail address, or the webhook's URL.
    pub recipients: Vec<String>,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    pub attempts: u32,
    /// When it was queued (the run that decided it).
    pub created_at: OffsetDateTime,
    /// The notification key of the mail its thread began with (the incident's opening), when
    /// it is not that mail itself.
    pub thread: Option<String>,
}

/// A delivery to queue, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub channel: Channel,
    /// Unique per delivery: the notification's key and the destination.
    pub key: String,
    /// The notification's key.
    pub notification: String,
    /// The one destination.
    pub recipients: Vec<String>,
    pub subject: String,
    pub body_text: String,
    pub body_html: String,
    /// The notification key of the mail its thread began with (the incident's opening), when
    /// it is not that mail itself.
    pub thread: Option<String>,
}

/// A delivery not yet made, as `probe outbox` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndeliveredMessage {
    pub channel: Channel,
    pub key: String,
    /// The mail address or the webhook URL.
    pub destination: String,
    pub subject: String,
    pub attempts: u32,
    pub created_at: OffsetDateTime,
    /// When it is tried next; `None` once given up.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was refused for good; `None` while it waits.
    pub given_up_at: Option<OffsetDateTime>,
    /// What the last attempt came to.
    pub last_error: Option<String>,
}

/// Everything one run of one site decided.
#[derive(Debug, Clone)]
pub struct RunRecord<'a> {
    pub site: &'a str,
    pub at: OffsetDateTime,
    pub report: &'a ProbeReport,
    pub state: &'a AlertState,
    pub messages: &'a [NewMessage],
}

/// One region's run of one site: its result and the region's own alert state after it.
#[derive(Debug, Clone)]
pub struct RegionalRun<'a> {
    pub site: &'a str,
    pub at: OffsetDateTime,
    pub report: &'a ProbeReport,
    /// The region's own state (it confirms and recovers on its own); `None` when the prober is
    /// cut off: the result says nothing about the site, and the region's state, and when it
    /// last counted, stay as they were (so a cut-off region stops counting after 3 intervals).
    pub state: Option<&'a AlertState>,
}

/// A region's standing on a site as stored: its own state and when it last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionView {
    pub region: String,
    pub at: OffsetDateTime,
    pub state: AlertState,
    /// What its latest result showed (`None` in states from before it was kept).
    pub seen: Option<RegionSeen>,
}

/// Decides a site's incident state while a batch is written, with the site's row held so no
/// other prober decides it at the same moment: given the run's index in the batch, the site's
/// stored state, every region's view (this run's included) and the ledger (incident numbers,
/// shared incidents), returns the new state and the messages it queues, or `None` to leave it
/// as it is.
pub type Decide<'d> = dyn FnMut(
        usize,
        &AlertState,
        &[RegionView],
        &mut dyn Ledger,
    ) -> Result<Option<(AlertState, Vec<NewMessage>)>, StoreError>
    + 'd;

/// What a site's decision may read and write beyond the site itself, inside the transaction
/// that stores it: one count of incidents for the whole store, and the shared incidents sites
/// join (held until the transaction ends, so probers deciding together take turns).
pub trait Ledger {
    /// The next incident number.
    fn next_incident(&mut self) -> Result<u64, StoreError>;
    /// A shared incident's state, held until the transaction ends (`None`: never stored).
    fn shared(&mut self, key: &str) -> Result<Option<GroupState>, StoreError>;
    /// Saves a shared incident's state.
    fn put_shared(&mut self, state: &GroupState) -> Result<(), StoreError>;
}

/// A site's latest stored result.
#[derive(Debug, Clone)]
pub struct LatestResult {
    pub site: String,
    pub at: OffsetDateTime,
    pub report: ProbeReport,
}

/// One cause of an incident, from when it was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct CauseRecord {
    pub at: OffsetDateTime,
    /// The cause's id (`fpm_unreachable`).
    pub cause: String,
    pub summary: String,
    pub evidence: Vec<String>,
}

/// An incident with its cause history, oldest cause first.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRecord {
    pub site: String,
    /// The other sites of a shared incident told as one (the feeds merge them; the store
    /// keeps each site's record).
    pub also: Vec<String>,
    /// The incident's number (one count for the whole store: the sites of a shared incident
    /// share it).
    pub number: u64,
    pub severity: Severity,
    /// The shared failure it belongs to (`origin 203.0.113.10`), if others share it.
    pub group: Option<String>,
    pub opened_at: OffsetDateTime,
    pub closed_at: Option<OffsetDateTime>,
    pub causes: Vec<CauseRecord>,
}

impl IncidentRecord {
    /// Its sites in a few words: `blog`, `blog and shop`, `blog, shop and 3 more`.
    pub fn sites_label(&self) -> String {
        match self.also.as_slice() {
            [] => self.site.clone(),
            [other] => format!("{} and {other}", self.site),
            [a, b] => format!("{}, {a} and {b}", self.site),
            [a, rest @ ..] => format!("{}, {a} and {} more", self.site, rest.len()),
        }
    }

    /// Every site of it, the first first.
    pub fn sites(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.site.as_str()).chain(self.also.iter().map(String::as_str))
    }
}

/// The sites' records of one shared incident made one (its group and number), its sites
/// listed in the record of the site that opened it; others as they are. Newest first, as the
/// store gives them.
pub fn merge_shared(records: Vec<IncidentRecord>) -> Vec<IncidentRecord> {
    let mut out: Vec<IncidentRecord> = Vec::with_capacity(records.len());
    for record in records {
        let same = |r: &IncidentRecord| {
            r.group.is_some()
                && r.group == record.group
                && r.number == record.number
                && r.severity == record.severity
        };
        match out.iter_mut().find(|r| same(r)) {
            Some(first) => {
                let earlier = (record.opened_at, &record.site) < (first.opened_at, &first.site);
                let closed = match (first.closed_at, record.closed_at) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                if earlier {
                    let mut taken = record;
                    taken.also = std::mem::take(&mut first.also);
                    taken.also.push(std::mem::take(&mut first.site));
                    *first = taken;
                } else {
                    first.also.push(record.site);
                }
                first.closed_at = closed;
                first.also.sort();
            }
            None => out.push(record),
        }
    }
    out
}

/// How many results of a site fell in one UTC hour, and how many of them were `down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UptimeHour {
    /// Unix seconds of the hour's start.
    pub hour: i64,
    pub total: u32,
    pub down: u32,
}

/// Opens the store of the config for writing: the SQLite file (taking its writer lock) or the
/// PostgreSQL database.
pub fn open(location: &StoreLocation) -> Result<Box<dyn Store>, StoreError> {
    match location {
        StoreLocation::Sqlite(path) => Ok(Box::new(SqliteStore::open(path)?)),
        StoreLocation::Postgres(url) => {
            let url = url.resolve().map_err(|reason| StoreError::Url {
                store: location.describe(),
                reason,
            })?;
            Ok(Box::new(PostgresStore::open(&url)?))
        }
    }
}

/// What the incident tables hold for one incident of a decided site state.
pub(crate) struct IncidentRow<'a> {
    pub severity: Severity,
    pub number: i64,
    pub opened_at: i64,
    /// Its current cause; `None` once it is closed.
    pub cause: Option<Cause>,
    pub summary: &'a str,
    pub evidence: String,
    pub group: Option<&'a str>,
}

/// The incidents a site's decided state speaks of: its outage and its warning and intermittent
/// tracks, each once it has a number.
pub(crate) fn incident_rows<'a>(
    state: &'a AlertState,
    report: &'a ProbeReport,
    at: i64,
) -> Vec<IncidentRow<'a>> {
    let d = &report.diagnosis;
    let evidence = || serde_json::to_string(&d.evidence).expect("strings serialise");
    let mut rows = Vec::new();
    let mut add = |severity, track: &'a AlertState, summary: &'a str, evidence: String| {
        if track.incident > 0 {
            rows.push(IncidentRow {
                severity,
                number: track.incident as i64,
                opened_at: track.since.map_or(at, stamp_of),
                cause: track.cause,
                summary,
                evidence,
                group: track.group.as_ref().map(|g| g.key.as_str()),
            });
        }
    };
    add(Severity::Down, state, &d.summary, evidence());
    if let Some(warning) = state.warning.as_deref() {
        add(Severity::Warning, warning, &d.summary, evidence());
    }
    if let Some(track) = state.intermittent.as_deref() {
        // Its diagnosis reads the history, not this run: its cause's title stands for it.
        let summary = track.cause.map_or("", |c| c.title());
        add(Severity::Intermittent, track, summary, "[]".to_string());
    }
    rows
}

/// Times are stored as Unix seconds (UTC): they compare and sort as numbers, whatever the
/// fraction of a second.
fn stamp_of(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// A stored time back (the epoch if out of range: a time we wrote ourselves never is).
fn time_of(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// What the history keeps of a report: all of it when the site was not healthy (the evidence of
/// a failure), and for a healthy run only the requests' statuses and timings — a few hundred
/// bytes instead of the whole report, a minute of every site of every day.
fn history_row<'a>(report: &ProbeReport, full: &'a str) -> std::borrow::Cow<'a, str> {
    if report.status != crate::observe::Status::Ok {
        return full.into();
    }
    let requests: Vec<serde_json::Value> = report
        .observations
        .iter()
        .map(|o| {
            serde_json::json!({
                "route": o.route,
                "path_role": o.path_role,
                "status": o.response.as_ref().map(|r| r.status),
                "timings_ms": o.timings_ms,
            })
        })
        .collect();
    serde_json::json!({ "schema": report.schema, "status": report.status, "requests": requests })
        .to_string()
        .into()
}

/// What the scheduler, alerting and feeds need from storage. `Send`: delivery runs in a task of
/// its own, on its own connection.
pub trait Store: Send {
    /// Another connection to the same store for this process (the delivery task of `probe
    /// watch`), sharing what the first one holds (SQLite's writer lock).
    fn another_connection(&self) -> Result<Box<dyn Store>, StoreError>;
    /// The site's alert state (default when never seen).
    fn alert_state(&self, site: &str) -> Result<AlertState, StoreError>;
    /// Saves a run's result, the site's new alert state and its queued messages, atomically.
    /// Messages whose key is already queued or sent are not queued again.
    fn record_run(&mut self, run: &RunRecord<'_>) -> Result<(), StoreError> {
        self.record_runs(std::slice::from_ref(run))
    }
    /// Saves several runs (a batch of a `probe run` pass) in one transaction: all of them or none.
    /// Each state is both the default region's and the site's.
    fn record_runs(&mut self, runs: &[RunRecord<'_>]) -> Result<(), StoreError> {
        let regional: Vec<RegionalRun<'_>> = runs
            .iter()
            .map(|r| RegionalRun {
                site: r.site,
                at: r.at,
                report: r.report,
                state: Some(r.state),
            })
            .collect();
        self.record_regional(DEFAULT_REGION, &regional, &mut |index, _, _, _| {
            Ok(Some((
                runs[index].state.clone(),
                runs[index].messages.to_vec(),
            )))
        })
    }
    /// The region's own alert state for a site (default when it never reported on it).
    fn region_state(&self, site: &str, region: &str) -> Result<AlertState, StoreError>;
    /// The region's own states of several sites, in their order (one read for a batch).
    fn region_states(&self, sites: &[&str], region: &str) -> Result<Vec<AlertState>, StoreError> {
        sites.iter().map(|s| self.region_state(s, region)).collect()
    }
    /// Saves a region's batch in one transaction: each result under `region`, the region's own
    /// states, then each site's incident state as `decide` settles it (the site held meanwhile,
    /// so of regions deciding the same transition together one decides it, once) with the
    /// messages it queues, and the incident's history.
    fn record_regional(
        &mut self,
        region: &str,
        runs: &[RegionalRun<'_>],
        decide: &mut Decide<'_>,
    ) -> Result<(), StoreError>;
    /// Saves an alert state that has no result of its own (the prober's connectivity, under
    /// `alert::PROBER`) with its queued messages, atomically.
    fn record_state(
        &mut self,
        key: &str,
        at: OffsetDateTime,
        state: &AlertState,
        messages: &[NewMessage],
    ) -> Result<(), StoreError>;
    /// The shared incidents open now (gathering or told; those at rest are not read).
    fn shared_states(&self) -> Result<Vec<GroupState>, StoreError>;
    /// Saves a shared incident's state with the messages that tell it, atomically — only if
    /// the stored state is still `expected` (probers sharing the store may tell one at once):
    /// `false` when it was not, and nothing was written.
    fn record_shared(
        &mut self,
        at: OffsetDateTime,
        expected: &GroupState,
        state: &GroupState,
        messages: &[NewMessage],
    ) -> Result<bool, StoreError>;
    /// Every region's view of one site.
    fn region_views(&self, site: &str) -> Result<Vec<RegionView>, StoreError>;
    /// The store's own identity, made once at random: another store counts incidents from 1
    /// again, and its messages must not be taken for this one's.
    fn identity(&self) -> Result<String, StoreError>;
    /// Makes a message wait until `until`, its attempts untouched.
    fn defer_message(&mut self, id: i64, until: OffsetDateTime) -> Result<(), StoreError>;
    /// Messages not yet delivered nor given up whose next attempt is due at `now`.
    fn due_messages(&self, now: OffsetDateTime) -> Result<Vec<OutboxMessage>, StoreError>;
    /// The due messages, claimed for this process's delivery for `lease`: probers sharing the
    /// store each deliver what they claimed, so none is sent by two of them; one that dies
    /// mid-delivery leaves its claims to the others once the lease runs out. A store with one
    /// writer (SQLite) has nobody to claim against: the due messages as they are.
    /// Only deliveries on `channels` (those this prober can make) are claimed.
    fn claim_due(
        &mut self,
        now: OffsetDateTime,
        lease: Duration,
        channels: &[Channel],
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let _ = lease;
        let mut due = self.due_messages(now)?;
        due.retain(|m| channels.contains(&m.channel));
        Ok(due)
    }
    /// Whether several probers share this store's work (PostgreSQL): a region's due probes are
    /// then claimed from the store (`claim_sites`) instead of scheduled by each prober alone.
    fn shares_work(&self) -> bool {
        false
    }
    /// Makes the region's shared schedule hold exactly `sites` (name, interval in ms, first due
    /// time in ms): new ones first due then (the caller spreads them over their first
    /// interval), known ones keep their due time, gone ones are removed.
    fn sync_schedule(
        &mut self,
        region: &str,
        sites: &[(&str, i64, i64)],
    ) -> Result<(), StoreError> {
        let _ = (region, sites);
        Ok(())
    }
    /// Claims up to `limit` of the region's sites due at `now_ms` for `holder`, each due again
    /// one interval later: among probers claiming together, each due site goes to one of them.
    /// A prober claims its own share — the sites whose highest-scoring live member (a
    /// heartbeat since `members_since`) it is — and any site overdue by half an interval (a
    /// member died or lags).
    fn claim_sites(
        &mut self,
        region: &str,
        holder: &str,
        now_ms: i64,
        members_since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let _ = (region, holder, now_ms, members_since, limit);
        Ok(Vec::new())
    }
    /// Says this prober is alive (its region and when it started), for the others to see.
    fn heartbeat(
        &mut self,
        prober: &str,
        region: &str,
        started: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let _ = (prober, region, started, now);
        Ok(())
    }
    /// Every prober's region and when it was last seen, oldest heartbeat first.
    fn probers(&self) -> Result<Vec<(String, String, OffsetDateTime)>, StoreError> {
        Ok(Vec::new())
    }
    /// Marks a message delivered.
    fn mark_sent(&mut self, id: i64, at: OffsetDateTime) -> Result<(), StoreError>;
    /// Records a failed attempt and when to try again.
    fn mark_failed(
        &mut self,
        id: i64,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError>;
    /// Records a permanent failure (the server refused this delivery for good): never tried again.
    fn mark_given_up(&mut self, id: i64, error: &str, at: OffsetDateTime)
        -> Result<(), StoreError>;
    /// Every message not delivered: waiting for an attempt, or given up; oldest first.
    fn undelivered(&self) -> Result<Vec<UndeliveredMessage>, StoreError>;
    /// Deletes raw results older than `before`; incidents and the outbox stay.
    fn prune_results(&mut self, before: OffsetDateTime) -> Result<usize, StoreError>;
    /// Deletes hourly uptime counts older than `before`.
    fn prune_uptime(&mut self, before: OffsetDateTime) -> Result<usize, StoreError>;
    /// Calls `each` with every site's latest result, one at a time (reports can be large).
    fn each_latest(&self, each: &mut dyn FnMut(LatestResult)) -> Result<(), StoreError>;
    /// Calls `each` with every region's view of every site, by site then region.
    fn each_region_view(&self, each: &mut dyn FnMut(&str, RegionView)) -> Result<(), StoreError>;
    /// Every site's latest result, collected.
    fn latest_results(&self) -> Result<Vec<LatestResult>, StoreError> {
        let mut out = Vec::new();
        self.each_latest(&mut |latest| out.push(latest))?;
        Ok(out)
    }
    /// Incidents still open or closed after `since`, newest first, with their causes.
    fn incidents(&self, since: OffsetDateTime) -> Result<Vec<IncidentRecord>, StoreError>;
    /// Calls `each` with the hourly uptime counts of every site from `since` on, one row at a
    /// time (90 days of many sites need not fit in memory): each site's hours together, in time
    /// order (the feeds tally one site at a time).
    fn each_uptime_hour(
        &self,
        since: OffsetDateTime,
        each: &mut dyn FnMut(&str, UptimeHour),
    ) -> Result<(), StoreError>;
    /// The hourly uptime counts from `since` on, collected.
    fn uptime_hours(&self, since: OffsetDateTime) -> Result<Vec<(String, UptimeHour)>, StoreError> {
        let mut out = Vec::new();
        self.each_uptime_hour(since, &mut |site, hour| out.push((site.to_string(), hour)))?;
        Ok(out)
    }
}
