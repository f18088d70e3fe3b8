//! Scheduled operation: one pass over every site of the config (`probe run`), each probed with
//! in-run retries, its verdict stepped through the alert state machine, and stored with the mail
//! it decided; then the outbox is flushed. Sites stream through the pass: at most `CONCURRENCY`
//! are probed at once, and finished ones are judged and stored in batches of `BATCH` sites, one
//! transaction each, then dropped, so a pass's memory does not grow with the site list. The state
//! lives in the store, so running this every minute from cron never repeats an alert.

use std::borrow::Cow;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::alert::{self, AlertState, Notification, RegionVote, RunVerdict, Severity};
use crate::config::{Alerts, Config, Site};
use crate::diagnose::diagnose_since;
use crate::diagnose::pattern::{Failure, RunRecord};
use crate::diagnose::witness;
use crate::engine::ProbeReport;
use crate::engine::{probe_site, ProbeError};
use crate::notify::chat::ChatChannel;
use crate::notify::mail::MailChannel;
use crate::notify::outbox::{self, FlushSummary, Recorder};
use crate::notify::webhook::WebhookChannel;
use crate::notify::{chat, mail, webhook};
use crate::observe::witness::WitnessCounters;
use crate::observe::Status;
use crate::schedule::shared;
use crate::settings::ProbeSettings;
use crate::store::{Channel, Ledger, NewMessage, RegionView, RegionalRun, Store, StoreError};

/// Sites probed at once.
pub const CONCURRENCY: usize = 32;
/// Sites judged and stored per transaction: one sync to disk per batch, not per site, and a
/// bounded number of reports held at once.
pub const BATCH: usize = 256;
/// Deadline of one control-check request.
const CONTROL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Sites named in the prober's own notice; the rest are counted.
const CUT_OFF_SITES_SHOWN: usize = 10;

/// Why a pass could not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    /// Sites probed.
    pub sites: usize,
    worst: Status,
    pub mails_sent: usize,
    pub mails_waiting: usize,
    /// Refused for good by their destination this pass.
    pub mails_given_up: usize,
    /// Why the waiting ones wait (each reason once).
    pub waiting_why: Vec<String>,
    /// Every site and every control check failed: the prober itself is cut off, and the sites'
    /// alert states were left as they were.
    pub cut_off: bool,
}

impl PassOutcome {
    /// The worst status over all sites (the exit code of `probe run`).
    pub fn worst(&self) -> Status {
        self.worst
    }
}

/// Probes the control checks (edge route only). When every one of them fails to get any
/// answer, returns what each saw; `None` when at least one got through.
pub async fn control_checks_fail(config: &Config) -> Result<Option<Vec<String>>, ProbeError> {
    let mut tasks = tokio::task::JoinSet::new();
    for target in &config.control_checks {
        let mut settings = ProbeSettings::for_target(target.clone(), CONTROL_TIMEOUT);
        settings.shared_mut().extra_roots = config.extra_roots.clone();
        tasks.spawn(async move { probe_site(&settings).await });
    }
    let mut evidence = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let report = match joined {
            Ok(result) => result?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue,
        };
        // Any answer at all, whatever its status, proves the network works.
        if report.observations.iter().any(|o| o.response.is_some()) {
            return Ok(None);
        }
        let seen = report
            .observations
            .iter()
            .find_map(|o| o.error.as_ref())
            .map_or("no answer".to_string(), |e| {
                format!("{} {}: {}", e.phase.as_str(), e.kind.as_str(), e.message)
            });
        evidence.push(format!("control {}: {seen}", report.target));
    }
    evidence.sort();
    Ok(Some(evidence))
}

/// Who hears about the prober itself: `alerts.to`, else everyone any site alerts.
fn prober_recipients(config: &Config) -> Vec<String> {
    if !config.alerts.to.is_empty() {
        return config.alerts.to.clone();
    }
    let mut all: Vec<String> = Vec::new();
    for to in config.sites.iter().flat_map(|s| s.alert_to.iter()) {
        if !all.contains(to) {
            all.push(to.clone());
        }
    }
    all
}

