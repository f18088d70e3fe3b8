//! Shared incidents in the scheduler. While a site's run is decided, its notifications that a
//! shared incident tells go to that incident (the site joins it, changes in it, recovers in
//! it: `route`); the rest the site tells itself. Then `tell` lets every open shared incident
//! say what its time has come to say, to every destination, in one transaction each.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::alert::group::{self, GroupKind, GroupPhase, GroupState, Tick};
use crate::alert::{AlertState, CertSeen, Group, Notification, Severity};
use crate::config::{Config, Site};
use crate::diagnose::{Confidence, Diagnosis, Hop};
use crate::engine::ProbeReport;
use crate::notify;
use crate::observe::Status;
use crate::store::{Ledger, Store, StoreError};

/// The longest an opening (or a cause change) waits for the other sites of its incident.
const MAX_GATHER: Duration = Duration::from_secs(300);
/// Sites a certificate notice or an edge's failure may share are any of the config's: their
/// opening waits its bound rather than look at each.
const HEARD_CHECKED_AT_MOST: usize = 50;

/// The config's sites by name.
pub struct SiteIndex(HashMap<String, usize>);

impl SiteIndex {
    pub fn of(config: &Config) -> SiteIndex {
        SiteIndex(
            config
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
        )
    }

    pub fn get<'c>(&self, config: &'c Config, name: &str) -> Option<&'c Site> {
        let site = config.sites.get(*self.0.get(name)?)?;
        (site.name == name).then_some(site)
    }
}

/// A ledger that remembers whether a shared incident was written through it.
pub struct Touched<'l> {
    inner: &'l mut dyn Ledger,
    pub touched: bool,
}

impl<'l> Touched<'l> {
    pub fn new(inner: &'l mut dyn Ledger) -> Self {
        Self {
            inner,
            touched: false,
        }
    }
}

impl Ledger for Touched<'_> {
    fn next_incident(&mut self) -> Result<u64, StoreError> {
        self.inner.next_incident()
    }

    fn shared(&mut self, key: &str) -> Result<Option<GroupState>, StoreError> {
        self.inner.shared(key)
    }

    fn put_shared(&mut self, state: &GroupState) -> Result<(), StoreError> {
        self.touched = true;
        self.inner.put_shared(state)
    }
}

/// The shared incident a site's track of `severity` belongs to (`before`: the state it was
/// told in; an opening: the one its failure puts it in).
fn group_of(state: &AlertState, severity: Severity) -> Option<&Group> {
    match severity {
        Severity::Down => state.group.as_ref(),
        Severity::Warning => state.warning.as_deref().and_then(|w| w.group.as_ref()),
        Severity::Intermittent => None,
    }
}

/// The shared incident a failure would open or join now, by severity.
pub struct Candidates {
    pub down: Option<Group>,
    pub warning: Option<Group>,
}

impl Candidates {
    /// The shared incidents a report's failure may belong to: only where another site of the
    /// config may share it (a site alone on its origin tells its own story).
    pub fn of(config: &Config, report: &ProbeReport) -> Candidates {
        let shareable = |g: Group| -> Option<Group> {
            if !config.alerts.group || config.sites.len() < 2 {
                return None;
            }
            match g.origin().map(str::parse::<std::net::IpAddr>) {
                Some(Ok(ip)) => config.origin_shared(ip).then_some(g),
                Some(Err(_)) => None,
                // An edge's own failure: any other site may be behind it.
                None => Some(g),
            }
        };
        Candidates {
            down: Group::of(report).and_then(shareable),
            warning: Group::of_warning(report).and_then(shareable),
        }
    }

    fn get(&self, severity: Severity) -> Option<&Group> {
        match severity {
            Severity::Down => self.down.as_ref(),
            Severity::Warning => self.warning.as_ref(),
            Severity::Intermittent => None,
        }
    }

    /// The number an incident of `severity` opening now takes: the open shared incident's it
    /// joins, or the next of the store's count.
    pub fn number(&self, severity: Severity, ledger: &mut dyn Ledger) -> Result<u64, StoreError> {
        if let Some(g) = self.get(severity) {
            if let Some(shared) = ledger.shared(&g.key)?.filter(GroupState::is_open) {
                return Ok(shared.incident);
            }
        }
        ledger.next_incident()
    }
}

