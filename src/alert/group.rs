//! A shared failure told as one incident. Sites failing for one reason on one origin address
//! (or one edge), or presenting one certificate near its expiry, are one story: one number,
//! one opening that lists them all, one message for a cause change, a reminder, and the end.
//!
//! Sites join while their own runs are judged (`join`, `change`, `recover`, `suspect`, in the
//! transaction that decides the site); what the group tells, and when, `tick` decides, pure,
//! from the group's state, the time, and what the sites that may share the failure showed
//! since it began. The opening waits while such a site has not been probed since the failure
//! began, or fails without being confirmed yet — at most `Tick::wait` — so sites failing
//! within one interval of each other are told together. A site's own state keeps the group it
//! belongs to; the group keeps its members, what each destination was told, and its thread.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{CertSeen, Severity};
use crate::diagnose::{Cause, Diagnosis};

/// Members whose whole diagnosis the group keeps (for the mail that quotes one in full); the
/// others keep their cause and summary, so a server with a thousand sites keeps a small state.
const FULL_DIAGNOSES: usize = 20;

/// The store key a shared incident is kept under (beside the sites': a site name cannot start
/// with `@`).
pub fn store_key(group: &str) -> String {
    format!("@shared:{group}")
}

/// Whether a stored state's key is a shared incident's.
pub fn is_store_key(key: &str) -> bool {
    key.starts_with("@shared:")
}

/// Where a shared incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupPhase {
    /// Nothing open (closed, or never opened).
    #[default]
    Idle,
    /// A member is confirmed; the opening waits for the others that may join.
    Gathering,
    /// Told; later members join it.
    Open,
}

/// What a shared incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupKind {
    /// Sites down (or degraded) for one shared reason: opened, changed, reminded, recovered.
    #[default]
    Failure,
    /// One certificate near its expiry (or renewed) on several sites: one notice.
    Certificate,
}

/// A site in a shared incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub site: String,
    pub url: String,
    /// Its own first failing run.
    pub since: OffsetDateTime,
    /// When its own incident was confirmed and it joined.
    pub joined_at: OffsetDateTime,
    pub cause: Cause,
    /// Its causes before `cause`, in turn (the last few).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Cause>,
    /// The cause it was last told with (`None`: not told yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub told_cause: Option<Cause>,
    pub summary: String,
    /// Its latest diagnosis in full (the first `FULL_DIAGNOSES` members only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    /// When its own incident ended (it stays listed: the end of the story names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered_at: Option<OffsetDateTime>,
    /// Its own incident's episode in this one (it failed again after recovering in it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub episode: u32,
    /// Its own incident ended because it went down (a warning folded into its outage), not
    /// because it is well.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub folded: bool,
    /// It was let go without its own incident ending in a word (gone from the config, or ended
    /// inside a maintenance window).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub let_go: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Member {
    /// Its diagnosis: whole when kept, else its cause and summary.
    pub fn diagnosis(&self) -> Diagnosis {
        self.diagnosis.clone().unwrap_or_else(|| Diagnosis {
            status: crate::observe::Status::Down,
            hop: self.cause.hop(),
            cause: self.cause,
            confidence: crate::diagnose::Confidence::Medium,
            summary: self.summary.clone(),
            evidence: Vec::new(),
            next_steps: Vec::new(),
            alternatives: Vec::new(),
        })
    }

    /// How long its own incident lasted, to `until` when it has not ended.
    pub fn lasted(&self, until: OffsetDateTime) -> Duration {
        elapsed(self.since, self.recovered_at.unwrap_or(until))
    }
}

/// A site failing the way the group does, not confirmed yet: the opening waits for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    pub site: String,
    pub at: OffsetDateTime,
}

/// What one destination (a mail address, a chat channel) was told of the incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToldTo {
    /// `mail:ops@example.com`, `chat:notify[0]:slack`.
    pub destination: String,
    /// The notification its thread began with.
    pub root: String,
    /// The sites it was told of.
    pub sites: Vec<String>,
    /// Its story is over: every site it was told of ended (it was told so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// How many endings it was told (a site of its failing again makes another).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub endings: u32,
}

