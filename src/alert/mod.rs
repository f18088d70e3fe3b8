//! The per-site alert state machine: ok → suspect → down → recovering → ok.
//!
//! Pure: given a site's state, the verdict of one run and the policy, it returns the next state
//! and the notifications to send. The store keeps the state between runs (so a one-shot `probe
//! run` every minute never repeats an alert); the mailer sends what comes out. No clock is read
//! here: the run's time comes in.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod group;

use crate::config::Alerts;
use crate::diagnose::pattern::{self, RunRecord};
use crate::diagnose::{Cause, Diagnosis};
use crate::observe::Status;
use crate::text::Zone;

/// Where a site stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertPhase {
    /// Healthy.
    Ok,
    /// Failing, not yet confirmed.
    Suspect,
    /// Confirmed failing: an incident is open.
    Down,
    /// Healthy again, not yet confirmed.
    Recovering,
}

/// A site's alert state, kept between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    pub phase: AlertPhase,
    /// Consecutive failing runs (in `Suspect`) or healthy runs (in `Recovering`).
    pub streak: u32,
    /// The open incident's current cause.
    pub cause: Option<Cause>,
    /// The causes the open incident had before its current one, in turn (a cause that came back
    /// is said again), the last few: its end says how it went.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Cause>,
    /// When the open incident began (its first failing run).
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// When the open incident was last notified (opened, changed or reminded).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_notified: Option<OffsetDateTime>,
    /// The first healthy run after the incident's last failing one (kept once it closes): an
    /// incident ends there, not when the healthy runs confirmed it.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub healthy_since: Option<OffsetDateTime>,
    /// The open (or last) incident's number; part of every notification's identity.
    pub incident: u64,
    /// How many times before the site's own incident opened under this number (it joined a
    /// shared incident again after recovering in it): part of its notifications' identity.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub episode: u32,
    /// Notifications sent for the open incident so far (the opening is 1); each later one takes
    /// the next number into its key. 0 when none is open (and in states stored before it).
    #[serde(default)]
    pub notified: u32,
    /// A site's warnings (degraded, confirmed on their own), beside its outages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<Box<AlertState>>,
    /// A site's intermittent incident (failing now and then over its recent runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermittent: Option<Box<AlertState>>,
    /// Certificates a notice went out for, until they are renewed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<CertSeen>,
    /// A region's recent runs of the site, oldest first (as many as the intermittency window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RunRecord>,
    /// What the region last read of each origin's status pages (runs in maintenance too), for
    /// the next run to compare with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witness: Vec<crate::observe::witness::WitnessCounters>,
    /// The shared incident the open incident belongs to (other sites may share it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Group>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for AlertState {
    fn default() -> Self {
        Self {
            phase: AlertPhase::Ok,
            streak: 0,
            cause: None,
            earlier: Vec::new(),
            since: None,
            last_notified: None,
            healthy_since: None,
            incident: 0,
            episode: 0,
            notified: 0,
            warning: None,
            intermittent: None,
            certs: Vec::new(),
            history: Vec::new(),
            witness: Vec::new(),
            group: None,
        }
    }
}

impl AlertState {
    /// Healthy, with no incident open: the incident count, the other tracks and the history
    /// stay.
    pub fn closed(&self) -> AlertState {
        AlertState {
            phase: AlertPhase::Ok,
            streak: 0,
            cause: None,
            earlier: Vec::new(),
            since: None,
            last_notified: None,
            notified: 0,
            group: None,
            ..self.clone()
        }
    }

    /// An incident is open (confirmed, maybe recovering).
    pub fn is_open(&self) -> bool {
        matches!(self.phase, AlertPhase::Down | AlertPhase::Recovering)
    }

    /// The warning track (idle when none was kept).
    pub fn warning(&self) -> AlertState {
        self.warning.as_deref().cloned().unwrap_or_default()
    }

    /// The intermittent track (idle when none was kept).
    pub fn intermittent(&self) -> AlertState {
        self.intermittent.as_deref().cloned().unwrap_or_default()
    }
}

/// What several failing sites can share: an origin address failing on the origin's side (the
/// web server, PHP-FPM, the database), or an edge failing on its own. Their outages are told as
/// one incident. The cause is each site's own: one server may break two ways at once, and a
/// site whose cause changes stays in its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// What the sites share: `origin 203.0.113.10`, `edge Cloudflare FRA`.
    pub key: String,
    /// Where, for a subject: `on 203.0.113.10`, `behind the edge (Cloudflare FRA)`.
    pub place: String,
    /// This site's cause.
    pub cause: Cause,
}

impl Group {
    /// The group a failing report's cause puts its site in, if the cause can be shared.
    pub fn of(report: &crate::engine::ProbeReport) -> Option<Group> {
        use crate::diagnose::Hop;
        use crate::observe::Route;
        let cause = report.diagnosis.cause;
        if report.diagnosis.status != Status::Down {
            return None;
        }
        if cause.hop() == Hop::VisitorEdge && cause == Cause::EdgeInternal {
            let edge = RegionSeen::of(report)
                .colo
                .map(|colo| format!("Cloudflare {colo}"))
                .or_else(|| page_address(report, Route::Edge).map(|a| format!("edge {a}")))?;
            return Some(Group {
                key: format!("edge {edge}"),
                place: format!("behind the edge ({edge})"),
                cause,
            });
        }
        Group::on_origin(report, "")
    }

    /// The group a degraded report's warning puts its site in: a hop behind the edge failing
    /// or slow (the origin failing behind an edge that still serves, PHP slow) on one origin
    /// address, which other sites on it may share.
    pub fn of_warning(report: &crate::engine::ProbeReport) -> Option<Group> {
        if report.diagnosis.status != Status::Degraded {
            return None;
        }
        Group::on_origin(report, "warning ")
    }

    /// A cause on the origin's side (the web server, PHP-FPM, the database) shared on the
    /// origin address the report dialled; `prefix` keeps a warning's group apart.
    fn on_origin(report: &crate::engine::ProbeReport, prefix: &str) -> Option<Group> {
        use crate::diagnose::Hop;
        let cause = report.diagnosis.cause;
        if !matches!(
            cause.hop(),
            Hop::EdgeOrigin | Hop::OriginFpm | Hop::FpmDatabase
        ) {
            return None;
        }
        let origin = page_address(report, crate::observe::Route::Origin)?;
        Some(Group {
            key: format!("{prefix}origin {origin}"),
            place: format!("on {origin}"),
            cause,
        })
    }

    /// The origin address a group of sites on one origin is about, if it is one.
    pub fn origin(&self) -> Option<&str> {
        origin_of(&self.key)
    }
}

/// The origin address a shared incident's key names (`origin 203.0.113.10`, `warning origin
/// …`), if it names one.
pub fn origin_of(key: &str) -> Option<&str> {
    key.strip_prefix("warning ")
        .unwrap_or(key)
        .strip_prefix("origin ")
}

/// The address a route's page request dialled.
fn page_address(
    report: &crate::engine::ProbeReport,
    route: crate::observe::Route,
) -> Option<String> {
    report
        .observations
        .iter()
        .find(|o| o.route == route && o.path_role == crate::observe::PathRole::Page)
        .and_then(|o| o.address)
        .map(|a| a.ip().to_string())
}

/// How grave an incident is: its own state machine, its own notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Visitors get errors.
    Down,
    /// Working, but degraded (slow, the origin failing behind an edge that still serves, a
    /// certificate near expiry).
    Warning,
    /// Failing now and then over the recent runs.
    Intermittent,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Down => "down",
            Severity::Warning => "warning",
            Severity::Intermittent => "intermittent",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        [Severity::Down, Severity::Warning, Severity::Intermittent]
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    /// The part of a notification key that keeps each severity's incidents apart (none for
    /// outages, whose keys predate severities).
    fn key_part(self) -> &'static str {
        match self {
            Severity::Down => "",
            Severity::Warning => "warning/",
            Severity::Intermittent => "intermittent/",
        }
    }
}

