//! `probe watch`: every site on its own interval until stopped.
//!
//! One loop owns the config, the store and the schedule; probes run as tasks, at most
//! `CONCURRENCY` at once, each site never twice at the same time. A finished probe is judged and
//! stored by the loop (the same steps as `probe run`), in batches (a few dozen results, or a
//! fifth of a second), kept in memory while the store cannot be written. On a shared store
//! (PostgreSQL) the probers of a region form a pool: due sites are claimed from the store's
//! schedule instead of scheduled here, so each is probed by one of them per interval. Delivery runs beside it, in a task of its
//! own on its own store connection, woken when something is queued: a slow or tarpitting mail
//! server or webhook delays only the mail, never a probe. SIGHUP reloads the config (a bad file is
//! logged and the running config kept); SIGTERM or SIGINT stops launching, lets the probes in
//! flight finish within their deadline, stores them, and gives delivery a last, bounded pass; a
//! second signal exits at once, whatever is running.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tokio::task::{Id, JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::config::{self, Config, Site};
use crate::engine::ProbeError;
use crate::engine::ProbeReport;
use crate::feeds;
use crate::feeds::server::Published;
use crate::notify::outbox::Recorder;
use crate::observe::Status;
use crate::schedule::run::{self as schedule, CONCURRENCY};
use crate::schedule::shared::{self, SiteIndex};
use crate::store::Store;

/// How often the outbox is read for retries, and old results considered for pruning.
const HOUSEKEEPING: Duration = Duration::from_secs(30);
/// How long a stopping watch waits for delivery's last pass before leaving the rest queued.
const STOP_DELIVERY_GRACE: Duration = Duration::from_secs(5);
/// How long the control checks' verdict is reused while every site stays silent.
const CONTROL_VERDICT_TTL: Duration = Duration::from_secs(30);
/// How often raw results past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often the served feeds are rendered again when results came in.
const FEEDS_REFRESH: Duration = Duration::from_secs(5);
/// Grace beyond a probe's own deadline before a stopping watch cuts it.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Results kept in memory while the store cannot be written (a database restarting or out of
/// reach); past this, the oldest go, counted. 10,000 sites' minute, a few KB each.
const SPOOL_LIMIT: usize = 10_000;
/// How often the store is tried again while results wait: a database out of reach can take its
/// connect timeout to say so, and the loop must keep probing meanwhile.
const SPOOL_RETRY: Duration = Duration::from_secs(5);

/// How often a prober sharing its region's work asks the store for due sites, and says it is
/// alive.
const CLAIM_EVERY: Duration = Duration::from_millis(500);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Sites claimed ahead of the probes' room: one round trip to the store for many probes.
const CLAIM_AHEAD: usize = 4 * CONCURRENCY;

/// This prober's part in a pool: the probers of one region sharing a PostgreSQL store, each
/// site claimed from the store by one of them when due (no coordinator).
struct Pool {
    /// This prober's name in the store: its region, process and a random part.
    me: String,
    started: OffsetDateTime,
    last_claim: Option<Instant>,
    last_heartbeat: Option<Instant>,
    /// Each site's index in the config, by name (claims come back as names).
    index: HashMap<String, usize>,
    /// The config's sites are in the shared schedule (tried again at each claim until they are).
    synced: bool,
    /// Sites claimed and not started yet (a claim takes a few at once: one round trip for
    /// many probes), by index.
    claimed: std::collections::VecDeque<usize>,
    /// The last claim took all it asked for: more may be due, so the next need not wait.
    more: bool,
    /// The last claim failed (the store is unreachable): this prober schedules its sites itself
    /// meanwhile, so probing goes on, and tries to claim again every `SPOOL_RETRY`.
    unreachable: bool,
}

impl Pool {
    fn new(config: &Config) -> Self {
        let tag = (random_fraction() * f64::from(u32::MAX)) as u32;
        Self {
            me: format!("{}-{}-{tag:08x}", config.region, std::process::id()),
            started: OffsetDateTime::now_utc(),
            last_claim: None,
            last_heartbeat: None,
            index: Self::index_of(config),
            synced: false,
            claimed: std::collections::VecDeque::new(),
            more: false,
            unreachable: false,
        }
    }

    fn index_of(config: &Config) -> HashMap<String, usize> {
        config
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect()
    }
}

/// Results written together, at most: one transaction for them all.
const WRITE_BATCH: usize = 64;
/// How long a result waits for others before it is written anyway.
const WRITE_DELAY: Duration = Duration::from_millis(200);