/// Probes a site; while it is down, tries again (up to `confirm_retries` times, `retry_spacing`
/// apart) so one lost packet does not count as a failure. The first failure a retry replaced
/// stays on the report (`hidden_failure`): it counts in the site's history.
pub async fn probe_confirmed(site: &Site, alerts: &Alerts) -> Result<ProbeReport, ProbeError> {
    use tracing::Instrument as _;
    // Every line logged while probing the site names it.
    let span = tracing::info_span!("site", site = %site.name);
    probe_with_retries(site, alerts).instrument(span).await
}

async fn probe_with_retries(site: &Site, alerts: &Alerts) -> Result<ProbeReport, ProbeError> {
    let settings = &site.probe;
    let mut report = probe_site(settings).await?;
    let mut hidden = None;
    for _ in 0..alerts.confirm_retries {
        if report.status != Status::Down {
            break;
        }
        hidden = hidden.or_else(|| Failure::of(&report.observations, &report.diagnosis));
        tokio::time::sleep(alerts.retry_spacing).await;
        report = probe_site(settings).await?;
    }
    if report.status != Status::Down {
        report.hidden_failure = hidden;
    }
    Ok(report)
}

/// A report in which no request got any answer: what a cut-off prober sees.
pub fn is_silent(report: &ProbeReport) -> bool {
    report.observations.iter().all(|o| o.response.is_none())
}

/// The prober's notice: what the control checks saw, then the silent sites (`silent`: each
/// one's name and summary; `total`: how many sites there are).
pub fn cut_off_evidence(
    controls: &[String],
    silent: &[(String, String)],
    total: usize,
) -> Vec<String> {
    let mut evidence = controls.to_vec();
    for (name, summary) in silent.iter().take(CUT_OFF_SITES_SHOWN) {
        evidence.push(format!("site {name}: {summary}"));
    }
    if total > CUT_OFF_SITES_SHOWN {
        let more = total - CUT_OFF_SITES_SHOWN;
        evidence.push(format!("… and {more} more sites, none answering"));
    }
    evidence
}

/// Steps the prober's own connectivity state and stores it with its notice, if it changed.
/// Returns whether the prober is cut off now, and how many messages were queued.
pub fn record_prober(
    config: &Config,
    store: &mut dyn Store,
    cut_off: Option<&[String]>,
    now: OffsetDateTime,
) -> Result<(bool, usize), StoreError> {
    let key = alert::prober_key(&config.region);
    let prober = store.alert_state(&key)?;
    let (next, notices) = alert::connectivity_step(&prober, cut_off, now);
    if next != prober {
        for n in &notices {
            log_alert(&key, &config.region, n, None);
        }
        let messages = prober_messages(config, &key, &notices, now);
        store.record_state(&key, now, &next, &messages)?;
        return Ok((cut_off.is_some(), messages.len()));
    }
    Ok((cut_off.is_some(), 0))
}

/// The messages of the probers' own notices (kept under `key`: about no one site): mail to the
/// prober's recipients, and every webhook.
fn prober_messages(
    config: &Config,
    key: &str,
    notices: &[alert::Notification],
    now: OffsetDateTime,
) -> Vec<NewMessage> {
    let recipients = prober_recipients(config);
    let mut messages: Vec<NewMessage> = if recipients.is_empty() {
        Vec::new()
    } else {
        notices
            .iter()
            .flat_map(|n| mail::render(key, "", n, &recipients))
            .collect()
    };
    let page = config.feeds.url.as_deref();
    for n in notices {
        messages.extend(webhook::render(key, "", n, &config.webhooks, now));
        messages.extend(chat::render(key, "", n, &config.notify, page, now));
    }
    messages
}

/// How long a region's probers may all stay silent before it is called offline: three of the
/// shortest site interval, and never less than three of their heartbeats.
pub fn region_silence_limit(config: &Config, heartbeat: std::time::Duration) -> time::Duration {
    let shortest = config
        .sites
        .iter()
        .map(|s| s.interval)
        .min()
        .unwrap_or(heartbeat);
    let limit = shortest.max(heartbeat) * LIVE_INTERVALS;
    time::Duration::try_from(limit).unwrap_or(time::Duration::MINUTE)
}