/// A shared incident's state, kept under `store_key(key)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// What the sites share: `origin 203.0.113.10`, `warning origin 203.0.113.10`,
    /// `certificate 1a2b3c/14d`.
    pub key: String,
    /// Where, in words: `on 203.0.113.10`.
    pub place: String,
    pub severity: Severity,
    #[serde(default)]
    pub kind: GroupKind,
    /// The incident's number, every member's own too (0 for a certificate notice).
    pub incident: u64,
    #[serde(default)]
    pub phase: GroupPhase,
    /// The first failing run of its first member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<OffsetDateTime>,
    /// When its first member was confirmed: the gathering began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gathering_since: Option<OffsetDateTime>,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspects: Vec<Suspect>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub told: Vec<ToldTo>,
    /// Notifications told so far (the opening is 1): each later one takes the next number into
    /// its key.
    #[serde(default)]
    pub sequence: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notified: Option<OffsetDateTime>,
    /// A member's cause changed and is not told yet: since when (the others may follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changing_since: Option<OffsetDateTime>,
    /// The certificate a certificate notice is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<CertSeen>,
    /// The certificate that replaced it (a renewal notice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_by: Option<CertSeen>,
}

impl GroupState {
    /// A new shared incident, gathering from `at`: its first member is confirmed.
    pub fn begin(
        key: &str,
        place: &str,
        severity: Severity,
        kind: GroupKind,
        incident: u64,
        at: OffsetDateTime,
    ) -> GroupState {
        GroupState {
            key: key.to_string(),
            place: place.to_string(),
            severity,
            kind,
            incident,
            phase: GroupPhase::Gathering,
            since: None,
            gathering_since: Some(at),
            members: Vec::new(),
            suspects: Vec::new(),
            told: Vec::new(),
            sequence: 0,
            last_notified: None,
            changing_since: None,
            cert: None,
            renewed_by: None,
        }
    }

    /// Whether an incident is open (gathering or told).
    pub fn is_open(&self) -> bool {
        self.phase != GroupPhase::Idle
    }