/// A certificate a route presented, as its notices name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertSeen {
    /// Stable over runs: from its subject, issuer and expiry.
    pub id: String,
    /// `edge`, `origin`, or `edge and origin`.
    pub route: String,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    pub days_left: i64,
    /// A Cloudflare Origin CA certificate (renewed in Cloudflare's dashboard, not by an ACME
    /// client).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub origin_ca: bool,
    /// The smallest threshold a notice went out for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified: Option<i64>,
}

impl CertSeen {
    /// The leaf certificates a report's routes presented, each once, with the whole days left
    /// from `at` (the run's time) to their expiry.
    pub fn all_of(report: &crate::engine::ProbeReport, at: OffsetDateTime) -> Vec<CertSeen> {
        let mut seen: Vec<CertSeen> = Vec::new();
        for o in &report.observations {
            let Some(leaf) = o.tls.as_ref().and_then(|t| t.leaf()) else {
                continue;
            };
            let id = crate::text::short_id(&format!(
                "{}\n{}\n{}",
                leaf.subject, leaf.issuer, leaf.not_after
            ));
            let route = o.route.as_str();
            match seen.iter_mut().find(|c| c.id == id) {
                Some(c) if !c.route.contains(route) => {
                    c.route = "edge and origin".to_string();
                }
                Some(_) => {}
                None => seen.push(CertSeen {
                    id,
                    route: route.to_string(),
                    subject: leaf.subject.clone(),
                    issuer: leaf.issuer.clone(),
                    not_after: leaf.not_after.clone(),
                    days_left: OffsetDateTime::parse(
                        &leaf.not_after,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .map_or(leaf.days_left, |end| {
                        (end - at).whole_seconds().div_euclid(86_400)
                    }),
                    origin_ca: leaf.cloudflare_origin_ca,
                    notified: None,
                }),
            }
        }
        seen
    }
}

/// What happened, worth a mail.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// An incident opened (`episode` > 0: the site's own incident opened again inside the
    /// shared incident of that number, which had gone on without it meanwhile).
    Opened {
        severity: Severity,
        incident: u64,
        episode: u32,
        diagnosis: Diagnosis,
    },
    /// The open incident's cause changed.
    CauseChanged {
        severity: Severity,
        incident: u64,
        episode: u32,
        /// Its place among the incident's notifications (the opening is 1): a cause can come
        /// back within one incident, and each change is its own notification.
        sequence: u32,
        from: Cause,
        diagnosis: Diagnosis,
    },
    /// The incident is still open.
    Reminder {
        severity: Severity,
        incident: u64,
        episode: u32,
        /// Its place among the incident's notifications.
        sequence: u32,
        open_for: Duration,
        diagnosis: Diagnosis,
    },
    /// The incident closed; `cause` is the one it had last, `earlier` the ones before it (said
    /// again at its end).
    Recovered {
        severity: Severity,
        incident: u64,
        episode: u32,
        lasted: Duration,
        cause: Option<Cause>,
        earlier: Vec<Cause>,
    },
    /// A lighter incident ended inside a graver one that opened (its opening says so): no mail
    /// of its own, but a webhook receiver learns it is over.
    Folded {
        severity: Severity,
        incident: u64,
        episode: u32,
        lasted: Duration,
    },
    /// A certificate came within a threshold of its expiry (`threshold` days).
    CertExpiring { cert: CertSeen, threshold: i64 },
    /// A certificate a notice went out for is no longer presented: `by` replaced it.
    CertRenewed { cert: CertSeen, by: CertSeen },
    /// The prober itself is cut off: every site and every control check failed in one run.
    /// `evidence` says what each of them saw.
    ConnectivityLost {
        incident: u64,
        evidence: Vec<String>,
    },
    /// The prober reaches the network again.
    ConnectivityRestored { incident: u64, lasted: Duration },
    /// Every prober of a region went silent (no heartbeat): its sites are no longer watched
    /// from there. `evidence` says when each was last seen.
    RegionOffline {
        incident: u64,
        region: String,
        evidence: Vec<String>,
    },
    /// A prober of the region reports again.
    RegionOnline {
        incident: u64,
        region: String,
        lasted: Duration,
    },
}

impl Notification {
    /// How grave it is (certificate notices are warnings; the probers' own notices are about
    /// no site, and count as outages).
    pub fn severity(&self) -> Severity {
        match self {
            Notification::Opened { severity, .. }
            | Notification::CauseChanged { severity, .. }
            | Notification::Reminder { severity, .. }
            | Notification::Recovered { severity, .. }
            | Notification::Folded { severity, .. } => *severity,
            Notification::CertExpiring { .. } | Notification::CertRenewed { .. } => {
                Severity::Warning
            }
            _ => Severity::Down,
        }
    }

    /// What happened, in one word for logs: `opened`, `cause_changed`, `recovered`, ….
    pub fn transition(&self) -> &'static str {
        match self {
            Notification::Opened { .. } => "opened",
            Notification::CauseChanged { .. } => "cause_changed",
            Notification::Reminder { .. } => "reminder",
            Notification::Recovered { .. } => "recovered",
            Notification::Folded { .. } => "folded",
            Notification::CertExpiring { .. } => "certificate_expiring",
            Notification::CertRenewed { .. } => "certificate_renewed",
            Notification::ConnectivityLost { .. } => "prober_offline",
            Notification::ConnectivityRestored { .. } => "prober_online",
            Notification::RegionOffline { .. } => "region_offline",
            Notification::RegionOnline { .. } => "region_online",
        }
    }

    /// Whether it says something is wrong (else that it is over): logged as a warning.
    pub fn is_trouble(&self) -> bool {
        !matches!(
            self,
            Notification::Recovered { .. }
                | Notification::Folded { .. }
                | Notification::CertRenewed { .. }
                | Notification::ConnectivityRestored { .. }
                | Notification::RegionOnline { .. }
        )
    }

    /// The incident it belongs to (certificate notices belong to none).
    pub fn incident(&self) -> Option<u64> {
        match self {
            Notification::Opened { incident, .. }
            | Notification::CauseChanged { incident, .. }
            | Notification::Reminder { incident, .. }
            | Notification::Recovered { incident, .. }
            | Notification::Folded { incident, .. }
            | Notification::ConnectivityLost { incident, .. }
            | Notification::ConnectivityRestored { incident, .. }
            | Notification::RegionOffline { incident, .. }
            | Notification::RegionOnline { incident, .. } => Some(*incident),
            Notification::CertExpiring { .. } | Notification::CertRenewed { .. } => None,
        }
    }

    /// The diagnosis it carries (an opening, a cause change, a reminder), to add evidence to.
    pub fn diagnosis_mut(&mut self) -> Option<&mut Diagnosis> {
        match self {
            Notification::Opened { diagnosis, .. }
            | Notification::CauseChanged { diagnosis, .. }
            | Notification::Reminder { diagnosis, .. } => Some(diagnosis),
            _ => None,
        }
    }
}

/// The key the prober's own connectivity state is kept under, beside the sites' (a site name
/// cannot start with `@`).
pub const PROBER: &str = "@prober";

/// The key a region's probers keep their connectivity state under: `@prober` for the default
/// region (as before regions), `@prober:REGION` for the others.
pub fn prober_key(region: &str) -> String {
    if region == crate::config::DEFAULT_REGION {
        PROBER.to_string()
    } else {
        format!("{PROBER}:{region}")
    }
}

impl Notification {
    /// The key of the notification its thread began with, when it is not the beginning itself:
    /// an incident's opening for its changes, reminders and end; the prober's or region's first
    /// notice for its return. A certificate's notices all name one key of their own that no mail
    /// carries (`SITE/cert/ID`): clients thread them together by it, whichever came first.
    pub fn thread_key(&self, site: &str) -> Option<String> {
        match self {
            Notification::Opened { .. } => None,
            Notification::CauseChanged {
                severity,
                incident,
                episode,
                ..
            }
            | Notification::Reminder {
                severity,
                incident,
                episode,
                ..
            }
            | Notification::Recovered {
                severity,
                incident,
                episode,
                ..
            }
            | Notification::Folded {
                severity,
                incident,
                episode,
                ..
            } => Some(opening_key(site, *severity, *incident, *episode)),
            Notification::CertExpiring { cert, .. } | Notification::CertRenewed { cert, .. } => {
                Some(format!("{site}/cert/{}", cert.id))
            }
            Notification::ConnectivityLost { .. } | Notification::RegionOffline { .. } => None,
            Notification::ConnectivityRestored { incident, .. } => {
                Some(format!("{site}/{incident}/lost"))
            }
            Notification::RegionOnline { incident, .. } => {
                Some(format!("{site}/{incident}/offline"))
            }
        }
    }