/// Steps every region's offline state from the probers' heartbeats (one notice when all of a
/// region's probers went silent, one when one is back) and stores any change with its notices.
/// Probers deciding the same change at once queue the same keys: each notice once. Returns how
/// many messages were queued.
pub fn record_regions(
    config: &Config,
    store: &mut dyn Store,
    heartbeat: std::time::Duration,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let limit = region_silence_limit(config, heartbeat);
    let mut regions: Vec<(String, Vec<(String, OffsetDateTime)>)> = Vec::new();
    for (prober, region, seen) in store.probers()? {
        match regions.iter_mut().find(|(r, _)| *r == region) {
            Some((_, probers)) => probers.push((prober, seen)),
            None => regions.push((region, vec![(prober, seen)])),
        }
    }
    let mut queued = 0;
    for (region, probers) in regions {
        let last = probers.iter().map(|(_, seen)| *seen).max();
        let silent = last.is_some_and(|last| now - last > limit);
        let evidence: Vec<String> = probers
            .iter()
            .map(|(prober, seen)| {
                format!(
                    "prober {prober}: last seen {} s ago",
                    (now - *seen).whole_seconds()
                )
            })
            .collect();
        let key = alert::region_key(&region);
        let state = store.alert_state(&key)?;
        let (next, notices) =
            alert::region_step(&state, &region, silent.then_some(evidence.as_slice()), now);
        if next == state {
            continue;
        }
        for n in &notices {
            log_alert(&key, &region, n, None);
        }
        let messages = prober_messages(config, &key, &notices, now);
        store.record_state(&key, now, &next, &messages)?;
        queued += messages.len();
    }
    Ok(queued)
}

/// Steps this region's own alert state for a site with its confirmed report. `held`: the
/// prober is cut off, so the report says nothing about the site and the state stays as it was.
pub fn judge_region(
    config: &Config,
    store: &dyn Store,
    site: &Site,
    report: &ProbeReport,
    held: bool,
    now: OffsetDateTime,
) -> Result<AlertState, StoreError> {
    let state = store.region_state(&site.name, &config.region)?;
    if held {
        return Ok(state);
    }
    let report = with_previous(site, report, &state);
    Ok(step_region(config, site, &report, now, &state))
}

/// The report judged again with what this region's earlier runs read of the server's status
/// pages (a restart, a pool that filled up in between); the report as it is when it read none,
/// or when that changes nothing.
pub fn with_previous<'a>(
    site: &Site,
    report: &'a ProbeReport,
    before: &AlertState,
) -> Cow<'a, ProbeReport> {
    if !witness::has_witness(&report.observations) {
        return Cow::Borrowed(report);
    }
    if before.witness.is_empty() {
        return Cow::Borrowed(report);
    }
    let diagnosis = diagnose_since(
        &report.host,
        &report.observations,
        &site.probe.shared.diagnose,
        &before.witness,
    );
    if diagnosis == report.diagnosis {
        return Cow::Borrowed(report);
    }
    let mut judged = report.clone();
    judged.status = diagnosis.status;
    judged.diagnosis = diagnosis;
    Cow::Owned(judged)
}

/// This region's state after one run: stepped by the outage machine, the run added to its
/// history.
fn step_region(
    config: &Config,
    site: &Site,
    report: &ProbeReport,
    at: OffsetDateTime,
    before: &AlertState,
) -> AlertState {
    let run = verdict(config, site, report, at);
    let (mut next, _) = alert::step(before, &run, &config.alerts);
    let record = RunRecord::of(
        at,
        &report.observations,
        &report.diagnosis,
        report.hidden_failure.as_ref(),
    );
    let keep = config.alerts.intermittent.window_runs as usize;
    alert::remember(&mut next, record, run.in_maintenance, keep);
    // The status pages' counters, in maintenance too: the next run compares with this one.
    let read = WitnessCounters::read(&report.observations, at.unix_timestamp());
    WitnessCounters::merge(&mut next.witness, read);
    next
}

fn verdict(config: &Config, site: &Site, report: &ProbeReport, now: OffsetDateTime) -> RunVerdict {
    RunVerdict {
        at: now,
        diagnosis: report.diagnosis.clone(),
        in_maintenance: config.in_maintenance(&site.name, now),
    }
}