    /// The members whose own incident is still open.
    pub fn failing(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.recovered_at.is_none())
    }

    pub fn member(&self, site: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.site == site)
    }

    /// A site's incident, confirmed at `at` (failing since `since`), belongs to this one. A site
    /// that was in it and recovered joins again, to be told again.
    pub fn join(
        &mut self,
        site: &str,
        url: &str,
        since: OffsetDateTime,
        at: OffsetDateTime,
        diagnosis: &Diagnosis,
        episode: u32,
    ) {
        self.since = Some(self.since.map_or(since, |s| s.min(since)));
        self.suspects.retain(|s| s.site != site);
        let keep_full = self.members.len() < FULL_DIAGNOSES;
        let member = Member {
            site: site.to_string(),
            url: url.to_string(),
            since,
            joined_at: at,
            cause: diagnosis.cause,
            earlier: Vec::new(),
            told_cause: None,
            summary: diagnosis.summary.clone(),
            diagnosis: None,
            recovered_at: None,
            episode,
            folded: false,
            let_go: false,
        };
        match self.members.iter_mut().find(|m| m.site == site) {
            Some(m) => {
                // Failing again after it recovered in it: told again, to everyone told of it.
                let full = m.diagnosis.is_some();
                *m = member;
                if full {
                    m.diagnosis = Some(diagnosis.clone());
                }
                for told in &mut self.told {
                    told.sites.retain(|s| s != site);
                }
            }
            None => {
                self.members.push(member);
                if keep_full {
                    if let Some(m) = self.members.last_mut() {
                        m.diagnosis = Some(diagnosis.clone());
                    }
                }
            }
        }
    }

    /// A member's cause changed (told once the others had their chance to follow).
    pub fn change(&mut self, site: &str, at: OffsetDateTime, diagnosis: &Diagnosis) {
        let Some(m) = self.members.iter_mut().find(|m| m.site == site) else {
            return;
        };
        if m.cause != diagnosis.cause {
            m.earlier = super::said_before(&m.earlier, m.cause);
        }
        m.cause = diagnosis.cause;
        m.summary = diagnosis.summary.clone();
        if m.diagnosis.is_some() {
            m.diagnosis = Some(diagnosis.clone());
        }
        if m.told_cause.is_some_and(|c| c != m.cause) {
            self.changing_since.get_or_insert(at);
        }
    }

    /// A member's latest diagnosis, its cause unchanged (a reminder quotes it).
    pub fn refresh(&mut self, site: &str, diagnosis: &Diagnosis) {
        if let Some(m) = self.members.iter_mut().find(|m| m.site == site) {
            m.summary = diagnosis.summary.clone();
            if m.diagnosis.is_some() && diagnosis.cause == m.cause {
                m.diagnosis = Some(diagnosis.clone());
            }
        }
    }

    /// A member's own incident ended at `at`.
    pub fn recover(&mut self, site: &str, at: OffsetDateTime) {
        if let Some(m) = self.failing_member(site) {
            m.recovered_at = Some(at);
        }
    }

    /// A member's own incident ended because it went down (a warning folded into an outage).
    pub fn fold(&mut self, site: &str, at: OffsetDateTime) {
        if let Some(m) = self.failing_member(site) {
            m.recovered_at = Some(at);
            m.folded = true;
        }
    }

    /// A member let go: its own incident ended without a word, or it left the config.
    pub fn let_go(&mut self, site: &str, at: OffsetDateTime) {
        if let Some(m) = self.failing_member(site) {
            m.recovered_at = Some(at);
            m.let_go = true;
        }
    }

    /// Whether a destination told of it has every site it was told of ended, and was not told
    /// its end yet.
    pub fn ending_due(&self) -> bool {
        self.told.iter().filter(|t| !t.ended).any(|t| {
            let mut mine = self.members.iter().filter(|m| t.sites.contains(&m.site));
            let first = mine.next();
            first.is_some_and(|m| m.recovered_at.is_some())
                && mine.all(|m| m.recovered_at.is_some())
        })
    }

    /// Whether `site` is in it and still failing (its own incident open).
    pub fn holds(&self, site: &str) -> bool {
        self.is_open()
            && self
                .members
                .iter()
                .any(|m| m.site == site && m.recovered_at.is_none())
    }

    fn failing_member(&mut self, site: &str) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.site == site && m.recovered_at.is_none())
    }

    /// A site fails the way this incident's members do, not confirmed yet: the opening waits
    /// for it (only while gathering: once told, it will join when confirmed).
    pub fn suspect(&mut self, site: &str, at: OffsetDateTime) {
        if self.phase != GroupPhase::Gathering || self.member(site).is_some() {
            return;
        }
        match self.suspects.iter_mut().find(|s| s.site == site) {
            Some(s) => s.at = at,
            None => self.suspects.push(Suspect {
                site: site.to_string(),
                at,
            }),
        }
    }

    /// The shared cause of `members`, or `None` when they differ.
    pub fn shared_cause<'a>(members: impl IntoIterator<Item = &'a Member>) -> Option<Cause> {
        let mut causes = members.into_iter().map(|m| m.cause);
        let first = causes.next()?;
        causes.all(|c| c == first).then_some(first)
    }
}

/// What a shared incident says.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupNotice {
    /// Its first telling: these members.
    Opened { sites: Vec<String> },
    /// Members told for the first time after the opening.
    Joined { sequence: u32, sites: Vec<String> },
    /// Members whose cause changed since they were told: (site, from, to).
    Changed {
        sequence: u32,
        changes: Vec<(String, Cause, Cause)>,
    },
    /// Still open, `open_for` since its first failure.
    Reminder { sequence: u32, open_for: Duration },
    /// Every member answers again: from its first failure to its last recovery.
    Recovered {
        ended: OffsetDateTime,
        lasted: Duration,
    },
}