/// Routes a decided site's notifications: those a shared incident tells go to it (in
/// `ledger`), and the site's state (`next`) remembers the incident it is in. Returns which of
/// `notifications` the site tells itself (by mail and chat; webhooks hear of every one).
#[allow(clippy::too_many_arguments)]
pub fn route(
    config: &Config,
    site: &Site,
    report: &ProbeReport,
    before: &AlertState,
    next: &mut AlertState,
    notifications: &[Notification],
    candidates: &Candidates,
    at: OffsetDateTime,
    ledger: &mut dyn Ledger,
) -> Result<Vec<bool>, StoreError> {
    let url = site.probe.target.url();
    let mut own = Vec::with_capacity(notifications.len());
    for n in notifications {
        let told_by_group = match n {
            Notification::Opened {
                severity,
                incident,
                episode,
                diagnosis,
            } => match candidates.get(*severity) {
                Some(g) => {
                    let mut shared = ledger
                        .shared(&g.key)?
                        .filter(GroupState::is_open)
                        .unwrap_or_else(|| {
                            GroupState::begin(
                                &g.key,
                                &g.place,
                                *severity,
                                GroupKind::Failure,
                                *incident,
                                at,
                            )
                        });
                    let since = track_since(next, *severity).unwrap_or(at);
                    shared.join(&site.name, url, since, at, diagnosis, *episode);
                    ledger.put_shared(&shared)?;
                    set_group(next, *severity, Some(g.clone()));
                    true
                }
                None => false,
            },
            Notification::CauseChanged {
                severity,
                diagnosis,
                ..
            } => match group_of(before, *severity) {
                Some(g) => {
                    // The site stays in the incident it was told in, with its new cause.
                    let moved = Group {
                        cause: diagnosis.cause,
                        ..g.clone()
                    };
                    set_group(next, *severity, Some(moved));
                    update(ledger, &g.key, &site.name, |s| {
                        s.change(&site.name, at, diagnosis)
                    })?
                }
                None => {
                    // A site told alone may join a shared incident by its new cause later;
                    // its own incident stays its own.
                    false
                }
            },
            Notification::Reminder {
                severity,
                diagnosis,
                ..
            } => match group_of(before, *severity) {
                Some(g) => update(ledger, &g.key, &site.name, |s| {
                    s.refresh(&site.name, diagnosis)
                })?,
                None => false,
            },
            Notification::Recovered {
                severity, lasted, ..
            } => match group_of(before, *severity) {
                Some(g) => {
                    // It ended at its first healthy run, not when the runs confirmed it.
                    let ended = track_since(before, *severity).map_or(at, |s| s + *lasted);
                    update(ledger, &g.key, &site.name, |s| s.recover(&site.name, ended))?
                }
                None => false,
            },
            // Its warning ended because it went down: its outage tells that; the warning's
            // shared incident is not "resolved" by it.
            Notification::Folded { severity, .. } => match group_of(before, *severity) {
                Some(g) => update(ledger, &g.key, &site.name, |s| s.fold(&site.name, at))?,
                None => false,
            },
            Notification::CertExpiring { cert, threshold } if shares_certificates(config) => {
                let key = format!("certificate {}/{threshold}d", cert.id);
                certificate(ledger, &key, site, cert, None, at)?;
                true
            }
            Notification::CertRenewed { cert, by } if shares_certificates(config) => {
                let key = format!("certificate {}/renewed", cert.id);
                certificate(ledger, &key, site, cert, Some(by), at)?;
                true
            }
            _ => false,
        };
        own.push(!told_by_group);
    }
    // A failing site not confirmed yet: an opening gathering on its origin waits for it.
    let suspect = report.status == Status::Down && !next.is_open();
    if let Some(g) = candidates.down.as_ref().filter(|_| suspect) {
        if let Some(mut shared) = ledger.shared(&g.key)? {
            let before = shared.clone();
            shared.suspect(&site.name, at);
            if shared != before {
                ledger.put_shared(&shared)?;
            }
        }
    }
    Ok(own)
}

/// Whether one certificate's notices may concern several sites (a config of one site tells
/// its own).
fn shares_certificates(config: &Config) -> bool {
    config.alerts.group && config.sites.len() > 1
}

/// Changes a stored shared incident `site` is still failing in; whether it was (else the site
/// tells its own story: a group that closed without it, or a newer one it is not in).
fn update(
    ledger: &mut dyn Ledger,
    key: &str,
    site: &str,
    change: impl FnOnce(&mut GroupState),
) -> Result<bool, StoreError> {
    let Some(mut shared) = ledger.shared(key)?.filter(|s| s.holds(site)) else {
        return Ok(false);
    };
    let before = shared.clone();
    change(&mut shared);
    if shared != before {
        ledger.put_shared(&shared)?;
    }
    Ok(true)
}