/// A result waiting for the store, with what it was judged with.
struct Spooled {
    /// When it joined the queue.
    queued: Instant,
    /// The site's place in the config when it was probed (a reload may move it) and its name.
    index: usize,
    site: String,
    report: ProbeReport,
    at: OffsetDateTime,
    /// The prober's cut-off evidence at the time (`Some`: every site and control check failed).
    cut_off: Option<Vec<String>>,
}

/// Results waiting to be written, oldest first (a moment for a batch to fill, or an outage of
/// the store to end), and the outage they wait out.
#[derive(Default)]
struct Spool {
    waiting: std::collections::VecDeque<Spooled>,
    /// Results let go because the spool was full, this outage.
    dropped: u64,
    /// When the store first refused, this outage.
    since: Option<OffsetDateTime>,
    last_try: Option<Instant>,
}

/// Why the watch could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
}

/// The delivery task and how the loop talks to it.
struct Delivery {
    /// Something was queued: deliver now.
    wake: Arc<Notify>,
    /// The config in force (reloads reach delivery too).
    config: watch::Sender<Arc<Config>>,
    /// Set when the watch stops: one last pass, then the task ends.
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Delivery {
    fn start(config: Arc<Config>, store: Box<dyn Store>) -> Self {
        let wake = Arc::new(Notify::new());
        let (config, config_rx) = watch::channel(config);
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(deliver_until_stopped(
            store,
            config_rx,
            wake.clone(),
            stop_rx,
        ));
        Self {
            wake,
            config,
            stop,
            task,
        }
    }
}

/// Delivers what is due whenever woken, every `HOUSEKEEPING` for retries, and once more when
/// told to stop.
async fn deliver_until_stopped(
    mut store: Box<dyn Store>,
    config: watch::Receiver<Arc<Config>>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut recorder = Recorder::default();
    let mut retries = tokio::time::interval(HOUSEKEEPING);
    retries.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = *stop.borrow_and_update();
        let current = config.borrow().clone();
        let now = OffsetDateTime::now_utc();
        match schedule::deliver_outbox(&current, store.as_mut(), now, &mut recorder).await {
            // Nothing sent and nothing given up: still waiting, said at debug (every 30 s).
            Ok(s) if s.sent + s.given_up == 0 => {
                if s.waiting() > 0 {
                    tracing::debug!(waiting = s.waiting(), "outbox: nothing delivered");
                }
            }
            Ok(s) => {
                tracing::info!(
                    sent = s.sent,
                    waiting = s.waiting(),
                    given_up = s.given_up,
                    "outbox delivered"
                )
            }
            Err(e) => tracing::error!(error = %e, "cannot read or update the outbox"),
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = retries.tick() => {}
            _ = wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

/// One site's place in the schedule: `slots[i]` is the schedule of `config.sites[i]` (the
/// site itself is not copied: 100,000 sites are held once).
struct Slot {
    next_due: Instant,
    in_flight: bool,
    /// The status of the site's last report, to log changes.
    last_status: Option<Status>,
    /// The cause of the site's last report: a new cause is news, the same one is not.
    last_cause: Option<crate::diagnose::Cause>,
    /// The last report got no answer at all: its summary, for the prober's notice.
    silent: Option<String>,
}

impl Slot {
    fn new(site: &Site, now: Instant) -> Self {
        // The first probes are spread over one interval, so a thousand sites do not start at once.
        let next_due = now + site.interval.mul_f64(random_fraction());
        Self {
            next_due,
            in_flight: false,
            last_status: None,
            last_cause: None,
            silent: None,
        }
    }
}

/// A probe's result, and when it began (whole seconds: every time told is in them).
type ProbeOutcome = (OffsetDateTime, Result<ProbeReport, ProbeError>);

/// A confirmed probe of a site, stamped with when it began: a failure began then, not when its
/// retries ended.
async fn probe_stamped(config: Arc<Config>, i: usize) -> ProbeOutcome {
    let started = schedule::whole_seconds(OffsetDateTime::now_utc());
    let result = schedule::probe_confirmed(&config.sites[i], &config.alerts).await;
    (started, result)
}

/// The running watch.
pub struct Watch<'a> {
    path: PathBuf,
    config: Arc<Config>,
    slots: Vec<Slot>,
    store: &'a mut dyn Store,
    tasks: JoinSet<ProbeOutcome>,
    /// Which site each running task probes, by its index in `config.sites` (`None`: the site
    /// was removed by a reload while it was probed; a reload moves the others).
    running: HashMap<Id, Option<usize>>,
    /// When the control checks were last probed, and what they said (`Some`: all failed).
    control_verdict: Option<(Instant, Option<Vec<String>>)>,
    last_prune: Option<Instant>,
    delivery: Delivery,
    /// Where freshly rendered feeds go, when they are served; `feeds_dirty`: results came in
    /// since the last rendering.
    feeds: Option<Arc<Published>>,
    feeds_dirty: bool,
    /// When the feeds were last rendered, and how long that took.
    feeds_rendered: Option<(Instant, Duration)>,
    /// Results waiting for the store while it cannot be written.
    spool: Spool,
    /// Set when the store is shared (PostgreSQL): due sites are claimed from it.
    pool: Option<Pool>,
    /// The sites `/probe` may probe, when the feeds are served.
    probe_targets: Option<Arc<crate::feeds::server::ProbeTargets>>,
    /// The config's sites by name (the shared incidents name their sites).
    index: SiteIndex,
    /// When a shared incident may next have something to say by the clock alone (its
    /// gathering or a change waited their bound, a reminder is due).
    shared_due: Option<Instant>,
    /// A shared incident is gathering: each batch may end it.
    shared_gathering: bool,
}

impl<'a> Watch<'a> {
    /// A watch over `config` (read from `path`, reread on SIGHUP), storing into `store`;
    /// delivery runs in a task of its own on `delivery_store`, another connection to the same
    /// store. Starts the delivery task: call from inside the runtime.
    pub fn new(
        path: PathBuf,
        config: Config,
        store: &'a mut dyn Store,
        delivery_store: Box<dyn Store>,
    ) -> Self {
        let now = Instant::now();
        let slots: Vec<Slot> = config.sites.iter().map(|s| Slot::new(s, now)).collect();
        let pool = store.shares_work().then(|| Pool::new(&config));
        let index = SiteIndex::of(&config);
        let config = Arc::new(config);
        let mut watch = Self {
            path,
            delivery: Delivery::start(config.clone(), delivery_store),
            config,
            slots,
            store,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            control_verdict: None,
            last_prune: None,
            feeds: None,
            feeds_dirty: false,
            feeds_rendered: None,
            spool: Spool::default(),
            pool,
            probe_targets: None,
            index,
            shared_due: None,
            shared_gathering: false,
        };
        watch.sync_schedule();
        watch
    }

    /// Puts the config's sites into the region's shared schedule (a pool only).
    fn sync_schedule(&mut self) {
        if self.pool.is_none() {
            return;
        }
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        let sites: Vec<(&str, i64, i64)> = self
            .config
            .sites
            .iter()
            .map(|s| {
                let every = s.interval.as_millis() as i64;
                // New sites' first probes spread over their first interval.
                let first = now_ms + (every as f64 * random_fraction()) as i64;
                (s.name.as_str(), every, first)
            })
            .collect();
        let synced = self.store.sync_schedule(&self.config.region, &sites);
        if let Err(e) = &synced {
            tracing::error!(error = %e, "cannot share the schedule in the store; trying again at the next claim");
        }
        if let Some(pool) = self.pool.as_mut() {
            pool.synced = synced.is_ok();
        }
    }

    /// The configured sites `/probe` may probe, kept up to date across reloads.
    pub fn probe_targets(&mut self) -> Arc<crate::feeds::server::ProbeTargets> {
        let targets = Arc::new(crate::feeds::server::ProbeTargets::new(self.config.clone()));
        self.probe_targets = Some(targets.clone());
        targets
    }

    /// Starts publishing the feeds: rendered now, then again whenever results came in (at most
    /// every few seconds). The server reads from the returned receiver.
    pub fn publish_feeds(&mut self) -> crate::feeds::server::Feeds {
        let published = Arc::new(Published::default());
        self.feeds = Some(published.clone());
        self.feeds_dirty = true;
        self.refresh_feeds();
        published
    }

    /// Renders the feeds from the store, if they are served and anything changed.
    fn refresh_feeds(&mut self) {
        let Some(published) = &self.feeds else {
            return;
        };
        if !self.feeds_dirty {
            return;
        }
        if self
            .feeds_rendered
            .is_some_and(|(at, cost)| at.elapsed() < cost * 50)
        {
            // Rendering is proportional to the sites and their history: with many sites it
            // waits longer, so it never takes more than ~2 % of the time.
            return;
        }
        let started = Instant::now();
        let now = OffsetDateTime::now_utc();
        match feeds::snapshot(&self.config, self.store, now) {
            Ok(snapshot) => {
                // Each file compressed as it is written and put in place of its previous
                // version: no feed's text is ever held whole, nor two renderings at once.
                let mut update = published.update(now);
                feeds::render_each(&snapshot, &mut update);
                update.finish();
                drop(snapshot);
                release_freed_memory();
                self.feeds_dirty = false;
            }
            Err(e) => tracing::error!(error = %e, "cannot read the store for the feeds"),
        }
        self.feeds_rendered = Some((started, started.elapsed()));
    }

    /// Runs until SIGTERM or SIGINT, then stops gracefully; a second signal exits at once.
    pub async fn run(mut self) -> Result<(), WatchError> {
        let listen = |kind| signal(kind).map_err(WatchError::Signals);
        let mut terminate = listen(SignalKind::terminate())?;
        let mut interrupt = listen(SignalKind::interrupt())?;
        let mut hangup = listen(SignalKind::hangup())?;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let mut feeds_tick = tokio::time::interval(FEEDS_REFRESH);
        tracing::info!(
            sites = self.slots.len(),
            config = %self.path.display(),
            "watching"
        );
        loop {
            self.launch_due();
            let wake = self.next_wake();
            let flush = self.flush_due();
            let shared_due = self.shared_due;
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = tokio::time::sleep_until(flush.unwrap_or(wake)), if flush.is_some() => {
                    self.flush_spool(false);
                }
                _ = tokio::time::sleep_until(shared_due.unwrap_or(wake)), if shared_due.is_some() => {
                    self.tell_shared(false);
                }
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    self.finished(joined).await;
                }
                _ = housekeeping.tick() => self.housekeeping(),
                _ = feeds_tick.tick(), if self.feeds.is_some() => self.refresh_feeds(),
                _ = hangup.recv() => self.reload(),
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        // From here on, a second signal ends the process at once, whatever is still running:
        // every result stored so far is committed, and what is queued stays queued.
        tokio::spawn(async move {
            let code = tokio::select! {
                _ = terminate.recv() => 128 + 15,
                _ = interrupt.recv() => 128 + 2,
            };
            tracing::warn!("second signal: exiting at once");
            std::process::exit(code);
        });
        self.stop().await;
        Ok(())
    }

    /// Starts the due sites, most overdue first, while there is room.
    fn launch_due(&mut self) {
        let room = CONCURRENCY.saturating_sub(self.tasks.len());
        if self.pool.is_some() {
            self.launch_claimed(room);
            if self.pool.as_ref().is_some_and(|p| !p.unreachable) {
                return;
            }
        }
        if room == 0 {
            return;
        }
        let now = Instant::now();
        let mut due: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !self.slots[i].in_flight && self.slots[i].next_due <= now)
            .collect();
        due.sort_by_key(|&i| self.slots[i].next_due);
        for i in due.into_iter().take(room) {
            let slot = &mut self.slots[i];
            slot.in_flight = true;
            slot.next_due = now + jittered(self.config.sites[i].interval);
            let config = self.config.clone();
            let handle = self.tasks.spawn(probe_stamped(config, i));
            self.running.insert(handle.id(), Some(i));
        }
    }

    /// A pool's prober: says it is alive, then claims up to `room` due sites of its region from
    /// the store and starts them (at most every `CLAIM_EVERY`).
    fn launch_claimed(&mut self, room: usize) {
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        let now = Instant::now();
        if pool
            .last_heartbeat
            .is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY)
        {
            pool.last_heartbeat = Some(now);
            let (me, started) = (pool.me.clone(), pool.started);
            let at = OffsetDateTime::now_utc();
            if let Err(e) = self.store.heartbeat(&me, &self.config.region, started, at) {
                tracing::debug!(error = %e, "cannot record the heartbeat");
            }
            // With each heartbeat, every region's probers are looked at: one silent too long
            // is called offline (once), and back when it reports again.
            match schedule::record_regions(&self.config, self.store, HEARTBEAT_EVERY, at) {
                Ok(0) => {}
                Ok(_) => self.delivery.wake.notify_one(),
                Err(e) => tracing::debug!(error = %e, "cannot check the regions' probers"),
            }
        }
        self.start_claimed(room);
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        let every = if pool.unreachable {
            SPOOL_RETRY
        } else {
            CLAIM_EVERY
        };
        if pool.claimed.len() >= CONCURRENCY
            || (!pool.more && pool.last_claim.is_some_and(|t| t.elapsed() < every))
        {
            return;
        }
        pool.last_claim = Some(now);
        let me = pool.me.clone();
        let want = CLAIM_AHEAD - pool.claimed.len();
        if !pool.synced {
            self.sync_schedule();
        }
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        // Members are the probers of the region with a heartbeat in the last three.
        let members_since = OffsetDateTime::now_utc()
            - time::Duration::try_from(HEARTBEAT_EVERY * 3).unwrap_or(time::Duration::MINUTE);
        let claimed = self
            .store
            .claim_sites(&self.config.region, &me, now_ms, members_since, want);
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        match claimed {
            Ok(claimed) => {
                if pool.unreachable {
                    tracing::info!(
                        "the shared schedule is reachable again: sites are claimed from it"
                    );
                }
                pool.unreachable = false;
                pool.more = claimed.len() == want;
                for name in claimed {
                    if let Some(&i) = pool.index.get(&name) {
                        pool.claimed.push_back(i);
                    }
                }
            }
            Err(e) => {
                pool.more = false;
                if !pool.unreachable {
                    tracing::warn!(error = %e, "cannot claim due sites from the store; probing every site here until it is back");
                }
                pool.unreachable = true;
            }
        }
        self.start_claimed(CONCURRENCY.saturating_sub(self.tasks.len()));
    }