impl GroupNotice {
    /// A stable identity within its incident: `opened`, `3/joined`, …
    pub fn key_part(&self) -> String {
        match self {
            GroupNotice::Opened { .. } => "opened".to_string(),
            GroupNotice::Joined { sequence, .. } => format!("{sequence}/joined"),
            GroupNotice::Changed { sequence, .. } => format!("{sequence}/changed"),
            GroupNotice::Reminder { sequence, .. } => format!("{sequence}/reminder"),
            GroupNotice::Recovered { .. } => "recovered".to_string(),
        }
    }

    /// `opened`, `joined`, `cause_changed`, `reminder`, `recovered`: for logs.
    pub fn transition(&self) -> &'static str {
        match self {
            GroupNotice::Opened { .. } => "opened",
            GroupNotice::Joined { .. } => "joined",
            GroupNotice::Changed { .. } => "cause_changed",
            GroupNotice::Reminder { .. } => "reminder",
            GroupNotice::Recovered { .. } => "recovered",
        }
    }
}

/// What a tick knows beyond the group's own state.
#[derive(Debug, Clone)]
pub struct Tick {
    pub now: OffsetDateTime,
    /// The longest an opening (or a cause change) waits for the other sites.
    pub wait: Duration,
    /// Every site that may share the failure was probed since it began (a `probe run` pass
    /// probes them all): nobody else can join yet.
    pub all_heard: bool,
    /// Suspects whose latest run no longer fails that way (or whose site is gone).
    pub cleared: Vec<String>,
    /// Members whose own incident ended without a word (in a maintenance window) or whose site
    /// is gone from the config: let go, as recovered now.
    pub let_go: Vec<String>,
    pub remind_every: Duration,
}

/// Advances a shared incident: what it tells now, and its state after.
pub fn tick(state: &GroupState, t: &Tick) -> (GroupState, Vec<GroupNotice>) {
    let mut next = state.clone();
    let mut out = Vec::new();
    if !state.is_open() {
        return (next, out);
    }
    next.suspects.retain(|s| !t.cleared.contains(&s.site));
    for site in &t.let_go {
        next.let_go(site, t.now);
    }
    let untold = |s: &GroupState| -> Vec<String> {
        s.members
            .iter()
            .filter(|m| m.told_cause.is_none() && m.recovered_at.is_none())
            .map(|m| m.site.clone())
            .collect()
    };
    if next.phase == GroupPhase::Gathering {
        let waited = next
            .gathering_since
            .map_or(Duration::MAX, |since| elapsed(since, t.now));
        let ready = (t.all_heard && next.suspects.is_empty()) || waited >= t.wait;
        if !ready {
            return (next, out);
        }
        // Told as it stands: every member, those that recovered meanwhile too (their end
        // follows at once, below).
        let sites: Vec<String> = next.members.iter().map(|m| m.site.clone()).collect();
        if sites.is_empty() {
            next.phase = GroupPhase::Idle;
            return (next, out);
        }
        next.suspects.clear();
        next.last_notified = Some(t.now);
        if next.sequence > 0 {
            // Told before (a certificate's notice, a site presenting it later): only the sites
            // not told yet.
            let joining = untold(&next);
            next.sequence += 1;
            mark_told(&mut next);
            next.phase = GroupPhase::Open;
            if !joining.is_empty() {
                out.push(GroupNotice::Joined {
                    sequence: next.sequence,
                    sites: joining,
                });
            }
        } else {
            mark_told(&mut next);
            next.phase = GroupPhase::Open;
            next.sequence = 1;
            out.push(GroupNotice::Opened { sites });
        }
    } else {
        let joining = untold(&next);
        if !joining.is_empty() {
            next.sequence += 1;
            mark_told(&mut next);
            out.push(GroupNotice::Joined {
                sequence: next.sequence,
                sites: joining,
            });
        }
    }
    if next.kind == GroupKind::Certificate {
        // A certificate notice is said once; it neither changes, reminds nor recovers. It rests
        // until a site presenting it later joins (told to whoever was not told yet).
        next.phase = GroupPhase::Idle;
        return (next, out);
    }
    if let Some(change) = changed(&mut next, t) {
        out.push(change);
    }
    let ended = next.members.iter().all(|m| m.recovered_at.is_some());
    if ended {
        let last = next
            .members
            .iter()
            .filter_map(|m| m.recovered_at)
            .max()
            .unwrap_or(t.now);
        let first = next.since.unwrap_or(last);
        out.push(GroupNotice::Recovered {
            ended: last,
            lasted: elapsed(first, last),
        });
        next.phase = GroupPhase::Idle;
        next.suspects.clear();
        next.changing_since = None;
        return (next, out);
    }
    let due = next
        .last_notified
        .is_some_and(|at| elapsed(at, t.now) >= t.remind_every);
    if due && out.is_empty() {
        next.sequence += 1;
        next.last_notified = Some(t.now);
        out.push(GroupNotice::Reminder {
            sequence: next.sequence,
            open_for: next.since.map_or(Duration::ZERO, |s| elapsed(s, t.now)),
        });
    }
    (next, out)
}