/// A site's certificate notice joins the one notice of that certificate.
fn certificate(
    ledger: &mut dyn Ledger,
    key: &str,
    site: &Site,
    cert: &CertSeen,
    renewed_by: Option<&CertSeen>,
    at: OffsetDateTime,
) -> Result<(), StoreError> {
    let mut shared = ledger.shared(key)?.unwrap_or_else(|| {
        let mut s = GroupState::begin(key, "", Severity::Warning, GroupKind::Certificate, 0, at);
        s.cert = Some(cert.clone());
        s.renewed_by = renewed_by.cloned();
        s
    });
    let said = Diagnosis {
        status: Status::Degraded,
        hop: crate::diagnose::Hop::None,
        cause: crate::diagnose::Cause::CertExpiring,
        confidence: Confidence::High,
        summary: String::new(),
        evidence: Vec::new(),
        next_steps: Vec::new(),
        alternatives: Vec::new(),
    };
    if shared.member(&site.name).is_some() {
        return Ok(());
    }
    shared.join(&site.name, site.probe.target.url(), at, at, &said, 0);
    if shared.phase == GroupPhase::Idle {
        // Told before: the site joining is told to whoever has not heard of it.
        shared.phase = GroupPhase::Gathering;
        shared.gathering_since = Some(at);
    }
    ledger.put_shared(&shared)
}

fn track_since(state: &AlertState, severity: Severity) -> Option<OffsetDateTime> {
    match severity {
        Severity::Down => state.since,
        Severity::Warning => state.warning.as_deref().and_then(|w| w.since),
        Severity::Intermittent => None,
    }
}

fn set_group(state: &mut AlertState, severity: Severity, group: Option<Group>) {
    match severity {
        Severity::Down => state.group = group,
        Severity::Warning => {
            if let Some(w) = state.warning.as_deref_mut() {
                w.group = group;
            }
        }
        Severity::Intermittent => {}
    }
}

/// What telling the shared incidents did.
#[derive(Debug, Default)]
pub struct Told {
    /// Messages queued.
    pub queued: usize,
    /// When one of them may have something to say next (a gathering or a change waiting its
    /// bound, a reminder).
    pub next_due: Option<OffsetDateTime>,
    /// One of them is gathering: the next result of a site that may join can end it.
    pub gathering: bool,
}

/// Lets every open shared incident say what its time has come to say, and stores each with its
/// messages. `pass_complete`: every site was probed at `now` (a `probe run` pass), so no
/// other site can join yet. `thorough`: also let go of members whose own incident ended
/// without a word (read from each member's state: on the periodic pass, not after every batch).
pub fn tell(
    config: &Config,
    sites: &SiteIndex,
    store: &mut dyn Store,
    now: OffsetDateTime,
    pass_complete: bool,
    thorough: bool,
) -> Result<Told, StoreError> {
    let mut told = Told::default();
    for state in store.shared_states()? {
        if !state.is_open() {
            continue;
        }
        let tick = tick_for(config, sites, &*store, &state, now, pass_complete, thorough)?;
        let (mut next, notices) = group::tick(&state, &tick);
        told.gathering |= next.phase == GroupPhase::Gathering;
        if next == state && !next.ending_due() {
            told.next_due = earliest(told.next_due, due(&next, &tick));
            continue;
        }
        let site = |name: &str| sites.get(config, name);
        let audience = notify::group::Audience {
            site: &site,
            notifiers: &config.notify,
            page: config.feeds.url.as_deref(),
            zone: &config.alerts.zone,
            confirmed_by: (
                config.alerts.confirm_runs,
                config.alerts.confirm_retries + 1,
            ),
            degraded_runs: config.alerts.warning.confirm_runs,
        };
        let mut messages = notify::group::render(&audience, &mut next, &notices, now);
        for n in &notices {
            let sites: Vec<&str> = next.members.iter().map(|m| m.site.as_str()).collect();
            log_notice(&next, n, &sites);
        }
        // Webhooks heard of each site's own transitions; the group's are for people.
        messages.retain(|m| m.channel != crate::store::Channel::Webhook);
        if store.record_shared(now, &state, &next, &messages)? {
            told.queued += messages.len();
            told.next_due = earliest(told.next_due, due(&next, &tick));
        }
    }
    Ok(told)
}