    /// Starts up to `room` of the claimed sites.
    fn start_claimed(&mut self, room: usize) {
        for _ in 0..room {
            let Some(i) = self.pool.as_mut().and_then(|p| p.claimed.pop_front()) else {
                return;
            };
            if i >= self.slots.len() || self.slots[i].in_flight {
                continue;
            }
            self.slots[i].in_flight = true;
            // Kept up to date, for when this prober must schedule alone (the store unreachable).
            self.slots[i].next_due = Instant::now() + self.config.sites[i].interval;
            let config = self.config.clone();
            let handle = self.tasks.spawn(probe_stamped(config, i));
            self.running.insert(handle.id(), Some(i));
        }
    }

    /// When the next idle site falls due (far ahead when there is no room: a finishing probe
    /// wakes the loop).
    fn next_wake(&self) -> Instant {
        if let Some(pool) = self.pool.as_ref().filter(|p| !p.unreachable) {
            // The store says what is due: asked again shortly (at once when more may be due
            // and there is room).
            if pool.more && self.tasks.len() < CONCURRENCY {
                return Instant::now();
            }
            return pool.last_claim.unwrap_or_else(Instant::now) + CLAIM_EVERY;
        }
        let far = Instant::now() + Duration::from_secs(3600);
        if self.tasks.len() >= CONCURRENCY {
            return far;
        }
        self.slots
            .iter()
            .filter(|s| !s.in_flight)
            .map(|s| s.next_due)
            .min()
            .unwrap_or(far)
    }