/// Every member not told yet is told now, with its cause as it stands.
fn mark_told(state: &mut GroupState) {
    for m in &mut state.members {
        if m.told_cause.is_none() {
            m.told_cause = Some(m.cause);
        }
    }
}

/// The members whose cause changed since they were told, once every failing one has changed
/// or the change waited `t.wait` for the others.
fn changed(state: &mut GroupState, t: &Tick) -> Option<GroupNotice> {
    let differs =
        |m: &Member| m.recovered_at.is_none() && m.told_cause.is_some_and(|c| c != m.cause);
    if !state.members.iter().any(differs) {
        state.changing_since = None;
        return None;
    }
    let since = *state.changing_since.get_or_insert(t.now);
    let all = state
        .failing()
        .all(|m| m.told_cause.is_none_or(|c| c != m.cause));
    if !all && elapsed(since, t.now) < t.wait {
        return None;
    }
    let changes: Vec<(String, Cause, Cause)> = state
        .members
        .iter()
        .filter(|m| differs(m))
        .map(|m| {
            (
                m.site.clone(),
                m.told_cause.unwrap_or(Cause::Unknown),
                m.cause,
            )
        })
        .collect();
    for m in &mut state.members {
        if m.recovered_at.is_none() {
            m.told_cause = Some(m.cause);
        }
    }
    state.changing_since = None;
    state.sequence += 1;
    state.last_notified = Some(t.now);
    Some(GroupNotice::Changed {
        sequence: state.sequence,
        changes,
    })
}