/// A time to the whole second: every time a person reads is, and spans computed from them
/// then agree with what they say.
pub fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// How many intervals a region may stay silent on a site and still be counted.
const LIVE_INTERVALS: u32 = 3;

/// Settles a site's incident from every region's view once this region's run is stored (the
/// store holds the site meanwhile): the new state and the messages it decided, or `None` when
/// nothing changed. A region counts while it reported on the site within 3 intervals. Incident
/// numbers come from the store's one count (`ledger`); a failure a shared incident tells joins
/// it there (`shared::route`), and only webhooks hear of it from the site itself.
#[allow(clippy::too_many_arguments)]
pub fn decide_site(
    config: &Config,
    site: &Site,
    report: &ProbeReport,
    held: bool,
    now: OffsetDateTime,
    current: &AlertState,
    views: &[RegionView],
    ledger: &mut dyn Ledger,
) -> Result<Option<(AlertState, Vec<NewMessage>)>, StoreError> {
    if held {
        return Ok(None);
    }
    let live_since = now - site.interval * LIVE_INTERVALS;
    let votes: Vec<RegionVote> = views
        .iter()
        .map(|v| RegionVote {
            region: v.region.clone(),
            live: v.region == config.region || v.at >= live_since,
            state: v.state.clone(),
        })
        .collect();
    let run = verdict(config, site, report, now);
    let certs = alert::CertSeen::all_of(report, now);
    let extras = alert::SiteExtras {
        certs: &certs,
        cert_thresholds: &site.probe.shared.diagnose.cert_warning_days,
    };
    let candidates = shared::Candidates::of(config, report);
    let mut failed = None;
    let mut number = |severity| match candidates.number(severity, &mut *ledger) {
        Ok(n) => n,
        Err(e) => {
            failed.get_or_insert(e);
            0
        }
    };
    let (mut next, mut notifications) = alert::site_step(
        current,
        &run,
        &votes,
        config.alerts.quorum,
        &config.alerts,
        extras,
        &mut number,
    );
    if let Some(e) = failed {
        return Err(e);
    }
    if views.len() > 1 && !notifications.is_empty() {
        // Several regions: the notification shows each one's view, and says when the failure
        // is regional (written only when something is sent: most runs send nothing).
        let lines = region_lines(config, &votes, views, now);
        for diagnosis in notifications.iter_mut().filter_map(|n| n.diagnosis_mut()) {
            diagnosis.evidence.extend(lines.iter().cloned());
        }
    }
    let own = shared::route(
        config,
        site,
        report,
        current,
        &mut next,
        &notifications,
        &candidates,
        now,
        ledger,
    )?;
    if next == *current && notifications.is_empty() {
        return Ok(None);
    }
    // What each notification says of its incident, worked out once for its log line and mail.
    let abouts: Vec<mail::About<'_>> = notifications
        .iter()
        .map(|n| about(config, n, current, &next, now))
        .collect();
    for ((n, about), own) in notifications.iter().zip(&abouts).zip(&own) {
        // A shared incident reminds (and logs it) for its sites.
        if *own || !matches!(n, Notification::Reminder { .. }) {
            log_alert(&site.name, &config.region, n, about.cause);
        }
    }
    let url = site.probe.target.url();
    let page = config.feeds.url.as_deref();
    let mut messages = Vec::new();
    for ((n, about), own) in notifications.iter().zip(&abouts).zip(&own) {
        if *own {
            messages.extend(mail::render_about(
                &site.name,
                url,
                n,
                &site.alert_to,
                about,
            ));
            messages.extend(chat::render(&site.name, url, n, &config.notify, page, now));
        }
        messages.extend(webhook::render(&site.name, url, n, &config.webhooks, now));
    }
    Ok(Some((next, messages)))
}