    async fn finished(&mut self, joined: Result<(Id, ProbeOutcome), JoinError>) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some(index) = self.running.remove(&id).flatten() else {
            tracing::debug!("result of a site no longer configured, dropped");
            return;
        };
        self.slots[index].in_flight = false;
        let name = &self.config.sites[index].name;
        match joined {
            Ok((_, (started, Ok(report)))) => self.record(index, &report, started).await,
            Ok((_, (_, Err(e)))) => tracing::error!(site = %name, error = %e, "cannot probe"),
            Err(e) if e.is_panic() => {
                tracing::error!(site = %name, "the probe task panicked: {e}")
            }
            Err(_) => {}
        }
    }

    /// Judges and stores one site's report (the same steps as `probe run`), then sends mail.
    async fn record(&mut self, index: usize, report: &ProbeReport, now: OffsetDateTime) {
        let d = &report.diagnosis;
        let name = &self.config.sites[index].name;
        let slot = &mut self.slots[index];
        slot.silent = schedule::is_silent(report).then(|| d.summary.clone());
        // A verdict as before is not news, however bad: logged at debug.
        let changed = slot.last_status != Some(d.status) || slot.last_cause != Some(d.cause);
        slot.last_status = Some(d.status);
        slot.last_cause = Some(d.cause);
        if changed {
            tracing::info!(site = %name, status = d.status.as_str(), hop = d.hop.as_str(), cause = d.cause.as_str(), summary = %d.summary, "probed");
        } else {
            tracing::debug!(site = %name, status = d.status.as_str(), "probed");
        }
        let evidence = self.cut_off_evidence().await;
        let spooled = Spooled {
            queued: Instant::now(),
            index,
            site: self.config.sites[index].name.clone(),
            report: report.clone(),
            at: now,
            cut_off: evidence,
        };
        self.feeds_dirty = true;
        // Stored in batches: a write per `WRITE_BATCH` results or `WRITE_DELAY`, not per result
        // (a database far away costs a round trip per batch). Results wait their turn behind
        // those already waiting, so each site's runs are judged in the order they happened.
        self.spool_push(spooled);
        self.flush_spool(false);
    }

    fn spool_push(&mut self, spooled: Spooled) {
        if self.spool.waiting.len() >= SPOOL_LIMIT {
            self.spool.waiting.pop_front();
            self.spool.dropped += 1;
        }
        self.spool.waiting.push_back(spooled);
    }

    /// When the waiting results are to be written at the latest (the loop wakes for it).
    fn flush_due(&self) -> Option<Instant> {
        let oldest = self.spool.waiting.front()?;
        Some(match (self.spool.since, self.spool.last_try) {
            (Some(_), Some(tried)) => tried + SPOOL_RETRY,
            _ => oldest.queued + WRITE_DELAY,
        })
    }

    /// Writes the waiting results, oldest first, a batch per transaction, while the store takes
    /// them: when `WRITE_BATCH` are waiting or the oldest waited `WRITE_DELAY` (or `now`).
    /// While the store is unreachable it is tried at most every `SPOOL_RETRY`; the outage is
    /// logged once when it starts and once when it ends.
    fn flush_spool(&mut self, now: bool) {
        let Some(due) = self.flush_due() else {
            return;
        };
        let full = self.spool.since.is_none() && self.spool.waiting.len() >= WRITE_BATCH;
        if !now && !full && Instant::now() < due {
            return;
        }
        let mut written = 0;
        while !self.spool.waiting.is_empty() {
            let take = self.spool.waiting.len().min(schedule::BATCH);
            match self.store_batch(take) {
                Ok(()) => {
                    self.spool.waiting.drain(..take);
                    written += take;
                }
                Err(e) if e.is_transient() => {
                    self.spool.last_try = Some(Instant::now());
                    if self.spool.since.is_none() {
                        self.spool.since = Some(OffsetDateTime::now_utc());
                        tracing::error!(error = %e, limit = SPOOL_LIMIT, "cannot write the store; results are kept in memory and written when it is back");
                    } else {
                        tracing::debug!(error = %e, waiting = self.spool.waiting.len(), "the store is still unreachable");
                    }
                    return;
                }
                Err(e) => {
                    let lost: Vec<String> =
                        self.spool.waiting.drain(..take).map(|s| s.site).collect();
                    tracing::error!(sites = %lost.join(", "), error = %e, "cannot store the results");
                }
            }
        }
        if let Some(since) = self.spool.since.take() {
            let outage = (OffsetDateTime::now_utc() - since).whole_seconds();
            tracing::warn!(
                written,
                dropped = self.spool.dropped,
                outage_s = outage,
                "the store is back; the results kept meanwhile are written"
            );
            self.spool.dropped = 0;
        }
    }

    /// Judges and stores the first `take` waiting results in one transaction, with the
    /// prober's state as the newest of them saw it, and wakes delivery if anything was queued.
    fn store_batch(&mut self, take: usize) -> Result<(), crate::store::StoreError> {
        let config = self.config.clone();
        let batch: Vec<&Spooled> = self.spool.waiting.iter().take(take).collect();
        let (newest_at, evidence) = batch
            .last()
            .map(|s| (s.at, s.cut_off.clone()))
            .expect("a batch is never empty");
        let (cut_off, notices) =
            schedule::record_prober(&config, self.store, evidence.as_deref(), newest_at)?;
        let entries: Vec<(usize, &crate::engine::ProbeReport, OffsetDateTime)> = batch
            .iter()
            .filter_map(|s| {
                // A reload may have moved or removed the site while it waited.
                let index = match config.sites.get(s.index) {
                    Some(site) if site.name == s.site => Some(s.index),
                    _ => config.sites.iter().position(|site| site.name == s.site),
                };
                index.map(|i| (i, &s.report, s.at))
            })
            .collect();
        let outcome = schedule::record_batch(&config, self.store, &entries, cut_off)?;
        // A verdict the last status read changed (a restart, a pool that filled up meanwhile)
        // is the one stored and alerted on: said as the probe's own was.
        for ((index, report, _), judged) in entries.iter().zip(&outcome.judged) {
            let Some(d) = judged else { continue };
            // Only a different verdict is news; a line of evidence more is not.
            if (d.status, d.cause) == (report.status, report.diagnosis.cause) {
                continue;
            }
            tracing::info!(site = %config.sites[*index].name, status = d.status.as_str(), hop = d.hop.as_str(), cause = d.cause.as_str(), summary = %d.summary, "judged against the last status read");
            if let Some(slot) = self.slots.get_mut(*index) {
                slot.last_status = Some(d.status);
            }
        }
        // A shared incident a site joined, changed in or left in this batch may have
        // something to say now; one gathering may end with any site's next result (a site
        // alone on a shared origin is told as soon as the others were heard).
        let mut queued = outcome.queued;
        if outcome.shared_touched || self.shared_gathering {
            let told = shared::tell(
                &config,
                &self.index,
                self.store,
                OffsetDateTime::now_utc(),
                false,
                false,
            )?;
            self.shared_due = told.next_due.map(instant_of);
            self.shared_gathering = told.gathering;
            queued += told.queued;
        }
        // Fresh mail goes out now, from the delivery task; retries wait for its own tick, so
        // the outbox is not read after every probe.
        if notices + queued > 0 {
            self.delivery.wake.notify_one();
        }
        Ok(())
    }

    /// Lets the shared incidents say what their time has come to say (`thorough`: also let go
    /// of members whose own incident ended unseen), and wakes delivery for what they queued.
    fn tell_shared(&mut self, thorough: bool) {
        if self.spool.since.is_some() {
            // The store is unreachable: told when it is back.
            return;
        }
        let now = OffsetDateTime::now_utc();
        match shared::tell(&self.config, &self.index, self.store, now, false, thorough) {
            Ok(told) => {
                self.shared_due = told.next_due.map(instant_of);
                self.shared_gathering = told.gathering;
                if told.queued > 0 {
                    self.delivery.wake.notify_one();
                }
            }
            Err(e) => {
                // Tried again at the next batch or housekeeping.
                self.shared_due = None;
                tracing::error!(error = %e, "cannot tell the shared incidents");
            }
        }
    }

    /// When every site's last report is silent, whether the control checks fail too (the prober
    /// is cut off): the evidence for its notice.
    async fn cut_off_evidence(&mut self) -> Option<Vec<String>> {
        if self.config.control_checks.is_empty() || self.slots.iter().any(|s| s.silent.is_none()) {
            return None;
        }
        let fresh = self
            .control_verdict
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < CONTROL_VERDICT_TTL);
        if !fresh {
            let verdict = match schedule::control_checks_fail(&self.config).await {
                Ok(verdict) => verdict,
                Err(e) => {
                    tracing::error!(error = %e, "cannot probe the control checks");
                    None
                }
            };
            self.control_verdict = Some((Instant::now(), verdict));
        }
        let controls = self.control_verdict.as_ref()?.1.as_ref()?;
        let silent: Vec<(String, String)> = self
            .slots
            .iter()
            .zip(&self.config.sites)
            .filter_map(|(slot, site)| Some((site.name.clone(), slot.silent.clone()?)))
            .collect();
        Some(schedule::cut_off_evidence(
            controls,
            &silent,
            self.slots.len(),
        ))
    }

    fn housekeeping(&mut self) {
        self.flush_spool(false);
        if self.spool.since.is_some() {
            // The store is unreachable: nothing to prune now.
            return;
        }
        self.tell_shared(true);

        if self.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            let now = OffsetDateTime::now_utc();
            self.last_prune = Some(Instant::now());
            match schedule::prune(&self.config, self.store, now) {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "old results deleted"),
                Err(e) => tracing::error!(error = %e, "cannot prune old results"),
            }
        }
    }

    /// Rereads the config file. A file with problems is rejected, each problem logged, and the
    /// running config kept; a good one replaces it, sites keeping their place in the schedule.
    fn reload(&mut self) {
        let loaded = match config::load(&self.path) {
            Ok(loaded) => loaded,
            Err(e) => {
                for problem in e.to_string().lines() {
                    tracing::error!(problem, "config reload rejected; the running config stays");
                }
                return;
            }
        };
        for warning in &loaded.warnings {
            tracing::warn!(warning = %warning, "config");
        }
        let mut new = loaded.config;
        // The region is the process's, not the file's.
        new.region = self.config.region.clone();
        if new.store != self.config.store {
            tracing::warn!(
                store = %self.config.store.describe(),
                "a new store takes a restart; still using the old one"
            );
        }
        let now = Instant::now();
        let mut old: HashMap<&str, (usize, Slot)> = self
            .config
            .sites
            .iter()
            .zip(self.slots.drain(..))
            .enumerate()
            .map(|(i, (site, slot))| (site.name.as_str(), (i, slot)))
            .collect();
        // Where each old index went (`None`: the site is gone), for the probes in flight.
        let mut moved: HashMap<usize, usize> = HashMap::new();
        let (mut added, mut kept) = (0, 0);
        self.slots = new
            .sites
            .iter()
            .enumerate()
            .map(|(i, site)| match old.remove(site.name.as_str()) {
                Some((before, mut slot)) => {
                    kept += 1;
                    moved.insert(before, i);
                    // A shorter interval takes effect now, not after the old one.
                    slot.next_due = slot.next_due.min(now + jittered(site.interval));
                    slot
                }
                None => {
                    added += 1;
                    Slot::new(site, now)
                }
            })
            .collect();
        let removed = old.len();
        drop(old);
        for index in self.running.values_mut() {
            *index = index.and_then(|before| moved.get(&before).copied());
        }
        self.config = Arc::new(new);
        self.index = SiteIndex::of(&self.config);
        if let Some(targets) = &self.probe_targets {
            targets.replace(self.config.clone());
        }
        if let Some(pool) = self.pool.as_mut() {
            pool.index = Pool::index_of(&self.config);
            // Claimed by their old places: let go (probed again at their next claim).
            pool.claimed.clear();
        }
        self.sync_schedule();
        self.delivery.config.send_replace(self.config.clone());
        self.control_verdict = None;
        self.feeds_dirty = true;
        tracing::info!(
            sites = self.slots.len(),
            added,
            kept,
            removed,
            "config reloaded"
        );
    }

    /// Stops: no new probe; those in flight finish within their own deadline (cut after it) and
    /// are stored; then delivery gets one last pass, cut after `STOP_DELIVERY_GRACE` (what it did
    /// not send stays queued for the next start).
    async fn stop(&mut self) {
        let budget = self
            .slots
            .iter()
            .zip(&self.config.sites)
            .filter(|(slot, _)| slot.in_flight)
            .map(|(_, site)| probe_budget(site, &self.config))
            .max()
            .unwrap_or_default();
        // Said in full: the wait is the longest a probe in flight can still take (each try at
        // its every deadline, the spacing between tries) plus a grace, not a setting of its
        // own; most probes end long before.
        let words = |d: Duration| crate::words::duration(d);
        tracing::info!(
            in_flight = self.tasks.len(),
            wait_at_most = %words(budget + STOP_GRACE),
            longest_probe_bound = %words(budget),
            grace = %words(STOP_GRACE),
            "stopping: probes in flight finish within their own deadlines and the grace, then are stored (the bound counts every try of a probe at every deadline it has: DNS, a turn at the origin, the requests, one more ask of the edge)"
        );
        let deadline = Instant::now() + budget + STOP_GRACE;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(joined) = self.tasks.join_next_with_id() => self.finished(joined).await,
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(cut = self.tasks.len(), "probes still running at the deadline, cut");
                    break;
                }
            }
        }
        self.tasks.abort_all();
        self.flush_spool(true);
        if !self.spool.waiting.is_empty() {
            tracing::error!(
                lost = self.spool.waiting.len(),
                "stopping while the store is unreachable: the results kept in memory are lost"
            );
        }
        self.delivery.stop.send_replace(true);
        let task = &mut self.delivery.task;
        if tokio::time::timeout(STOP_DELIVERY_GRACE, &mut *task)
            .await
            .is_err()
        {
            task.abort();
            tracing::warn!(
                waited = ?STOP_DELIVERY_GRACE,
                "delivery still busy at the deadline, cut: what it did not send stays queued for the next start"
            );
        }
        tracing::info!("stopped");
    }
}