    /// A stable identity: the same event always gets the same id, so a retried or repeated send
    /// can be recognised (it becomes the mail's Message-ID).
    pub fn key(&self, site: &str) -> String {
        match self {
            Notification::Opened {
                severity,
                incident,
                episode,
                ..
            } => opening_key(site, *severity, *incident, *episode),
            Notification::CauseChanged {
                severity,
                incident,
                episode,
                sequence,
                diagnosis,
                ..
            } => {
                let cause = diagnosis.cause.as_str();
                let part = severity.key_part();
                let n = label(*incident, *episode);
                format!("{site}/{part}{n}/{sequence}/cause/{cause}")
            }
            Notification::Reminder {
                severity,
                incident,
                episode,
                sequence,
                open_for,
                ..
            } => {
                format!(
                    "{site}/{}{}/{sequence}/reminder/{}",
                    severity.key_part(),
                    label(*incident, *episode),
                    open_for.as_secs()
                )
            }
            Notification::Recovered {
                severity,
                incident,
                episode,
                ..
            } => format!(
                "{site}/{}{}/recovered",
                severity.key_part(),
                label(*incident, *episode)
            ),
            Notification::Folded {
                severity,
                incident,
                episode,
                ..
            } => format!(
                "{site}/{}{}/folded",
                severity.key_part(),
                label(*incident, *episode)
            ),
            Notification::CertExpiring { cert, threshold } => {
                format!("{site}/cert/{}/{threshold}d", cert.id)
            }
            Notification::CertRenewed { cert, .. } => format!("{site}/cert/{}/renewed", cert.id),
            Notification::ConnectivityLost { incident, .. } => format!("{site}/{incident}/lost"),
            Notification::ConnectivityRestored { incident, .. } => {
                format!("{site}/{incident}/restored")
            }
            Notification::RegionOffline { incident, .. } => format!("{site}/{incident}/offline"),
            Notification::RegionOnline { incident, .. } => format!("{site}/{incident}/online"),
        }
    }
}

/// An incident's number in a key: `7`, or `7.2` for the site's third episode in it.
fn label(incident: u64, episode: u32) -> String {
    if episode == 0 {
        incident.to_string()
    } else {
        format!("{incident}.{episode}")
    }
}

/// The key of an incident's opening.
fn opening_key(site: &str, severity: Severity, incident: u64, episode: u32) -> String {
    format!(
        "{site}/{}{}/opened",
        severity.key_part(),
        label(incident, episode)
    )
}

/// The verdict of one run of one site (after in-run retries).
#[derive(Debug, Clone)]
pub struct RunVerdict {
    pub at: OffsetDateTime,
    pub diagnosis: Diagnosis,
    /// A maintenance window covers the site now: nothing is sent, and failures do not open an
    /// incident.
    pub in_maintenance: bool,
}

impl RunVerdict {
    fn failing(&self) -> bool {
        self.diagnosis.status == Status::Down
    }
}

/// Advances `state` by one run and says what to send.
pub fn step(
    state: &AlertState,
    run: &RunVerdict,
    policy: &Alerts,
) -> (AlertState, Vec<Notification>) {
    step_as(state, run, run.failing(), policy, Severity::Down)
}

/// `step` for an incident of `severity`, the run `failing` by that severity's measure.
fn step_as(
    state: &AlertState,
    run: &RunVerdict,
    failing: bool,
    policy: &Alerts,
    severity: Severity,
) -> (AlertState, Vec<Notification>) {
    let mut next = state.clone();
    let mut out = Vec::new();
    let cause = run.diagnosis.cause;
    match (state.phase, failing) {
        (AlertPhase::Ok, false) => {
            next.streak = 0;
        }
        (AlertPhase::Ok | AlertPhase::Suspect, true) if run.in_maintenance => {
            // A failure inside a maintenance window is expected: it neither counts nor alerts.
        }
        (AlertPhase::Ok, true) | (AlertPhase::Suspect, true) => {
            next.streak = if state.phase == AlertPhase::Ok {
                1
            } else {
                state.streak + 1
            };
            if next.streak == 1 {
                next.since = Some(run.at);
            }
            if next.streak >= policy.confirm_runs {
                next.phase = AlertPhase::Down;
                next.streak = 0;
                next.incident = state.incident + 1;
                next.cause = Some(cause);
                next.earlier = Vec::new();
                next.last_notified = Some(run.at);
                next.notified = 1;
                out.push(Notification::Opened {
                    severity,
                    incident: next.incident,
                    episode: 0,
                    diagnosis: run.diagnosis.clone(),
                });
            } else {
                next.phase = AlertPhase::Suspect;
            }
        }
        (AlertPhase::Suspect, false) => {
            next = state.closed();
        }
        (AlertPhase::Down | AlertPhase::Recovering, true) => {
            next.phase = AlertPhase::Down;
            next.streak = 0;
            next.healthy_since = None;
            if state.cause != Some(cause) {
                let from = state.cause.unwrap_or(Cause::Unknown);
                if state.cause.is_some() {
                    next.earlier = said_before(&state.earlier, from);
                }
                next.cause = Some(cause);
                next.last_notified = Some(run.at);
                next.notified = state.notified + 1;
                out.push(Notification::CauseChanged {
                    severity,
                    incident: state.incident,
                    episode: state.episode,
                    sequence: next.notified,
                    from,
                    diagnosis: run.diagnosis.clone(),
                });
            } else if state
                .last_notified
                .is_some_and(|t| elapsed(t, run.at) >= policy.remind_every)
            {
                next.last_notified = Some(run.at);
                next.notified = state.notified + 1;
                out.push(Notification::Reminder {
                    severity,
                    incident: state.incident,
                    episode: state.episode,
                    sequence: next.notified,
                    open_for: state.since.map_or(Duration::ZERO, |s| elapsed(s, run.at)),
                    diagnosis: run.diagnosis.clone(),
                });
            }
        }
        (AlertPhase::Down | AlertPhase::Recovering, false) => {
            let streak = if state.phase == AlertPhase::Down {
                1
            } else {
                state.streak + 1
            };
            let healthy_since = match state.phase {
                AlertPhase::Down => run.at,
                _ => state.healthy_since.unwrap_or(run.at),
            };
            next.healthy_since = Some(healthy_since);
            if streak >= policy.recover_runs {
                let lasted = state
                    .since
                    .map_or(Duration::ZERO, |s| elapsed(s, healthy_since));
                out.push(Notification::Recovered {
                    severity,
                    incident: state.incident,
                    episode: state.episode,
                    lasted,
                    cause: state.cause,
                    earlier: state.earlier.clone(),
                });
                next = AlertState {
                    healthy_since: Some(healthy_since),
                    ..state.closed()
                };
            } else {
                next.phase = AlertPhase::Recovering;
                next.streak = streak;
            }
        }
    }
    if run.in_maintenance {
        out.clear();
    }
    (next, out)
}

/// The causes an incident had before its current one, with `from` (the one it leaves) added:
/// the last few, enough for its end to say how it went.
pub(crate) fn said_before(earlier: &[Cause], from: Cause) -> Vec<Cause> {
    const KEPT: usize = 6;
    let mut said = earlier.to_vec();
    said.push(from);
    let extra = said.len().saturating_sub(KEPT);
    said.drain(..extra);
    said
}

/// What a region's latest result of a site showed, kept beside its state so every region's
/// view can be shown side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionSeen {
    pub status: Status,
    pub cause: Cause,
    pub summary: String,
    /// The Cloudflare data centre that answered on the edge route (from `cf-ray`: `FRA`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colo: Option<String>,
    /// The edge page request's total time, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<f64>,
}