/// One log line per notification, with what a person needs: the site, what happened, its
/// severity, cause and incident number; a warning while something is wrong, info once it is
/// over.
fn log_alert(site: &str, region: &str, n: &Notification, cause: Option<crate::diagnose::Cause>) {
    let (transition, severity) = (n.transition(), n.severity().as_str());
    let cause = cause.map(|c| c.as_str());
    let incident = n.incident();
    if n.is_trouble() {
        tracing::warn!(site, region, transition, severity, cause, incident, "alert");
    } else {
        tracing::info!(site, region, transition, severity, cause, incident, "alert");
    }
}

/// What a site's mail says of its incident: from the state of the notification's severity
/// before the run (a recovery: since when, and why) or after it (the rest).
fn about<'a>(
    config: &'a Config,
    n: &Notification,
    before: &AlertState,
    after: &AlertState,
    at: OffsetDateTime,
) -> mail::About<'a> {
    let severity = n.severity();
    let track = |s: &AlertState| match severity {
        Severity::Down => (s.since, s.cause),
        Severity::Warning => {
            let w = s.warning();
            (w.since, w.cause)
        }
        Severity::Intermittent => {
            let i = s.intermittent();
            (i.since, i.cause)
        }
    };
    // An end is told at its first healthy run.
    let at = match n {
        Notification::Recovered { lasted, .. } => track(before).0.map_or(at, |s| s + *lasted),
        _ => at,
    };
    let (since, cause) = match n {
        Notification::Recovered { .. } => track(before),
        // A certificate notice is about a certificate, not an incident's cause.
        Notification::CertExpiring { .. } | Notification::CertRenewed { .. } => (None, None),
        _ => track(after),
    };
    let alerts = &config.alerts;
    let confirmed_by = match severity {
        Severity::Down => Some((alerts.confirm_runs, alerts.confirm_retries + 1)),
        Severity::Warning | Severity::Intermittent => None,
    };
    let degraded_runs = (severity == Severity::Warning).then_some(alerts.warning.confirm_runs);
    mail::About {
        since,
        cause,
        at: Some(at),
        confirmed_by,
        degraded_runs,
        page: config.feeds.url.as_deref(),
        zone: Some(&config.alerts.zone),
    }
}

/// Each region's view of a site, side by side, for a notification: the quorum, then a line per
/// region (status, cause, Cloudflare colo, time; or how long it has been silent), and whether
/// the failure is regional (confirmed from some live regions while others see the site well).
pub fn region_lines(
    config: &Config,
    votes: &[RegionVote],
    views: &[RegionView],
    now: OffsetDateTime,
) -> Vec<String> {
    let live = votes.iter().filter(|v| v.live).count();
    let needed = alert::regions_needed(config.alerts.quorum, votes);
    let confirming: Vec<&str> = votes
        .iter()
        .filter(|v| v.live && v.confirms_down())
        .map(|v| v.region.as_str())
        .collect();
    let well: Vec<&str> = votes
        .iter()
        .zip(views)
        .filter(|(v, view)| {
            v.live
                && !v.confirms_down()
                && view.seen.as_ref().is_some_and(|s| s.status != Status::Down)
        })
        .map(|(v, _)| v.region.as_str())
        .collect();
    let mut lines = vec![format!(
        "regions: {} of {live} live confirm it down (quorum {needed})",
        confirming.len()
    )];
    for (vote, view) in votes.iter().zip(views) {
        let mut line = format!("region {}: ", vote.region);
        match &view.seen {
            Some(seen) => {
                line.push_str(&format!(
                    "{} · {}",
                    seen.status.as_str(),
                    seen.cause.as_str()
                ));
                if let Some(colo) = &seen.colo {
                    line.push_str(&format!(", Cloudflare {colo}"));
                }
                if let Some(ms) = seen.total_ms {
                    line.push_str(&format!(", {ms:.0} ms"));
                }
            }
            None => line.push_str(&format!("{:?}", vote.state.phase).to_lowercase()),
        }
        if vote.confirms_down() {
            if let Some(since) = vote.state.since {
                let minutes = (now - since).whole_minutes();
                line.push_str(&format!(", confirmed down for {minutes} min"));
            }
        }
        if !vote.live {
            let minutes = (now - view.at).whole_minutes();
            line.push_str(&format!(" — silent for {minutes} min, not counted"));
        }
        lines.push(line);
    }
    if !confirming.is_empty() && !well.is_empty() {
        lines.push(format!(
            "regional: fails from {} while {} see it well — the route or the edge location, not the origin",
            confirming.join(", "),
            well.join(", ")
        ));
    }
    lines
}