/// The longest one confirmed probe of `site` can take: every try at its deadline, with the
/// spacing between tries.
fn probe_budget(site: &Site, config: &Config) -> Duration {
    let retries = config.alerts.confirm_retries;
    // A try is DNS, a turn at the origin (at most twice the timeout), the status pages and then
    // every request in parallel, then perhaps one more ask of the edge: each bounded by the
    // timeout, so six of them bound it.
    let per_try = site.probe.shared.timeout * 6;
    per_try * (retries + 1) + config.alerts.retry_spacing * retries
}

/// The monotonic instant of a wall-clock time (now when it is past).
fn instant_of(at: OffsetDateTime) -> Instant {
    let ahead = at - OffsetDateTime::now_utc();
    Instant::now() + Duration::try_from(ahead).unwrap_or(Duration::ZERO)
}

/// `interval`, give or take 10 %, so sites with the same interval drift apart.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * random_fraction())
}

/// A number in [0, 1) from the standard library's randomly keyed hasher (no RNG crate needed
/// for jitter).
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Hands the memory a feed rendering freed back to the system. glibc keeps freed blocks in the
/// arena of the thread that freed them, so without this the watch would stay as large as its
/// largest rendering.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent_and_varies() {
        let interval = Duration::from_secs(60);
        let samples: Vec<Duration> = (0..1000).map(|_| jittered(interval)).collect();
        assert!(samples
            .iter()
            .all(|d| *d >= Duration::from_secs(54) && *d <= Duration::from_secs(66)));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(distinct.len() > 900, "{} distinct", distinct.len());
    }
}