impl RegionSeen {
    pub fn of(report: &crate::engine::ProbeReport) -> Self {
        use crate::observe::{PathRole, Route};
        let page = report
            .observations
            .iter()
            .find(|o| o.route == Route::Edge && o.path_role == PathRole::Page);
        let colo = page
            .and_then(|o| o.response.as_ref())
            .and_then(|r| r.headers.cf_ray.as_deref())
            .and_then(|ray| ray.rsplit_once('-'))
            .map(|(_, colo)| colo)
            .filter(|c| {
                !c.is_empty() && c.len() <= 8 && c.chars().all(|c| c.is_ascii_alphanumeric())
            })
            .map(str::to_string);
        Self {
            status: report.diagnosis.status,
            cause: report.diagnosis.cause,
            summary: report.diagnosis.summary.clone(),
            colo,
            total_ms: page.map(|o| o.timings_ms.total),
        }
    }
}

/// One region's standing on a site, as the store holds it: what its own state machine says
/// (it confirms and recovers on its own, with `confirm_runs` and `recover_runs`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegionVote {
    pub region: String,
    /// Its probers reported on the site recently enough to be counted (within 3 intervals).
    pub live: bool,
    /// Its own state: a region confirms the site down from its opening until its recovery.
    pub state: AlertState,
}

impl RegionVote {
    /// The region has confirmed the site down and not yet seen it recover.
    pub fn confirms_down(&self) -> bool {
        matches!(self.state.phase, AlertPhase::Down | AlertPhase::Recovering)
    }
}

/// How many live regions must confirm a site down: `quorum`, capped at the regions that are
/// live (a region whose probers went silent is not waited for), and never 0.
pub fn regions_needed(quorum: u32, votes: &[RegionVote]) -> usize {
    let live = votes.iter().filter(|v| v.live).count();
    (quorum as usize).min(live).max(1)
}

/// Advances a site's incident state once one region has stepped its own: `votes` holds every
/// region's state (this one's included, already stepped with `run`). An incident opens, on a
/// failing run, when `regions_needed` live regions confirm the site down, and closes when fewer
/// do; while it is open, a failing run changes its cause or reminds as `step` does. With one
/// region and a quorum of 1 this sends exactly what `step` sends for that region.
pub fn quorum_step(
    site: &AlertState,
    run: &RunVerdict,
    votes: &[RegionVote],
    quorum: u32,
    policy: &Alerts,
) -> (AlertState, Vec<Notification>) {
    let needed = regions_needed(quorum, votes);
    let confirming: Vec<&RegionVote> = votes
        .iter()
        .filter(|v| v.live && v.confirms_down())
        .collect();
    let open = matches!(site.phase, AlertPhase::Down | AlertPhase::Recovering);
    let mut out = Vec::new();
    let next = if !open {
        if confirming.len() < needed || !run.failing() || run.in_maintenance {
            return (site.clone(), out);
        }
        // The incident began when the first confirming region saw the failure.
        let since = confirming.iter().filter_map(|v| v.state.since).min();
        let next = AlertState {
            phase: AlertPhase::Down,
            streak: 0,
            cause: Some(run.diagnosis.cause),
            earlier: Vec::new(),
            since: Some(since.unwrap_or(run.at)),
            last_notified: Some(run.at),
            incident: site.incident + 1,
            notified: 1,
            ..site.clone()
        };
        out.push(Notification::Opened {
            severity: Severity::Down,
            incident: next.incident,
            episode: 0,
            diagnosis: run.diagnosis.clone(),
        });
        next
    } else if confirming.len() < needed {
        // It ended with the first healthy run of the regions that saw it end, not with the
        // runs that confirmed it.
        let ended = votes
            .iter()
            .filter(|v| !v.confirms_down())
            .filter_map(|v| v.state.healthy_since)
            .filter(|t| site.since.is_none_or(|s| *t >= s))
            .max()
            .unwrap_or(run.at);
        let lasted = site.since.map_or(Duration::ZERO, |s| elapsed(s, ended));
        out.push(Notification::Recovered {
            severity: Severity::Down,
            incident: site.incident,
            episode: site.episode,
            lasted,
            cause: site.cause,
            earlier: site.earlier.clone(),
        });
        site.closed()
    } else if run.failing() {
        if run.diagnosis.cause != site.cause.unwrap_or(Cause::Unknown)
            && confirming.iter().any(|v| v.state.cause == site.cause)
        {
            // Regions may see one outage differently (refused here, a timeout there): the
            // incident's cause changes only once no confirming region still sees it, so two
            // regions do not trade "cause changed" back and forth.
            return (site.clone(), out);
        }
        let down = AlertState {
            phase: AlertPhase::Down,
            ..site.clone()
        };
        let (next, changed) = step(&down, run, policy);
        out = changed;
        next
    } else {
        return (site.clone(), out);
    };
    if run.in_maintenance {
        out.clear();
    }
    (next, out)
}