/// What storing a batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Messages queued.
    pub queued: usize,
    /// Each entry's open incidents and their progress after its run (`alert::progress`).
    pub progress: Vec<Option<String>>,
    /// Each entry's diagnosis when its earlier runs' status reads changed it (`with_previous`);
    /// `None` when it stands as probed.
    pub judged: Vec<Option<crate::diagnose::Diagnosis>>,
    /// A site joined, changed in or left a shared incident: it may have something to say.
    pub shared_touched: bool,
}

/// Judges a batch of results (each site's index in the config, its report and when it was
/// probed) and stores them in one transaction, this region's states read in one go: all of
/// them or none. `held`: the prober is cut off.
pub fn record_batch(
    config: &Config,
    store: &mut dyn Store,
    entries: &[(usize, &ProbeReport, OffsetDateTime)],
    held: bool,
) -> Result<BatchOutcome, StoreError> {
    if entries.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let names: Vec<&str> = entries
        .iter()
        .map(|(i, _, _)| config.sites[*i].name.as_str())
        .collect();
    let mut states = store.region_states(&names, &config.region)?;
    let mut judged: Vec<Cow<'_, ProbeReport>> =
        entries.iter().map(|(_, r, _)| Cow::Borrowed(*r)).collect();
    if !held {
        // A site may come more than once (results kept through a store outage): each run
        // steps from the one before it, in order.
        let mut last: std::collections::HashMap<usize, AlertState> = Default::default();
        for ((state, (i, report, at)), judged) in
            states.iter_mut().zip(entries).zip(judged.iter_mut())
        {
            let site = &config.sites[*i];
            let before = last.get(i).unwrap_or(state);
            *judged = with_previous(site, report, before);
            let next = step_region(config, site, judged, *at, before);
            last.insert(*i, next.clone());
            *state = next;
        }
    }
    let runs: Vec<RegionalRun<'_>> = entries
        .iter()
        .zip(&states)
        .zip(&names)
        .zip(&judged)
        .map(|((((_, _, at), state), site), report)| RegionalRun {
            site,
            at: *at,
            report,
            state: (!held).then_some(state),
        })
        .collect();
    // Messages queued per run (a transaction tried again decides again: counted once).
    let mut queued = vec![0; entries.len()];
    let mut touched = vec![false; entries.len()];
    let mut progress = vec![None; entries.len()];
    store.record_regional(&config.region, &runs, &mut |n, current, views, ledger| {
        let (index, _, at) = entries[n];
        let report = &*judged[n];
        // The store holds each region's state after the whole batch; each run is decided on
        // this region's state as it stood after that run.
        let own = RegionView {
            region: config.region.clone(),
            at,
            state: states[n].clone(),
            seen: Some(alert::RegionSeen::of(report)),
        };
        let mut as_of_run: Vec<RegionView> = views
            .iter()
            .filter(|v| v.region != config.region)
            .cloned()
            .collect();
        as_of_run.push(own);
        as_of_run.sort_by(|a, b| a.region.cmp(&b.region));
        let mut watched = shared::Touched::new(ledger);
        let decided = decide_site(
            config,
            &config.sites[index],
            report,
            held,
            at,
            current,
            &as_of_run,
            &mut watched,
        )?;
        touched[n] = watched.touched;
        queued[n] = decided.as_ref().map_or(0, |(_, m)| m.len());
        let state = decided.as_ref().map_or(current, |(s, _)| s);
        progress[n] = alert::progress(state, &states[n], &config.alerts);
        Ok(decided)
    })?;
    Ok(BatchOutcome {
        queued: queued.iter().sum(),
        shared_touched: touched.iter().any(|t| *t),
        progress,
        judged: judged
            .into_iter()
            .map(|r| match r {
                Cow::Owned(r) => Some(r.diagnosis),
                Cow::Borrowed(_) => None,
            })
            .collect(),
    })
}