fn elapsed(from: OffsetDateTime, to: OffsetDateTime) -> Duration {
    Duration::try_from(to - from).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{Confidence, Hop};
    use crate::observe::Status;

    fn at(second: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + second).unwrap()
    }

    fn diagnosis(cause: Cause) -> Diagnosis {
        Diagnosis {
            status: Status::Down,
            hop: Hop::OriginFpm,
            cause,
            confidence: Confidence::High,
            summary: format!("{} here", cause.as_str()),
            evidence: vec![],
            next_steps: vec![],
            alternatives: vec![],
        }
    }

    fn tick_at(second: i64, all_heard: bool) -> Tick {
        Tick {
            now: at(second),
            wait: Duration::from_secs(60),
            all_heard,
            cleared: Vec::new(),
            let_go: Vec::new(),
            remind_every: Duration::from_secs(3600),
        }
    }

    fn open(site: &str, second: i64) -> GroupState {
        let mut g = GroupState::begin(
            "origin 127.0.0.1",
            "on 127.0.0.1",
            Severity::Down,
            GroupKind::Failure,
            4,
            at(second),
        );
        g.join(
            site,
            "https://a/",
            at(second - 30),
            at(second),
            &diagnosis(Cause::FpmUnreachable),
            0,
        );
        g
    }

    #[test]
    fn the_opening_waits_for_a_suspect_and_tells_both_with_one_number() {
        let mut g = open("blog", 30);
        // shop failed at 28 s and is not confirmed yet: the opening waits, even with every
        // site heard.
        g.suspect("shop", at(28));
        let (g2, out) = tick(&g, &tick_at(31, true));
        assert!(out.is_empty());
        assert_eq!(g2.phase, GroupPhase::Gathering);
        // shop confirmed at 58 s: one opening for both.
        let mut g = g2;
        g.join(
            "shop",
            "https://s/",
            at(28),
            at(58),
            &diagnosis(Cause::FpmUnreachable),
            0,
        );
        let (g, out) = tick(&g, &tick_at(58, true));
        assert_eq!(
            out,
            [GroupNotice::Opened {
                sites: vec!["blog".into(), "shop".into()]
            }]
        );
        assert_eq!((g.phase, g.incident, g.sequence), (GroupPhase::Open, 4, 1));
    }

    #[test]
    fn a_lone_failure_with_every_other_site_heard_is_told_at_once_and_a_silent_one_waits_at_most_the_bound(
    ) {
        let g = open("blog", 30);
        let (_, out) = tick(&g, &tick_at(30, true));
        assert_eq!(out.len(), 1);
        // Another site not heard since the failure began: wait, up to the bound.
        let (g, out) = tick(&g, &tick_at(60, false));
        assert!(out.is_empty());
        let (_, out) = tick(&g, &tick_at(90, false));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_cause_change_of_the_group_is_one_notice_and_the_end_names_the_whole_span() {
        let mut g = open("blog", 30);
        g.join(
            "shop",
            "https://s/",
            at(10),
            at(30),
            &diagnosis(Cause::FpmUnreachable),
            0,
        );
        let (mut g, _) = tick(&g, &tick_at(30, true));
        // blog changes first: held for shop.
        g.change("blog", at(100), &diagnosis(Cause::DatabaseUnreachable));
        let (mut g, out) = tick(&g, &tick_at(100, true));
        assert!(out.is_empty());
        g.change("shop", at(110), &diagnosis(Cause::DatabaseUnreachable));
        let (mut g, out) = tick(&g, &tick_at(110, true));
        assert_eq!(
            out,
            [GroupNotice::Changed {
                sequence: 2,
                changes: vec![
                    (
                        "blog".into(),
                        Cause::FpmUnreachable,
                        Cause::DatabaseUnreachable
                    ),
                    (
                        "shop".into(),
                        Cause::FpmUnreachable,
                        Cause::DatabaseUnreachable
                    )
                ]
            }]
        );
        // One recovers: nothing yet. The other: the end, from the first failure (blog's, at
        // 0 s) to the last recovery (200 s).
        g.recover("blog", at(150));
        let (mut g, out) = tick(&g, &tick_at(150, true));
        assert!(out.is_empty());
        g.recover("shop", at(200));
        let (g, out) = tick(&g, &tick_at(201, true));
        assert_eq!(
            out,
            [GroupNotice::Recovered {
                ended: at(200),
                lasted: Duration::from_secs(200)
            }]
        );
        assert_eq!(g.phase, GroupPhase::Idle);
    }

    #[test]
    fn a_change_of_the_sites_still_failing_is_told_when_the_others_recovered() {
        let mut g = open("s0", 30);
        for i in 1..11 {
            g.join(
                &format!("s{i}"),
                "https://s/",
                at(0),
                at(30),
                &diagnosis(Cause::FpmUnreachable),
                0,
            );
        }
        let (mut g, _) = tick(&g, &tick_at(30, true));
        for i in 0..9 {
            g.recover(&format!("s{i}"), at(90));
        }
        g.change("s9", at(90), &diagnosis(Cause::FpmWorkerDied));
        g.change("s10", at(90), &diagnosis(Cause::FpmWorkerDied));
        let (_, out) = tick(&g, &tick_at(90, true));
        assert_eq!(
            out,
            [GroupNotice::Changed {
                sequence: 2,
                changes: vec![
                    ("s9".into(), Cause::FpmUnreachable, Cause::FpmWorkerDied),
                    ("s10".into(), Cause::FpmUnreachable, Cause::FpmWorkerDied)
                ]
            }]
        );
    }

    #[test]
    fn a_change_not_followed_is_told_after_the_wait_and_a_late_site_joins() {
        let mut g = open("blog", 30);
        g.join(
            "shop",
            "https://s/",
            at(10),
            at(30),
            &diagnosis(Cause::FpmUnreachable),
            0,
        );
        let (mut g, _) = tick(&g, &tick_at(30, true));
        g.change("blog", at(100), &diagnosis(Cause::DatabaseUnreachable));
        let (g, out) = tick(&g, &tick_at(100, true));
        assert!(out.is_empty());
        let (mut g, out) = tick(&g, &tick_at(161, true));
        assert!(matches!(&out[..], [GroupNotice::Changed { changes, .. }] if changes.len() == 1));
        g.join(
            "news",
            "https://n/",
            at(300),
            at(330),
            &diagnosis(Cause::FpmUnreachable),
            0,
        );
        let (_, out) = tick(&g, &tick_at(330, true));
        assert_eq!(
            out,
            [GroupNotice::Joined {
                sequence: 3,
                sites: vec!["news".into()]
            }]
        );
    }

    #[test]
    fn a_certificate_notice_rests_once_told_and_a_later_site_is_told_alone() {
        let mut g = GroupState::begin(
            "certificate abc/14d",
            "",
            Severity::Warning,
            GroupKind::Certificate,
            0,
            at(0),
        );
        g.join(
            "blog",
            "https://b/",
            at(0),
            at(0),
            &diagnosis(Cause::CertExpiring),
            0,
        );
        g.join(
            "shop",
            "https://s/",
            at(5),
            at(5),
            &diagnosis(Cause::CertExpiring),
            0,
        );
        let (mut g, out) = tick(&g, &tick_at(10, true));
        assert_eq!(
            out,
            [GroupNotice::Opened {
                sites: vec!["blog".into(), "shop".into()]
            }]
        );
        assert!(!g.is_open(), "at rest once told");
        // A third site presents it a day later: told as one more, not opened again.
        g.join(
            "news",
            "https://n/",
            at(86_400),
            at(86_400),
            &diagnosis(Cause::CertExpiring),
            0,
        );
        g.phase = GroupPhase::Gathering;
        g.gathering_since = Some(at(86_400));
        let (g, out) = tick(&g, &tick_at(86_400, true));
        assert_eq!(
            out,
            [GroupNotice::Joined {
                sequence: 2,
                sites: vec!["news".into()]
            }]
        );
        assert!(!g.is_open());
    }

    #[test]
    fn reminders_come_from_the_group_and_a_member_let_go_does_not_hold_it_open() {
        let g = open("blog", 0);
        let (mut g, _) = tick(&g, &tick_at(0, true));
        g.join(
            "shop",
            "https://s/",
            at(0),
            at(10),
            &diagnosis(Cause::FpmUnreachable),
            0,
        );
        let (g, _) = tick(&g, &tick_at(10, true));
        let (g, out) = tick(&g, &tick_at(3600, true));
        assert!(matches!(
            &out[..],
            [GroupNotice::Reminder { sequence: 3, .. }]
        ));
        let mut t = tick_at(3700, true);
        t.let_go = vec!["blog".into()];
        let (mut g, out) = tick(&g, &t);
        assert!(out.is_empty());
        g.recover("shop", at(3800));
        let (_, out) = tick(&g, &tick_at(3800, true));
        assert!(matches!(&out[..], [GroupNotice::Recovered { .. }]));
    }
}