fn earliest(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When an open shared incident may next have something to say by the clock alone.
fn due(state: &GroupState, tick: &Tick) -> Option<OffsetDateTime> {
    let wait = time::Duration::try_from(tick.wait).ok()?;
    let remind = time::Duration::try_from(tick.remind_every).ok()?;
    match state.phase {
        GroupPhase::Idle => None,
        GroupPhase::Gathering => state.gathering_since.map(|t| t + wait),
        GroupPhase::Open => {
            let change = state.changing_since.map(|t| t + wait);
            let reminder = state
                .last_notified
                .filter(|_| state.kind == GroupKind::Failure)
                .map(|t| t + remind);
            earliest(change, reminder)
        }
    }
}

fn log_notice(state: &GroupState, notice: &group::GroupNotice, sites: &[&str]) {
    let (group, transition) = (state.key.as_str(), notice.transition());
    let (severity, incident) = (state.severity.as_str(), state.incident);
    let sites = sites.join(", ");
    if matches!(notice, group::GroupNotice::Recovered { .. }) || state.renewed_by.is_some() {
        tracing::info!(group, transition, severity, incident, sites, "alert");
    } else {
        tracing::warn!(group, transition, severity, incident, sites, "alert");
    }
}

/// What a tick of `state` knows: how long it may wait, whether every site that may share it was
/// heard since it began, and which suspects and members are gone.
fn tick_for(
    config: &Config,
    sites: &SiteIndex,
    store: &dyn Store,
    state: &GroupState,
    now: OffsetDateTime,
    pass_complete: bool,
    thorough: bool,
) -> Result<Tick, StoreError> {
    let members: Vec<&Site> = state
        .members
        .iter()
        .filter_map(|m| sites.get(config, &m.site))
        .collect();
    // Sites that may share it: for an origin, those that probe that origin.
    let origin = crate::alert::origin_of(&state.key);
    let others: Option<Vec<&Site>> = origin.map(|ip| {
        config
            .sites
            .iter()
            .filter(|s| s.probe.origins.iter().any(|o| o.ip().to_string() == ip))
            .filter(|s| state.member(&s.name).is_none())
            .collect()
    });
    let shortest = members
        .iter()
        .chain(others.iter().flatten())
        .map(|s| s.interval)
        .min()
        .unwrap_or(config.alerts.retry_spacing);
    // Long enough for a site that failed the same way to be confirmed too (a certificate's
    // notice needs no confirmation: every site presenting it is probed within one interval).
    let runs = match (state.kind, state.severity) {
        (GroupKind::Certificate, _) => 1,
        (_, Severity::Warning) => config.alerts.warning.confirm_runs,
        _ => config.alerts.confirm_runs,
    };
    let confirm =
        shortest * runs.max(1) + config.alerts.retry_spacing * config.alerts.confirm_retries;
    let wait = confirm.min(MAX_GATHER);
    let began = state.since.unwrap_or(now);
    // Every site that may share it was probed here since it began, and none of them fails (or,
    // for a warning, is degraded) on the origin's side without being in it yet: it may be
    // confirmed at its next run.
    let joining = match state.severity {
        Severity::Warning => Status::Degraded,
        _ => Status::Down,
    };
    let all_heard = match &others {
        Some(others) if others.len() <= HEARD_CHECKED_AT_MOST => {
            let mut all = true;
            for s in others {
                let views = store.region_views(&s.name)?;
                let latest = views
                    .iter()
                    .filter(|v| v.region == config.region)
                    .max_by_key(|v| v.at);
                match latest {
                    Some(v) if v.at >= began => {
                        let may_join = v.seen.as_ref().is_some_and(|seen| {
                            seen.status == joining
                                && matches!(
                                    seen.cause.hop(),
                                    Hop::EdgeOrigin | Hop::OriginFpm | Hop::FpmDatabase
                                )
                        });
                        if may_join {
                            all = false;
                            break;
                        }
                    }
                    _ if !pass_complete => {
                        all = false;
                        break;
                    }
                    _ => {}
                }
            }
            all
        }
        _ => pass_complete,
    };
    // A suspect whose latest run here no longer fails, or whose site is gone, is not waited for.
    let mut cleared = Vec::new();
    for suspect in &state.suspects {
        let gone = sites.get(config, &suspect.site).is_none();
        let well = store
            .region_views(&suspect.site)?
            .iter()
            .filter(|v| v.region == config.region && v.at > suspect.at)
            .any(|v| v.seen.as_ref().is_some_and(|s| s.status != Status::Down));
        if gone || well {
            cleared.push(suspect.site.clone());
        }
    }
    let mut let_go = Vec::new();
    for m in state.failing() {
        if sites.get(config, &m.site).is_none() {
            let_go.push(m.site.clone());
        } else if thorough && state.kind == GroupKind::Failure {
            let own = store.alert_state(&m.site)?;
            let track = match state.severity {
                Severity::Warning => own.warning(),
                _ => own,
            };
            let in_it = track.is_open() && track.group.as_ref().is_some_and(|g| g.key == state.key);
            if !in_it {
                let_go.push(m.site.clone());
            }
        }
    }
    Ok(Tick {
        now,
        wait,
        all_heard,
        cleared,
        let_go,
        remind_every: match state.severity {
            Severity::Warning => config.alerts.warning.remind_every,
            _ => config.alerts.remind_every,
        },
    })
}