/// Judges one site's report and stores the result, this region's state, and the site's
/// incident state with any mail, in one transaction (`probe watch`, one site at a time).
/// Returns how many messages were queued.
pub fn record_site(
    config: &Config,
    store: &mut dyn Store,
    site: &Site,
    report: &ProbeReport,
    held: bool,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let before = store.region_state(&site.name, &config.region)?;
    // A cut-off prober's report says nothing of the site: stored as it is, the state kept.
    let (report, state) = if held {
        (Cow::Borrowed(report), before)
    } else {
        let report = with_previous(site, report, &before);
        let state = step_region(config, site, &report, now, &before);
        (report, state)
    };
    let report = &*report;
    let mut queued = 0;
    store.record_regional(
        &config.region,
        &[RegionalRun {
            site: &site.name,
            at: now,
            report,
            state: (!held).then_some(&state),
        }],
        &mut |_, current, views, ledger| {
            let decided = decide_site(config, site, report, held, now, current, views, ledger)?;
            queued = decided.as_ref().map_or(0, |(_, m)| m.len());
            Ok(decided)
        },
    )?;
    // The shared incident it may have opened or joined says what it has to say now.
    let told = shared::tell(
        config,
        &shared::SiteIndex::of(config),
        store,
        now,
        false,
        false,
    )?;
    Ok(queued + told.queued)
}

/// Delivers what is due in the outbox: mail (if there is an SMTP server), chat and webhook
/// calls. `recorder` remembers, across passes of one process, what was delivered but could not
/// be recorded yet.
pub async fn deliver_outbox(
    config: &Config,
    store: &mut dyn Store,
    now: OffsetDateTime,
    recorder: &mut Recorder,
) -> Result<FlushSummary, StoreError> {
    // One read of the outbox for every channel this prober can deliver on: mail needs an SMTP
    // server; a webhook call carries its own URL.
    let mut channels = vec![Channel::Webhook, Channel::Chat];
    if config.smtp.is_some() {
        channels.push(Channel::Mail);
    }
    let due = recorder.due(store, now, &channels)?;
    if due.is_empty() {
        return Ok(FlushSummary::default());
    }
    let mut summary = FlushSummary::default();
    if let Some(smtp) = &config.smtp {
        let mut mail = MailChannel::new(smtp, store.identity()?);
        summary = summary.plus(outbox::flush(store, &mut mail, &due, now, recorder).await?);
    }
    let mut hooks = WebhookChannel::new(&config.webhooks, &config.extra_roots);
    summary = summary.plus(outbox::flush(store, &mut hooks, &due, now, recorder).await?);
    let mut chats = ChatChannel::new(&config.notify, &config.extra_roots);
    summary = summary.plus(outbox::flush(store, &mut chats, &due, now, recorder).await?);
    Ok(summary)
}

/// How long hourly uptime counts are kept: the longest uptime window (90 days) and a day.
const UPTIME_KEPT: time::Duration = time::Duration::days(91);

/// Deletes raw results past the configured retention and uptime counts past 91 days; returns
/// how many results went.
pub fn prune(
    config: &Config,
    store: &mut dyn Store,
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    store.prune_uptime(now - UPTIME_KEPT)?;
    store.prune_results(now - config.retention)
}

/// One pass over every site; `now` stamps the run (a parameter so tests can compress time).
pub async fn run_once(
    config: &Config,
    store: &mut dyn Store,
    now: OffsetDateTime,
) -> Result<PassOutcome, ScheduleError> {
    run_once_with(config, store, now, &mut |_, _, _| {}).await
}