/// A site's open incidents and how far along they are, for a person reading `probe run`:
/// "incident #3 open since 14:02 UTC, recovering 1/2", "failing 1/2 before an incident opens".
/// `state` is the site's, `region` this region's own (which confirms and recovers run by run).
/// `None` when nothing is open or pending.
pub fn progress(state: &AlertState, region: &AlertState, policy: &Alerts) -> Option<String> {
    let since = |s: &AlertState| {
        s.since.map_or(String::new(), |t| {
            format!(" since {}", policy.zone.clock(t))
        })
    };
    let mut parts = Vec::new();
    if state.is_open() {
        let mut line = format!("incident #{} open{}", state.incident, since(state));
        if region.phase == AlertPhase::Recovering {
            line.push_str(&format!(
                ", recovering {}/{}",
                region.streak, policy.recover_runs
            ));
        }
        parts.push(line);
    } else if region.phase == AlertPhase::Suspect {
        parts.push(format!(
            "failing {}/{} before an incident opens",
            region.streak, policy.confirm_runs
        ));
    }
    // Read in place: this runs for every site of every batch.
    for (track, kind) in [
        (state.intermittent.as_deref(), "intermittent"),
        (state.warning.as_deref(), "warning"),
    ] {
        if let Some(track) = track.filter(|t| t.is_open()) {
            parts.push(format!("{kind} #{} open{}", track.incident, since(track)));
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Adds a run to a region's history of a site, keeping the last `keep` (the intermittency
/// window: the history is written with the state on every run). Runs in a maintenance window
/// are not kept: their failures were expected.
pub fn remember(state: &mut AlertState, record: RunRecord, in_maintenance: bool, keep: usize) {
    if in_maintenance {
        return;
    }
    state.history.push(record);
    if state.history.len() > keep {
        let extra = state.history.len() - keep;
        state.history.drain(..extra);
    }
}

/// What a site's run brings beyond the outage verdict: the certificates it saw and the
/// thresholds they are judged by.
#[derive(Debug, Clone, Copy)]
pub struct SiteExtras<'a> {
    pub certs: &'a [CertSeen],
    /// Days before expiry, largest first.
    pub cert_thresholds: &'a [i64],
}

/// Advances a site's every incident once a region has stepped its own state: the outage by the
/// quorum (`quorum_step`), then the intermittent incident from the regions' histories, the
/// warning from the run's degraded verdict, and the certificate notices. A graver incident
/// opening folds a lighter one that is open (its opening says so): one site is never reported
/// down and warned about at once. Each incident opened takes its number from `number` (one
/// count for the whole store, so "incident #7" names one; a site joining a shared incident
/// takes that one's).
pub fn site_step(
    site: &AlertState,
    run: &RunVerdict,
    votes: &[RegionVote],
    quorum: u32,
    policy: &Alerts,
    extras: SiteExtras<'_>,
    number: &mut dyn FnMut(Severity) -> u64,
) -> (AlertState, Vec<Notification>) {
    let (mut next, mut out) = quorum_step(site, run, votes, quorum, policy);
    let down = next.is_open();

    let before = site.intermittent();
    let (intermittent, notes) = intermittent_step(&before, run, votes, quorum, down, policy);
    if down && before.is_open() {
        fold(&mut out, &before, Severity::Intermittent, &policy.zone);
        out.push(folded(&before, Severity::Intermittent, run.at));
    }
    out.extend(notes);

    let before_warning = site.warning();
    let graver = down || intermittent.is_open();
    let (warning, notes) = if graver {
        if before_warning.is_open() {
            let folded_into = if down {
                Severity::Down
            } else {
                Severity::Intermittent
            };
            fold_into(&mut out, &before_warning, folded_into, &policy.zone);
            out.push(folded(&before_warning, Severity::Warning, run.at));
        }
        (before_warning.closed(), Vec::new())
    } else if run.failing() {
        // The site is failing: the outage machine judges it, the warning waits.
        (before_warning, Vec::new())
    } else {
        let degraded =
            run.diagnosis.status == Status::Degraded && run.diagnosis.cause != Cause::CertExpiring;
        step_as(
            &before_warning,
            run,
            degraded,
            &policy.for_warnings(),
            Severity::Warning,
        )
    };
    out.extend(notes);
    let (mut intermittent, mut warning) = (intermittent, warning);
    if !run.in_maintenance {
        for n in out.iter_mut() {
            if let Notification::Opened {
                severity,
                incident,
                episode,
                ..
            } = n
            {
                let taken = number(*severity);
                *incident = taken;
                // The same number again: the shared incident it was in goes on, and the site's
                // own incident opens in it once more.
                let track = match severity {
                    Severity::Down => &mut next,
                    Severity::Warning => &mut warning,
                    Severity::Intermittent => &mut intermittent,
                };
                let before = match severity {
                    Severity::Down => (site.incident, site.episode),
                    Severity::Warning => (site.warning().incident, site.warning().episode),
                    Severity::Intermittent => {
                        (site.intermittent().incident, site.intermittent().episode)
                    }
                };
                *episode = if before.0 == taken { before.1 + 1 } else { 0 };
                track.incident = taken;
                track.episode = *episode;
            }
        }
    }
    if !run.in_maintenance {
        let (certs, notes) = cert_step(&site.certs, extras.certs, extras.cert_thresholds);
        next.certs = certs;
        out.extend(notes);
    }
    next.intermittent = (intermittent != AlertState::default()).then(|| Box::new(intermittent));
    next.warning = (warning != AlertState::default()).then(|| Box::new(warning));
    if run.in_maintenance {
        out.clear();
    }
    (next, out)
}

/// The notice that an open lighter incident ended inside a graver one.
fn folded(lighter: &AlertState, severity: Severity, at: OffsetDateTime) -> Notification {
    Notification::Folded {
        severity,
        incident: lighter.incident,
        episode: lighter.episode,
        lasted: lighter.since.map_or(Duration::ZERO, |s| elapsed(s, at)),
    }
}

/// The open `lighter` incident ends inside the graver one opening now: its opening says so.
fn fold(out: &mut [Notification], lighter: &AlertState, severity: Severity, zone: &Zone) {
    let line = format!(
        "the open {} incident #{} ({}, since {}) is part of this one",
        severity.as_str(),
        lighter.incident,
        lighter.cause.unwrap_or(Cause::Unknown).as_str(),
        lighter.since.map_or("?".to_string(), |t| zone.moment(t))
    );
    for n in out.iter_mut() {
        if let Notification::Opened { diagnosis, .. } = n {
            diagnosis.evidence.push(line.clone());
        }
    }
}

/// A warning folded into the graver incident (of `into`) opening in this run, or already open.
fn fold_into(out: &mut [Notification], warning: &AlertState, into: Severity, zone: &Zone) {
    let opening = out
        .iter()
        .any(|n| matches!(n, Notification::Opened { severity, .. } if *severity == into));
    if opening {
        fold(out, warning, Severity::Warning, zone);
    }
}

/// The intermittent incident: opens when enough live regions' recent runs show the site failing
/// now and then (and it is not down), closes after a full window without a failure; folded
/// (closed without a notice) when the site goes down. While closed, the track's `since` marks
/// the last run of the last outage: the failures up to it belonged to that outage and do not
/// count again.
fn intermittent_step(
    track: &AlertState,
    run: &RunVerdict,
    votes: &[RegionVote],
    quorum: u32,
    down: bool,
    policy: &Alerts,
) -> (AlertState, Vec<Notification>) {
    let settings = &policy.intermittent;
    if run.in_maintenance {
        return (track.clone(), Vec::new());
    }
    if down {
        let mark = AlertState {
            since: Some(run.at),
            ..track.closed()
        };
        return (mark, Vec::new());
    }
    if !settings.enabled {
        // Turned off while one is open: it is closed, and said so.
        let closing = track.is_open().then(|| Notification::Recovered {
            severity: Severity::Intermittent,
            incident: track.incident,
            episode: track.episode,
            lasted: track.since.map_or(Duration::ZERO, |s| elapsed(s, run.at)),
            cause: track.cause,
            earlier: track.earlier.clone(),
        });
        return (track.closed(), closing.into_iter().collect());
    }
    let counted_from = if track.is_open() { None } else { track.since };
    let fresh = |history: &'_ [RunRecord]| -> usize {
        counted_from.map_or(0, |mark| {
            let mark = mark.unix_timestamp();
            history
                .iter()
                .position(|r| r.at > mark)
                .unwrap_or(history.len())
        })
    };
    let (window, min) = (
        settings.window_runs as usize,
        settings.min_failures as usize,
    );
    let live: Vec<&RegionVote> = votes.iter().filter(|v| v.live).collect();
    let showing: Vec<(&RegionVote, pattern::Intermittency)> = live
        .iter()
        .filter_map(|v| {
            let history = &v.state.history[fresh(&v.state.history)..];
            Some((*v, pattern::intermittency(history, window, min)?))
        })
        .collect();
    let needed = regions_needed(quorum, votes);
    let worst = showing
        .iter()
        .max_by_key(|(_, i)| i.failed)
        .map(|(v, _)| *v);
    let diagnosis = |v: &RegionVote| {
        let mut d = pattern::diagnose(&v.state.history[fresh(&v.state.history)..], window);
        if votes.len() > 1 {
            d.evidence
                .insert(0, format!("seen from region {}", v.region));
        }
        d
    };
    let mut out = Vec::new();
    if !track.is_open() {
        let Some(worst) = worst.filter(|_| showing.len() >= needed) else {
            return (track.clone(), out);
        };
        let first_failure =
            pattern::window(&worst.state.history[fresh(&worst.state.history)..], window)
                .iter()
                .find(|r| r.failed())
                .and_then(|r| OffsetDateTime::from_unix_timestamp(r.at).ok());
        let d = diagnosis(worst);
        let next = AlertState {
            phase: AlertPhase::Down,
            streak: 0,
            cause: Some(d.cause),
            since: Some(first_failure.unwrap_or(run.at)),
            last_notified: Some(run.at),
            incident: track.incident + 1,
            notified: 1,
            ..AlertState::default()
        };
        out.push(Notification::Opened {
            severity: Severity::Intermittent,
            incident: next.incident,
            episode: 0,
            diagnosis: d,
        });
        return (next, out);
    }
    if live
        .iter()
        .all(|v| pattern::clean_window(&v.state.history, window))
    {
        let lasted = track.since.map_or(Duration::ZERO, |s| elapsed(s, run.at));
        out.push(Notification::Recovered {
            severity: Severity::Intermittent,
            incident: track.incident,
            episode: track.episode,
            lasted,
            cause: track.cause,
            earlier: track.earlier.clone(),
        });
        return (track.closed(), out);
    }
    let mut next = track.clone();
    let due = track
        .last_notified
        .is_some_and(|t| elapsed(t, run.at) >= policy.remind_every);
    if let (true, Some(worst)) = (due, worst) {
        next.last_notified = Some(run.at);
        next.notified = track.notified + 1;
        out.push(Notification::Reminder {
            severity: Severity::Intermittent,
            incident: track.incident,
            episode: track.episode,
            sequence: next.notified,
            open_for: track.since.map_or(Duration::ZERO, |s| elapsed(s, run.at)),
            diagnosis: diagnosis(worst),
        });
    }
    (next, out)
}

/// Certificate notices: one per certificate at each threshold it crosses (the smallest one
/// crossed, once: a certificate first seen 2 days from expiry gets the 3-day notice only), and
/// one when a route that presented it presents another. A route not seen this run (it failed
/// before TLS) changes nothing; an expired certificate is no longer "expiring" (it fails
/// verification: an outage of its own).
fn cert_step(
    tracked: &[CertSeen],
    seen: &[CertSeen],
    thresholds: &[i64],
) -> (Vec<CertSeen>, Vec<Notification>) {
    let mut out = Vec::new();
    let mut next: Vec<CertSeen> = Vec::new();
    for cert in seen {
        let before = tracked.iter().find(|c| c.id == cert.id);
        let notified = before.and_then(|c| c.notified);
        let crossed = thresholds
            .iter()
            .copied()
            .filter(|t| (0..*t).contains(&cert.days_left))
            .min();
        let mut kept = CertSeen {
            notified,
            ..cert.clone()
        };
        if let Some(threshold) = crossed.filter(|t| notified.is_none_or(|n| t < &n)) {
            kept.notified = Some(threshold);
            out.push(Notification::CertExpiring {
                cert: kept.clone(),
                threshold,
            });
        }
        if kept.notified.is_some() {
            next.push(kept);
        }
    }
    for old in tracked {
        if next.iter().any(|c| c.id == old.id) {
            continue;
        }
        let replaced_by = seen.iter().find(|c| {
            c.id != old.id && (c.route.contains(&old.route) || old.route.contains(&c.route))
        });
        match replaced_by {
            Some(by) => out.push(Notification::CertRenewed {
                cert: old.clone(),
                by: by.clone(),
            }),
            None => next.push(old.clone()),
        }
    }
    (next, out)
}

/// The key a region's offline state is kept under (`@region:eu-west`).
pub fn region_key(region: &str) -> String {
    format!("@region:{region}")
}

/// Advances a region's offline state: `silent` holds the evidence while every prober of the
/// region has been silent too long. One notice when it goes silent, one when it is back.
pub fn region_step(
    state: &AlertState,
    region: &str,
    silent: Option<&[String]>,
    at: OffsetDateTime,
) -> (AlertState, Vec<Notification>) {
    let (next, notices) = connectivity_step(state, silent, at);
    let notices = notices
        .into_iter()
        .map(|n| match n {
            Notification::ConnectivityLost { incident, evidence } => Notification::RegionOffline {
                incident,
                region: region.to_string(),
                evidence,
            },
            Notification::ConnectivityRestored { incident, lasted } => Notification::RegionOnline {
                incident,
                region: region.to_string(),
                lasted,
            },
            other => other,
        })
        .collect();
    (next, notices)
}

/// Advances the prober's own state: `cut_off` holds the evidence when every site and every
/// control check failed in this run. One notice when the prober is cut off, one when it is back;
/// nothing in between, however many runs it lasts.
pub fn connectivity_step(
    state: &AlertState,
    cut_off: Option<&[String]>,
    at: OffsetDateTime,
) -> (AlertState, Vec<Notification>) {
    match (state.phase, cut_off) {
        (AlertPhase::Ok, Some(evidence)) => {
            let next = AlertState {
                phase: AlertPhase::Down,
                streak: 0,
                cause: None,
                since: Some(at),
                last_notified: Some(at),
                incident: state.incident + 1,
                notified: 1,
                ..AlertState::default()
            };
            let notice = Notification::ConnectivityLost {
                incident: next.incident,
                evidence: evidence.to_vec(),
            };
            (next, vec![notice])
        }
        (AlertPhase::Ok, None) => (state.clone(), Vec::new()),
        (_, Some(_)) => (state.clone(), Vec::new()),
        (_, None) => {
            let lasted = state.since.map_or(Duration::ZERO, |s| elapsed(s, at));
            let next = state.closed();
            let notice = Notification::ConnectivityRestored {
                incident: state.incident,
                lasted,
            };
            (next, vec![notice])
        }
    }
}

fn elapsed(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    Duration::try_from(to - from).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::Confidence;

    fn policy(confirm_runs: u32, recover_runs: u32) -> Alerts {
        Alerts {
            to: vec!["ops@example.com".into()],
            confirm_retries: 2,
            retry_spacing: Duration::from_secs(5),
            confirm_runs,
            recover_runs,
            quorum: 1,
            remind_every: Duration::from_secs(3600),
            warning: Default::default(),
            intermittent: Default::default(),
            group: true,
            zone: Default::default(),
        }
    }

    fn verdict(minute: i64, cause: Cause) -> RunVerdict {
        let status = match cause {
            Cause::Ok => Status::Ok,
            Cause::CertExpiring | Cause::Slow => Status::Degraded,
            _ => Status::Down,
        };
        RunVerdict {
            at: OffsetDateTime::from_unix_timestamp(1_800_000_000 + minute * 60).unwrap(),
            diagnosis: Diagnosis {
                status,
                hop: cause.hop(),
                cause,
                confidence: Confidence::High,
                summary: String::new(),
                evidence: vec![],
                next_steps: vec![],
                alternatives: vec![],
            },
            in_maintenance: false,
        }
    }

    /// Runs a sequence of (minute, cause) and returns the notifications as short strings.
    fn run(policy: &Alerts, runs: &[(i64, Cause)]) -> Vec<String> {
        let mut state = AlertState::default();
        let mut sent = Vec::new();
        for (minute, cause) in runs {
            let (next, out) = step(&state, &verdict(*minute, *cause), policy);
            state = next;
            sent.extend(out.iter().map(|n| n.key("site")));
        }
        sent
    }

    use Cause::{FpmUnreachable as Fpm, Ok as Up, OriginRefused as Refused};

    #[test]
    fn one_incident_one_opening_reminders_a_cause_change_and_one_recovery() {
        let p = policy(2, 2);
        let runs: Vec<(i64, Cause)> = vec![
            (0, Up),
            (1, Fpm), // suspect
            (2, Fpm), // confirmed: opened
            (3, Fpm),
            (62, Fpm),     // an hour after opening: reminder
            (63, Refused), // cause changed
            (64, Up),      // recovering
            (65, Up),      // recovered
            (66, Up),
        ];
        assert_eq!(
            run(&p, &runs),
            [
                "site/1/opened",
                "site/1/2/reminder/3660",
                "site/1/3/cause/origin_refused",
                "site/1/recovered"
            ]
        );
    }

    #[test]
    fn an_incident_ends_saying_the_causes_it_had_in_turn() {
        let p = policy(1, 1);
        let runs = [(0, Fpm), (1, Refused), (2, Fpm), (3, Fpm), (4, Up)];
        let mut state = AlertState::default();
        let mut ended = None;
        for (minute, cause) in runs {
            let (next, out) = step(&state, &verdict(minute, cause), &p);
            state = next;
            ended = ended.or(out
                .into_iter()
                .find(|n| matches!(n, Notification::Recovered { .. })));
        }
        let Some(Notification::Recovered { cause, earlier, .. }) = ended else {
            panic!("no recovery: {state:?}");
        };
        assert_eq!((cause, earlier), (Some(Fpm), vec![Fpm, Refused]));
        assert!(state.earlier.is_empty(), "the next incident starts afresh");
        let many: Vec<Cause> = (0..10).fold(Vec::new(), |e, i| {
            said_before(&e, if i % 2 == 0 { Fpm } else { Refused })
        });
        assert_eq!(many.len(), 6, "the last few only");
        assert_eq!(many.last(), Some(&Refused));
    }

    #[test]
    fn a_flapping_site_does_not_storm() {
        // Failing every other minute for 20 minutes, with confirmation over 2 runs: never
        // confirmed, never mailed.
        let p = policy(2, 2);
        let runs: Vec<(i64, Cause)> = (0..20)
            .map(|m| (m, if m % 2 == 0 { Fpm } else { Up }))
            .collect();
        assert!(run(&p, &runs).is_empty());
        // Confirmed at once (1 run) but needing 2 healthy runs to recover: one incident, open
        // throughout, reminded once an hour at most.
        let p = policy(1, 2);
        assert_eq!(run(&p, &runs), ["site/1/opened"]);
    }

    #[test]
    fn degraded_is_not_down() {
        let p = policy(1, 1);
        assert!(run(&p, &[(0, Cause::CertExpiring), (1, Cause::Slow)]).is_empty());
    }

    #[test]
    fn maintenance_silences_and_does_not_open() {
        let p = policy(1, 1);
        let mut state = AlertState::default();
        let mut quiet = verdict(0, Fpm);
        quiet.in_maintenance = true;
        let (next, out) = step(&state, &quiet, &p);
        assert!(out.is_empty());
        assert_eq!(next.phase, AlertPhase::Ok);
        state = next;
        let (next, out) = step(&state, &verdict(1, Fpm), &p);
        assert_eq!(next.phase, AlertPhase::Down);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn connectivity_is_lost_once_and_restored_once() {
        let at = |minute: i64| verdict(minute, Up).at;
        let evidence = vec!["control https://a.example/: connect timeout".to_string()];
        let mut state = AlertState::default();
        let mut keys = Vec::new();
        let runs = [false, true, true, true, false, false, true, false];
        for (minute, cut_off) in runs.iter().enumerate() {
            let (next, out) = connectivity_step(
                &state,
                cut_off.then_some(evidence.as_slice()),
                at(minute as i64),
            );
            state = next;
            keys.extend(out.iter().map(|n| n.key(PROBER)));
        }
        assert_eq!(
            keys,
            [
                "@prober/1/lost",
                "@prober/1/restored",
                "@prober/2/lost",
                "@prober/2/restored"
            ]
        );
        assert_eq!(state.phase, AlertPhase::Ok);
    }

    /// Steps one region with `cause` at `minute`, then the site by the quorum: the site's
    /// notifications as keys.
    fn quorum_run(
        p: &Alerts,
        quorum: u32,
        site: &mut AlertState,
        regions: &mut [(String, AlertState, bool)],
        region: usize,
        minute: i64,
        cause: Cause,
    ) -> Vec<String> {
        let run = verdict(minute, cause);
        let (own, _) = step(&regions[region].1, &run, p);
        regions[region].1 = own;
        let votes: Vec<RegionVote> = regions
            .iter()
            .map(|(name, state, live)| RegionVote {
                region: name.clone(),
                live: *live,
                state: state.clone(),
            })
            .collect();
        let (next, out) = quorum_step(site, &run, &votes, quorum, p);
        *site = next;
        out.iter().map(|n| n.key("site")).collect()
    }

    #[test]
    fn one_region_with_a_quorum_of_one_sends_what_step_sends() {
        // Every sequence of 12 runs over three causes, under three policies: the quorum layer
        // over a single region sends exactly the notifications of the plain state machine, and
        // keeps the same incident number, cause and start.
        let causes = [Up, Fpm, Refused];
        for (confirm, recover) in [(1, 1), (1, 2), (2, 2), (3, 1)] {
            let p = policy(confirm, recover);
            for seed in 0..3u32.pow(8) {
                let mut plain = AlertState::default();
                let mut site = AlertState::default();
                let mut regions = vec![("default".to_string(), AlertState::default(), true)];
                let mut code = seed;
                for minute in 0..12 {
                    // Minutes 0..8 come from the seed, then the site recovers; a 61-minute gap
                    // at minute 5 lets a reminder fall due.
                    let cause = if minute < 8 {
                        causes[(code % 3) as usize]
                    } else {
                        Up
                    };
                    code /= 3;
                    let at = if minute >= 5 { minute + 61 } else { minute };
                    let (next, out) = step(&plain, &verdict(at, cause), &p);
                    plain = next;
                    let expected: Vec<String> = out.iter().map(|n| n.key("site")).collect();
                    let got = quorum_run(&p, 1, &mut site, &mut regions, 0, at, cause);
                    assert_eq!(
                        got, expected,
                        "seed {seed} minute {minute} policy {confirm}/{recover}"
                    );
                    let open = matches!(plain.phase, AlertPhase::Down | AlertPhase::Recovering);
                    assert_eq!(
                        site.phase == AlertPhase::Down,
                        open,
                        "seed {seed} minute {minute}"
                    );
                    if open {
                        assert_eq!(
                            (site.incident, site.cause, site.since),
                            (plain.incident, plain.cause, plain.since)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_failure_seen_from_one_region_of_three_opens_nothing_with_a_quorum_of_two() {
        let p = policy(1, 1);
        let mut site = AlertState::default();
        let mut regions: Vec<(String, AlertState, bool)> = ["eu", "us", "ap"]
            .iter()
            .map(|r| (r.to_string(), AlertState::default(), true))
            .collect();
        let mut sent = Vec::new();
        for minute in 0..5 {
            sent.extend(quorum_run(&p, 2, &mut site, &mut regions, 0, minute, Fpm));
            sent.extend(quorum_run(&p, 2, &mut site, &mut regions, 1, minute, Up));
            sent.extend(quorum_run(&p, 2, &mut site, &mut regions, 2, minute, Up));
        }
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(
            regions[0].1.phase,
            AlertPhase::Down,
            "the region itself is down"
        );
        // A second region confirms: one incident, opened by whichever decided it.
        let opened = quorum_run(&p, 2, &mut site, &mut regions, 1, 5, Fpm);
        assert_eq!(opened, ["site/1/opened"]);
        assert_eq!(
            site.since,
            Some(verdict(0, Up).at),
            "from the first region's first failure"
        );
        // The third region failing too sends nothing more; one region recovering leaves two.
        assert!(quorum_run(&p, 2, &mut site, &mut regions, 2, 6, Fpm).is_empty());
        assert!(quorum_run(&p, 2, &mut site, &mut regions, 0, 7, Up).is_empty());
        // Below the quorum: recovered, once.
        assert_eq!(
            quorum_run(&p, 2, &mut site, &mut regions, 1, 8, Up),
            ["site/1/recovered"]
        );
        assert!(quorum_run(&p, 2, &mut site, &mut regions, 2, 9, Up).is_empty());
    }

    #[test]
    fn regions_seeing_one_outage_differently_do_not_trade_cause_changes() {
        // The origin down: refused from one region, a stale socket from the other. One
        // incident, no back-and-forth; once both see the new cause, one change.
        let p = policy(1, 1);
        let mut site = AlertState::default();
        let mut regions = vec![
            ("eu".to_string(), AlertState::default(), true),
            ("us".to_string(), AlertState::default(), true),
        ];
        let mut sent = Vec::new();
        for minute in 0..6 {
            sent.extend(quorum_run(&p, 1, &mut site, &mut regions, 0, minute, Fpm));
            sent.extend(quorum_run(
                &p,
                1,
                &mut site,
                &mut regions,
                1,
                minute,
                Refused,
            ));
        }
        assert_eq!(sent, ["site/1/opened"]);
        sent.extend(quorum_run(&p, 1, &mut site, &mut regions, 0, 6, Refused));
        assert_eq!(sent, ["site/1/opened", "site/1/2/cause/origin_refused"]);
    }

    #[test]
    fn silent_regions_are_not_waited_for_and_the_quorum_is_never_zero() {
        let vote = |live, phase| RegionVote {
            region: "r".into(),
            live,
            state: AlertState {
                phase,
                ..AlertState::default()
            },
        };
        use AlertPhase::{Down, Ok as Fine};
        assert_eq!(regions_needed(3, &[vote(true, Down), vote(false, Fine)]), 1);
        assert_eq!(
            regions_needed(2, &[vote(true, Down), vote(true, Fine), vote(true, Fine)]),
            2
        );
        assert_eq!(regions_needed(2, &[vote(false, Down)]), 1);
        assert_eq!(regions_needed(0, &[]), 1);
        // Two regions, quorum 2, one of them silent: the live one decides alone.
        let p = policy(1, 1);
        let mut site = AlertState::default();
        let mut regions = vec![
            ("eu".to_string(), AlertState::default(), true),
            ("us".to_string(), AlertState::default(), false),
        ];
        assert_eq!(
            quorum_run(&p, 2, &mut site, &mut regions, 0, 0, Fpm),
            ["site/1/opened"]
        );
        // A silent region's stale "down" does not hold an incident open.
        let mut site = AlertState::default();
        let mut regions = vec![
            ("eu".to_string(), AlertState::default(), true),
            (
                "us".to_string(),
                AlertState {
                    phase: Down,
                    ..AlertState::default()
                },
                false,
            ),
        ];
        assert_eq!(
            quorum_run(&p, 2, &mut site, &mut regions, 0, 0, Fpm),
            ["site/1/opened"]
        );
        assert_eq!(
            quorum_run(&p, 2, &mut site, &mut regions, 0, 1, Up),
            ["site/1/recovered"]
        );
    }

    /// One region, one site: steps the region (its history too) and then the site by
    /// `site_step`, as the scheduler does. Returns the notifications' keys.
    fn site_run(
        p: &Alerts,
        site: &mut AlertState,
        region: &mut AlertState,
        minute: i64,
        cause: Cause,
        certs: &[CertSeen],
    ) -> Vec<String> {
        site_run_notes(p, site, region, minute, cause, certs)
            .iter()
            .map(|n| n.key("site"))
            .collect()
    }

    fn site_run_notes(
        p: &Alerts,
        site: &mut AlertState,
        region: &mut AlertState,
        minute: i64,
        cause: Cause,
        certs: &[CertSeen],
    ) -> Vec<Notification> {
        let run = verdict(minute, cause);
        let (mut own, _) = step(region, &run, p);
        let failure = (run.diagnosis.status == Status::Down).then_some(pattern::Failure {
            cause,
            code: Some(502),
            wait_ms: 300.0,
            failed: 1,
            of: 1,
            hidden: false,
        });
        let record = RunRecord {
            at: run.at.unix_timestamp(),
            status: run.diagnosis.status,
            cause,
            failure,
            page_ms: None,
            static_ms: None,
        };
        remember(&mut own, record, false, 20);
        *region = own;
        let votes = [RegionVote {
            region: "default".into(),
            live: true,
            state: region.clone(),
        }];
        let extras = SiteExtras {
            certs,
            cert_thresholds: &[14, 7, 3, 1],
        };
        // One count per site here (the store keeps one for all sites).
        let mut taken = site
            .incident
            .max(site.warning().incident)
            .max(site.intermittent().incident);
        let mut number = |_| {
            taken += 1;
            taken
        };
        let (next, out) = site_step(site, &run, &votes, 1, p, extras, &mut number);
        *site = next;
        out
    }

    #[test]
    fn a_warning_is_confirmed_on_its_own_and_folded_into_an_outage() {
        let p = policy(1, 2);
        let (mut site, mut region) = (AlertState::default(), AlertState::default());
        let mut sent = Vec::new();
        for minute in 0..5 {
            sent.extend(site_run(
                &p,
                &mut site,
                &mut region,
                minute,
                Cause::Slow,
                &[],
            ));
        }
        // Confirmed after 3 degraded runs (the warning default), once.
        assert_eq!(sent, ["site/warning/1/opened"]);
        // The site goes down: the outage opens and says the warning is part of it; the warning
        // ends folded into it (a webhook hears so; no mail of its own).
        let notes = site_run_notes(&p, &mut site, &mut region, 5, Fpm, &[]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(notes[1].key("site"), "site/warning/1/folded");
        let Notification::Opened {
            severity: Severity::Down,
            diagnosis,
            ..
        } = &notes[0]
        else {
            panic!("{notes:?}")
        };
        assert!(diagnosis
            .evidence
            .iter()
            .any(|e| e.starts_with("the open warning incident #1 (slow")));
        assert!(!site.warning().is_open());
        // Back up, then degraded again: a new warning, numbered 2, only after 3 more runs.
        let mut sent = Vec::new();
        for minute in 6..8 {
            sent.extend(site_run(&p, &mut site, &mut region, minute, Up, &[]));
        }
        for minute in 8..11 {
            sent.extend(site_run(
                &p,
                &mut site,
                &mut region,
                minute,
                Cause::Slow,
                &[],
            ));
        }
        for minute in 11..14 {
            sent.extend(site_run(&p, &mut site, &mut region, minute, Up, &[]));
        }
        assert_eq!(
            sent,
            // One count for every severity: the warning was #1, the outage #2.
            [
                "site/2/recovered",
                "site/warning/3/opened",
                "site/warning/3/recovered"
            ]
        );
    }

    fn cert(days_left: i64, not_after: &str) -> CertSeen {
        CertSeen {
            id: crate::text::short_id(not_after),
            route: "origin".into(),
            subject: "CN=probe.test".into(),
            issuer: "CN=Lab CA".into(),
            not_after: not_after.into(),
            days_left,
            origin_ca: false,
            notified: None,
        }
    }

    #[test]
    fn each_certificate_threshold_is_noticed_once_and_a_renewal_closes_it() {
        let p = policy(1, 2);
        let (mut site, mut region) = (AlertState::default(), AlertState::default());
        let mut sent = Vec::new();
        let old = |days| cert(days, "2027-01-20");
        for (minute, days) in [(0, 20), (1, 13), (2, 13), (3, 6), (4, 6), (5, 2), (6, 2)] {
            let seen = [old(days)];
            sent.extend(site_run(&p, &mut site, &mut region, minute, Up, &seen));
        }
        let id = old(0).id;
        assert_eq!(
            sent,
            [
                format!("site/cert/{id}/14d"),
                format!("site/cert/{id}/7d"),
                format!("site/cert/{id}/3d")
            ]
        );
        // A run that saw no certificate (the origin failed before TLS) changes nothing; the
        // new certificate closes the notice, once.
        assert!(site_run(&p, &mut site, &mut region, 7, Up, &[]).is_empty());
        let new = [cert(90, "2027-04-20")];
        assert_eq!(
            site_run(&p, &mut site, &mut region, 8, Up, &new),
            [format!("site/cert/{id}/renewed")]
        );
        assert!(site_run(&p, &mut site, &mut region, 9, Up, &new).is_empty());
        assert!(site.certs.is_empty());
        // First seen 2 days before expiry: the 3-day notice alone.
        let late = [cert(2, "2027-05-01")];
        let keys = site_run(&p, &mut site, &mut region, 10, Up, &late);
        assert_eq!(keys, [format!("site/cert/{}/3d", late[0].id)]);
    }

    #[test]
    fn a_site_failing_every_other_run_opens_one_intermittent_incident() {
        // Confirmation over 2 runs never confirms it down; the history does.
        let p = policy(2, 2);
        let (mut site, mut region) = (AlertState::default(), AlertState::default());
        let mut sent = Vec::new();
        for minute in 0..20 {
            let cause = if minute % 2 == 1 { Fpm } else { Up };
            sent.extend(site_run(&p, &mut site, &mut region, minute, cause, &[]));
        }
        assert_eq!(sent, ["site/intermittent/1/opened"]);
        // The opening came with the third failure, and its evidence quotes the history.
        assert_eq!(site.intermittent().since, Some(verdict(1, Up).at));
        // A full window (20 runs) without failure closes it, once.
        let mut sent = Vec::new();
        for minute in 20..45 {
            sent.extend(site_run(&p, &mut site, &mut region, minute, Up, &[]));
        }
        assert_eq!(sent, ["site/intermittent/1/recovered"]);
    }

    #[test]
    fn an_outage_folds_the_intermittent_incident_and_its_failures_do_not_reopen_it() {
        let p = policy(2, 2);
        let (mut site, mut region) = (AlertState::default(), AlertState::default());
        let mut sent = Vec::new();
        for minute in 0..8 {
            let cause = if minute % 2 == 1 { Fpm } else { Up };
            sent.extend(site_run(&p, &mut site, &mut region, minute, cause, &[]));
        }
        for minute in 8..12 {
            sent.extend(site_run(&p, &mut site, &mut region, minute, Fpm, &[]));
        }
        for minute in 12..16 {
            sent.extend(site_run(&p, &mut site, &mut region, minute, Up, &[]));
        }
        assert_eq!(
            sent,
            [
                "site/intermittent/1/opened",
                "site/2/opened",
                "site/intermittent/1/folded",
                "site/2/recovered"
            ]
        );
        // Failing now and then again after the outage: a new intermittent incident.
        for minute in 16..22 {
            let cause = if minute % 2 == 1 { Fpm } else { Up };
            sent.extend(site_run(&p, &mut site, &mut region, minute, cause, &[]));
        }
        assert_eq!(sent.last().unwrap(), "site/intermittent/3/opened");
    }

    #[test]
    fn the_state_survives_a_round_trip_through_json() {
        let p = policy(1, 2);
        let (state, _) = step(&AlertState::default(), &verdict(0, Fpm), &p);
        let text = serde_json::to_string(&state).unwrap();
        let back: AlertState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.cause, Some(Fpm));
        assert!(text.contains("\"phase\":\"down\""));
    }
}