/// `run_once`, calling `on_site` with each site's name, report and open incidents' progress once
/// it is stored (in the order the sites finish).
pub async fn run_once_with(
    config: &Config,
    store: &mut dyn Store,
    now: OffsetDateTime,
    on_site: &mut dyn FnMut(&str, &ProbeReport, Option<&str>),
) -> Result<PassOutcome, ScheduleError> {
    let alerts = Arc::new(config.alerts.clone());
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0;
    let mut outcome = PassOutcome::default();
    // While no site has answered, the prober may be cut off: silent reports wait here until one
    // answers (then they are judged as usual) or the pass ends (then the control checks decide).
    let mut unanswered: Vec<(usize, ProbeReport)> = Vec::new();
    let mut answered = false;
    let mut batch: Vec<(usize, ProbeReport)> = Vec::with_capacity(BATCH);
    loop {
        // Started as others finish, so only CONCURRENCY sites' settings are copied at once.
        while tasks.len() < CONCURRENCY && next < config.sites.len() {
            let (index, site, alerts) = (next, config.sites[next].clone(), alerts.clone());
            tasks.spawn(async move { (index, probe_confirmed(&site, &alerts).await) });
            next += 1;
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (index, report) = match joined {
            Ok((index, result)) => (index, result?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => continue,
        };
        outcome.sites += 1;
        if !answered && is_silent(&report) {
            unanswered.push((index, report));
            continue;
        }
        if !answered {
            // A site that answers, even 502, proves the network works: no cut-off this pass.
            answered = true;
            record_prober(config, store, None, now)?;
            batch.append(&mut unanswered);
        }
        batch.push((index, report));
        if batch.len() >= BATCH {
            store_batch(config, store, &mut batch, false, now, &mut outcome, on_site)?;
        }
    }
    if !answered {
        // Every site unanswering at once may be the prober's own network: the control checks
        // tell.
        let evidence = if unanswered.is_empty() || config.control_checks.is_empty() {
            None
        } else {
            let silent: Vec<(String, String)> = unanswered
                .iter()
                .map(|(i, r)| (config.sites[*i].name.clone(), r.diagnosis.summary.clone()))
                .collect();
            control_checks_fail(config)
                .await?
                .map(|controls| cut_off_evidence(&controls, &silent, unanswered.len()))
        };
        let (cut_off, _) = record_prober(config, store, evidence.as_deref(), now)?;
        outcome.cut_off = cut_off;
        while !unanswered.is_empty() {
            let mut part: Vec<_> = unanswered.drain(..unanswered.len().min(BATCH)).collect();
            store_batch(
                config,
                store,
                &mut part,
                cut_off,
                now,
                &mut outcome,
                on_site,
            )?;
        }
    }
    store_batch(config, store, &mut batch, false, now, &mut outcome, on_site)?;

    // Every site of the pass is decided by now: the shared incidents say what they have to
    // say (a site failing but not confirmed yet is waited for, until the next pass).
    shared::tell(
        config,
        &shared::SiteIndex::of(config),
        store,
        now,
        true,
        true,
    )?;
    let delivered = deliver_outbox(config, store, now, &mut Recorder::default()).await?;
    prune(config, store, now)?;
    outcome.mails_sent = delivered.sent;
    outcome.mails_waiting = delivered.waiting();
    outcome.mails_given_up = delivered.given_up;
    outcome.waiting_why = delivered.why;
    Ok(outcome)
}

/// Judges a batch of finished sites and stores them in one transaction (all of them or none),
/// then hands each to `on_site` and lets the reports go. `held`: the prober is cut off.
fn store_batch(
    config: &Config,
    store: &mut dyn Store,
    batch: &mut Vec<(usize, ProbeReport)>,
    held: bool,
    now: OffsetDateTime,
    outcome: &mut PassOutcome,
    on_site: &mut dyn FnMut(&str, &ProbeReport, Option<&str>),
) -> Result<(), StoreError> {
    if batch.is_empty() {
        return Ok(());
    }
    // In config order within the batch: the queued notifications go out in that order.
    batch.sort_by_key(|(index, _)| *index);
    let entries: Vec<(usize, &ProbeReport, OffsetDateTime)> =
        batch.iter().map(|(i, r)| (*i, r, now)).collect();
    let stored = record_batch(config, store, &entries, held)?;
    for (((index, mut report), progress), judged) in
        batch.drain(..).zip(stored.progress).zip(stored.judged)
    {
        if let Some(diagnosis) = judged {
            report.status = diagnosis.status;
            report.diagnosis = diagnosis;
        }
        outcome.worst = outcome.worst.max(report.status);
        on_site(&config.sites[index].name, &report, progress.as_deref());
    }
    Ok(())
}
