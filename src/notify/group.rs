//! Telling a shared incident: each of its notices (`alert::group::GroupNotice`) said to every
//! destination — a mail address, a chat or paging channel — that hears of one of its sites,
//! naming that destination's sites only. A destination with one site of it hears that site's
//! own words (the mail a site alone gets); with several, one message lists them and quotes the
//! first in full. Every message carries the incident's one number, and threads under the first
//! message its destination got of it (a destination first hearing of it when a site of its own
//! joins gets that as its opening).

use std::fmt::Write as _;
use std::time::Duration;

use time::OffsetDateTime;

use crate::alert::group::{GroupKind, GroupNotice, GroupState, Member, ToldTo};
use crate::alert::{Notification, Severity};
use crate::config::{Notifier, Site};
use crate::diagnose::{Cause, Diagnosis};
use crate::notify::chat::{self, ChatMessage};
use crate::notify::mail::{self, About, Told};
use crate::store::{Channel, NewMessage};
use crate::text::{duration, printable, xml, Zone};
use crate::words::plural;

/// Who hears of the sites, and what every message says beside its incident.
pub struct Audience<'a> {
    /// A site of the config by name (`None`: gone since it joined).
    pub site: &'a dyn Fn(&str) -> Option<&'a Site>,
    pub notifiers: &'a [Notifier],
    /// The status page's address.
    pub page: Option<&'a str>,
    pub zone: &'a Zone,
    /// How an outage's opening was confirmed: failing runs in a row, attempts within each.
    pub confirmed_by: (u32, u32),
    /// How a warning's opening was confirmed: degraded runs in a row.
    pub degraded_runs: u32,
}

/// Where a message goes.
enum Destination<'a> {
    Mail(String),
    Chat(&'a Notifier),
}

impl Destination<'_> {
    fn id(&self) -> String {
        match self {
            Destination::Mail(to) => format!("mail:{to}"),
            Destination::Chat(c) => format!("chat:{}", c.id),
        }
    }
}

/// The messages that tell `notices` (in order), each destination's thread kept in `group`;
/// then each destination whose every site ended hears that its story is over.
pub fn render(
    audience: &Audience<'_>,
    group: &mut GroupState,
    notices: &[GroupNotice],
    at: OffsetDateTime,
) -> Vec<NewMessage> {
    let mut out = Vec::new();
    // The end is told per destination, below, as soon as its own sites are over.
    for notice in notices
        .iter()
        .filter(|n| !matches!(n, GroupNotice::Recovered { .. }))
    {
        let key = key_of(group, notice);
        for destination in destinations(audience, group) {
            let id = destination.id();
            // A destination whose story ended begins a new one.
            let told = group
                .told
                .iter()
                .position(|t| t.destination == id && !t.ended);
            let Some((message, sites)) =
                tell_one(audience, group, notice, &destination, told, &key, at)
            else {
                continue;
            };
            out.extend(message);
            match told {
                Some(i) => {
                    for site in sites {
                        if !group.told[i].sites.contains(&site) {
                            group.told[i].sites.push(site);
                        }
                    }
                }
                None => {
                    let endings = group
                        .told
                        .iter()
                        .find(|t| t.destination == id)
                        .map_or(0, |t| t.endings);
                    group.told.retain(|t| t.destination != id);
                    group.told.push(ToldTo {
                        destination: id,
                        root: key.clone(),
                        sites,
                        ended: false,
                        endings,
                    });
                }
            }
        }
    }
    out.extend(endings(audience, group, at));
    out
}

/// The end of the story for every destination whose sites have all ended: their span, and
/// each site's. A destination whose sites all went down instead (a warning folded into their
/// outages) or were let go hears nothing more by mail or chat: its paging incident is closed.
fn endings(audience: &Audience<'_>, group: &mut GroupState, at: OffsetDateTime) -> Vec<NewMessage> {
    let mut out = Vec::new();
    for i in 0..group.told.len() {
        let told = &group.told[i];
        if told.ended {
            continue;
        }
        let mine: Vec<&Member> = group
            .members
            .iter()
            .filter(|m| told.sites.contains(&m.site))
            .collect();
        if mine.is_empty() || mine.iter().any(|m| m.recovered_at.is_none()) {
            continue;
        }
        let destination = match told.destination.split_once(':') {
            Some(("mail", to)) => Some(Destination::Mail(to.to_string())),
            Some(("chat", id)) => audience
                .notifiers
                .iter()
                .find(|c| c.id == id)
                .map(Destination::Chat),
            _ => None,
        };
        let ended = mine
            .iter()
            .filter_map(|m| m.recovered_at)
            .max()
            .unwrap_or(at);
        let began = mine.iter().map(|m| m.since).min().unwrap_or(ended);
        let notice = GroupNotice::Recovered {
            ended,
            lasted: Duration::try_from(ended - began).unwrap_or_default(),
        };
        let quiet = mine.iter().all(|m| m.folded || m.let_go);
        let mut key = key_of(group, &notice);
        if told.endings > 0 && group.members.len() != 1 {
            key = format!("{key}.{}", told.endings);
        }
        let message = destination.and_then(|destination| {
            if quiet && !matches!(&destination, Destination::Chat(c) if c.provider.pages()) {
                return None;
            }
            let words = Words {
                group,
                notice: &notice,
                mine: &mine,
                opening: false,
                yours: 0,
                answering: 0,
                paging: told.root.clone(),
                audience,
                at,
            };
            match &destination {
                Destination::Mail(to) => Some(words.mail(&key, to, Some(told.root.clone()))),
                Destination::Chat(c) => words.chat(c, &key, Some(told.root.clone())),
            }
        });
        out.extend(message);
        let told = &mut group.told[i];
        told.ended = true;
        told.endings += 1;
    }
    out
}

/// What `destination` (told before: `told`, its index in the group's list) hears of
/// `notice`, and the sites it names; `None` when none of its sites is in it.
fn tell_one(
    audience: &Audience<'_>,
    group: &GroupState,
    notice: &GroupNotice,
    destination: &Destination<'_>,
    told: Option<usize>,
    key: &str,
    at: OffsetDateTime,
) -> Option<(Option<NewMessage>, Vec<String>)> {
    let covered = |site: &str| covers(audience, destination, site, group.severity);
    let mine: Vec<&Member> = match notice {
        GroupNotice::Opened { sites } => members(group, sites, &covered),
        GroupNotice::Joined { sites, .. } => {
            let already = told.map_or(&[][..], |i| group.told[i].sites.as_slice());
            members(group, sites, &covered)
                .into_iter()
                .filter(|m| !already.contains(&m.site))
                .collect()
        }
        GroupNotice::Changed { changes, .. } if told.is_some() => {
            let sites: Vec<String> = changes.iter().map(|(s, _, _)| s.clone()).collect();
            members(group, &sites, &covered)
        }
        GroupNotice::Reminder { .. } if told.is_some() => {
            group.failing().filter(|m| covered(&m.site)).collect()
        }
        _ => Vec::new(),
    };
    if mine.is_empty() {
        return None;
    }
    let opening = matches!(notice, GroupNotice::Opened { .. }) || told.is_none();
    let root = told.map(|i| group.told[i].root.clone());
    // A paging service's incident is the one its destination's thread began with.
    let paging = root
        .clone()
        .filter(|_| !opening)
        .unwrap_or_else(|| key.to_string());
    let yours = group.failing().filter(|m| covered(&m.site)).count();
    let answering = group
        .members
        .iter()
        .filter(|m| m.recovered_at.is_some() && covered(&m.site))
        .count();
    let words = Words {
        group,
        notice,
        mine: &mine,
        opening,
        yours,
        answering,
        paging,
        audience,
        at,
    };
    let thread = root.filter(|_| !opening);
    let message = match destination {
        Destination::Mail(to) => Some(words.mail(key, to, thread)),
        Destination::Chat(c) => words.chat(c, key, thread),
    };
    Some((message, mine.iter().map(|m| m.site.clone()).collect()))
}

/// The notification `m` alone would have sent for `notice` (`opening`: its destination's
/// first); `None` for one more site of an incident already told.
fn site_notification(
    group: &GroupState,
    notice: &GroupNotice,
    m: &Member,
    opening: bool,
    at: OffsetDateTime,
) -> Option<Notification> {
    let (severity, incident) = (group.severity, group.incident);
    if group.kind == GroupKind::Certificate {
        let cert = group.cert.clone()?;
        return Some(match &group.renewed_by {
            Some(by) => Notification::CertRenewed {
                cert,
                by: by.clone(),
            },
            None => Notification::CertExpiring {
                threshold: threshold_of(&group.key),
                cert,
            },
        });
    }
    Some(match notice {
        _ if opening => Notification::Opened {
            severity,
            incident,
            episode: m.episode,
            diagnosis: m.diagnosis(),
        },
        // A destination told of other sites hears of this one as one more.
        GroupNotice::Joined { .. } | GroupNotice::Opened { .. } => return None,
        GroupNotice::Changed { sequence, changes } => Notification::CauseChanged {
            severity,
            incident,
            episode: m.episode,
            sequence: *sequence,
            from: changes
                .iter()
                .find(|(s, _, _)| *s == m.site)
                .map_or(Cause::Unknown, |(_, from, _)| *from),
            diagnosis: m.diagnosis(),
        },
        GroupNotice::Reminder { sequence, .. } => Notification::Reminder {
            severity,
            incident,
            episode: m.episode,
            sequence: *sequence,
            open_for: m.lasted(at),
            diagnosis: m.diagnosis(),
        },
        GroupNotice::Recovered { .. } => Notification::Recovered {
            severity,
            incident,
            episode: m.episode,
            lasted: m.lasted(at),
            cause: Some(m.cause),
            earlier: m.earlier.clone(),
        },
    })
}

/// The key of a notice: while the incident holds one site, that site's own notification's
/// (its mails read as a site alone's); else the incident's.
fn key_of(group: &GroupState, notice: &GroupNotice) -> String {
    if let [m] = group.members.as_slice() {
        let opening = matches!(notice, GroupNotice::Opened { .. });
        if let Some(n) = site_notification(group, notice, m, opening, OffsetDateTime::UNIX_EPOCH) {
            if !matches!(n, Notification::Reminder { .. }) {
                return n.key(&m.site);
            }
        }
    }
    notice_key(group, notice)
}

/// The threshold a certificate notice's key names (`certificate ID/14d`).
fn threshold_of(key: &str) -> i64 {
    key.rsplit_once('/')
        .and_then(|(_, t)| t.strip_suffix('d'))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// The notification key of a notice: the incident's, so every message of it is recognised.
fn notice_key(group: &GroupState, notice: &GroupNotice) -> String {
    match group.kind {
        GroupKind::Failure => format!("{}/{}/{}", group.key, group.incident, notice.key_part()),
        GroupKind::Certificate => format!("{}/{}", group.key, notice.key_part()),
    }
}

/// Every destination that hears of one of the group's sites: mail addresses first, in the
/// order the sites name them, then chat channels in the config's order.
fn destinations<'a>(audience: &Audience<'a>, group: &GroupState) -> Vec<Destination<'a>> {
    let mut mail: Vec<String> = Vec::new();
    for m in &group.members {
        if let Some(site) = (audience.site)(&m.site) {
            for to in site.alert_to.iter() {
                if !mail.contains(to) {
                    mail.push(to.clone());
                }
            }
        }
    }
    let chats = audience.notifiers.iter().filter(|c| {
        group
            .members
            .iter()
            .any(|m| c.covers(&m.site, group.severity.as_str()))
    });
    mail.into_iter()
        .map(Destination::Mail)
        .chain(chats.map(Destination::Chat))
        .collect()
}

fn covers(audience: &Audience<'_>, to: &Destination<'_>, site: &str, severity: Severity) -> bool {
    match to {
        Destination::Mail(address) => {
            (audience.site)(site).is_some_and(|s| s.alert_to.iter().any(|a| a == address))
        }
        Destination::Chat(c) => c.covers(site, severity.as_str()),
    }
}

fn members<'g>(
    group: &'g GroupState,
    sites: &[String],
    covered: &dyn Fn(&str) -> bool,
) -> Vec<&'g Member> {
    group
        .members
        .iter()
        .filter(|m| sites.contains(&m.site) && covered(&m.site))
        .collect()
}

/// What one destination is told of one notice.
struct Words<'w, 'a> {
    group: &'w GroupState,
    notice: &'w GroupNotice,
    /// Its sites in this notice.
    mine: &'w [&'w Member],
    /// Its first message of the incident.
    opening: bool,
    /// Its sites failing in the incident now.
    yours: usize,
    /// Its sites in the incident that answer again.
    answering: usize,
    /// The paging services' incident key for it.
    paging: String,
    audience: &'w Audience<'a>,
    at: OffsetDateTime,
}

impl Words<'_, '_> {
    /// With one site, the notification that site alone would have sent.
    fn alone(&self) -> Option<Notification> {
        let [m] = self.mine else {
            return None;
        };
        site_notification(self.group, self.notice, m, self.opening, self.at)
    }

    /// What a site alone would be told, as `mail::About` says it.
    fn about(&self, m: &Member) -> About<'_> {
        let recovered = matches!(self.notice, GroupNotice::Recovered { .. });
        About {
            since: Some(m.since),
            cause: Some(m.cause),
            at: Some(if recovered {
                m.recovered_at.unwrap_or(self.at)
            } else if self.opening {
                m.joined_at
            } else {
                self.at
            }),
            confirmed_by: (self.group.severity == Severity::Down)
                .then_some(self.audience.confirmed_by),
            degraded_runs: (self.group.severity == Severity::Warning)
                .then_some(self.audience.degraded_runs),
            page: self.audience.page,
            zone: Some(self.audience.zone),
        }
    }

    fn mail(&self, key: &str, to: &str, thread: Option<String>) -> NewMessage {
        let mut message = match self.alone() {
            Some(n) => {
                let m = self.mine[0];
                let about = self.about(m);
                let mut one = mail::render_about(&m.site, &m.url, &n, &[to.to_string()], &about);
                one.pop().unwrap_or_else(|| self.several_mail(to))
            }
            None => self.several_mail(to),
        };
        message.key = format!("{key}#mail-{to}");
        message.notification = key.to_string();
        message.thread = thread;
        message
    }

    fn chat(&self, c: &Notifier, key: &str, thread: Option<String>) -> Option<NewMessage> {
        let transition = self.notice.transition();
        let page = self.audience.page;
        // A certificate's page is the certificate's, whatever its thresholds, sites or renewal:
        // its renewal closes what its expiry opened.
        let paging = match (&self.group.kind, &self.group.cert) {
            (GroupKind::Certificate, Some(cert)) => format!("certificate:{}", cert.id),
            _ => self.paging.clone(),
        };
        if let Some(n) = self.alone() {
            let m = self.mine[0];
            let mut message = ChatMessage::of_site(&m.site, &m.url, &n)?;
            message.incident_key = paging;
            return chat::message_for(c, key, transition, thread, message, page, self.at);
        }
        let lead = self.lead().map(Member::diagnosis);
        let ends =
            matches!(self.notice, GroupNotice::Recovered { .. }) || self.group.renewed_by.is_some();
        let message = ChatMessage {
            told: self.told(lead.as_ref()),
            site: match self.group.kind {
                GroupKind::Certificate => format!("{} sites", self.mine.len()),
                GroupKind::Failure => format!("{} sites {}", self.mine.len(), self.group.place),
            },
            url: String::new(),
            severity: self.group.severity,
            trouble: !ends,
            ends,
            reminder: matches!(self.notice, GroupNotice::Reminder { .. }),
            transition,
            incident_key: paging,
        };
        chat::message_for(c, key, transition, thread, message, page, self.at)
    }

    /// The site quoted in full: the first of them still failing, else the first.
    fn lead(&self) -> Option<&Member> {
        self.mine
            .iter()
            .find(|m| m.recovered_at.is_none())
            .or(self.mine.first())
            .copied()
    }

    /// The several sites' subject, lead sentence and one line per site (the evidence).
    fn told<'d>(&self, lead: Option<&'d Diagnosis>) -> Told<'d> {
        let (group, n) = (self.group, self.mine.len());
        let place = &group.place;
        let number = group.incident;
        let names: Vec<&str> = self.mine.iter().map(|m| m.site.as_str()).collect();
        let shared = GroupState::shared_cause(self.mine.iter().copied())
            .map_or("several causes".to_string(), |c| c.title().to_string());
        let prefix = mail::prefix(group.severity);
        let state = mail::state_word(group.severity);
        let down = group.severity == Severity::Down;
        let mut lines: Vec<String> = Vec::new();
        let (subject, lead_sentence, diagnosis) = if group.kind == GroupKind::Certificate {
            let cert = group.cert.as_ref();
            let subject_name = cert.map_or("?", |c| c.subject.as_str());
            lines.push(format!("presented by: {}", names.join(", ")));
            if let Some(cert) = cert {
                lines.extend(mail::describe_cert(cert));
            }
            match (&group.renewed_by, cert) {
                (Some(by), _) => (
                    format!(
                        "[RENEWED] certificate {subject_name} renewed on {}",
                        plural(n as u64, "site", "sites")
                    ),
                    format!(
                        "Good news: {} present a new certificate, valid until {}. The expiry notice is closed.",
                        names.join(", "),
                        mail::day_of(&by.not_after)
                    ),
                    None,
                ),
                (None, Some(cert)) => (
                    format!(
                        "[WARNING] certificate {subject_name} {} ({})",
                        mail::expires_in(cert.days_left),
                        plural(n as u64, "site", "sites")
                    ),
                    format!(
                        "One certificate, presented on the {} route by {n} sites ({}), {}: one notice for all of them.",
                        cert.route,
                        names.join(", "),
                        mail::expires_in(cert.days_left)
                    ),
                    None,
                ),
                (None, None) => (String::new(), String::new(), None),
            }
        } else {
            for m in self.mine {
                lines.push(self.site_line(m));
            }
            match self.notice {
                _ if self.opening => (
                    format!("{prefix} {n} sites {place}: {shared}"),
                    format!(
                        "{n} sites {place} are {state} together (incident #{number}): one shared failure, told once."
                    ),
                    lead,
                ),
                GroupNotice::Joined { .. } => (
                    format!("{prefix} also affected {place}: {} ({shared})", names.join(", ")),
                    format!(
                        "More sites {place} are {state} with the open incident #{number}; {} of yours {} in it now.",
                        self.yours,
                        if self.yours == 1 { "is" } else { "are" }
                    ),
                    lead,
                ),
                GroupNotice::Changed { changes, .. } => {
                    let from: Vec<Cause> = changes.iter().map(|(_, f, _)| *f).collect();
                    let was = if from.iter().all(|c| Some(c) == from.first()) {
                        from.first().map_or("?", |c| c.as_str()).to_string()
                    } else {
                        "several causes".to_string()
                    };
                    (
                        format!(
                            "{} {n} sites {place}: now {shared} (was {was})",
                            if down { "[CHANGED]" } else { prefix }
                        ),
                        format!(
                            "{n} sites {place} are still {state} (incident #{number}), for another reason{}.",
                            self.answering_again()
                        ),
                        lead,
                    )
                }
                GroupNotice::Reminder { open_for, .. } => (
                    format!(
                        "{} {n} sites {place}: {shared} for {}",
                        if down { "[STILL DOWN]" } else { prefix },
                        duration(*open_for)
                    ),
                    format!(
                        "{n} sites {place} are still {state} (incident #{number}), for {} now{}.",
                        duration(*open_for),
                        self.answering_again()
                    ),
                    lead,
                ),
                GroupNotice::Recovered { lasted, .. } => {
                    // Others' sites may still be in it: their story goes on without these.
                    let others = group.failing().count();
                    let lead = match (down, others) {
                        (true, 0) => format!(
                            "Every site of incident #{number} answers again: the shared failure {place} is over."
                        ),
                        (false, 0) => format!(
                            "No site of incident #{number} shows it any more: the shared degradation {place} is over."
                        ),
                        (_, others) => format!(
                            "These {n} sites of incident #{number} are over it; it goes on {place} for {} you are not told of.",
                            plural(others as u64, "other site", "other sites")
                        ),
                    };
                    (
                        format!(
                            "{} {n} sites {place} after {}",
                            if down { "[RECOVERED]" } else { "[RESOLVED]" },
                            duration(*lasted)
                        ),
                        lead,
                        None,
                    )
                }
                GroupNotice::Opened { .. } => (String::new(), String::new(), lead),
            }
        };
        let steps = match (group.kind, group.cert.as_ref()) {
            (GroupKind::Certificate, Some(cert)) if group.renewed_by.is_none() => {
                mail::renewal_steps(cert)
            }
            _ => Vec::new(),
        };
        Told {
            subject: printable(&subject).into_owned(),
            lead: lead_sentence,
            diagnosis,
            evidence: lines,
            steps,
        }
    }

    /// "; 9 others of yours answer again" while the incident goes on.
    fn answering_again(&self) -> String {
        match self.answering {
            0 => String::new(),
            1 => "; 1 other of yours answers again".to_string(),
            n => format!("; {n} others of yours answer again"),
        }
    }

    /// One site of a shared incident, in a line: its name, URL, cause and what it says, or
    /// when it was down.
    fn site_line(&self, m: &Member) -> String {
        let zone = self.audience.zone;
        match self.notice {
            GroupNotice::Recovered { .. } if m.folded => format!(
                "{} {}: degraded from {}, then went down (its outage is told on its own)",
                m.site,
                m.url,
                zone.moment(m.since)
            ),
            GroupNotice::Recovered { .. } if m.let_go => format!(
                "{} {}: no longer followed in this incident since {} (removed from the config, or its own incident ended inside a maintenance window)",
                m.site,
                m.url,
                zone.moment(m.recovered_at.unwrap_or(self.at))
            ),
            GroupNotice::Recovered { .. } => format!(
                "{} {}: {} from {} ({})",
                m.site,
                m.url,
                if self.group.severity == Severity::Down {
                    "down"
                } else {
                    "degraded"
                },
                zone.span(m.since, m.recovered_at.unwrap_or(self.at)),
                duration(m.lasted(self.at))
            ),
            GroupNotice::Changed { changes, .. } => {
                let from = changes
                    .iter()
                    .find(|(s, _, _)| *s == m.site)
                    .map_or(m.cause, |(_, f, _)| *f);
                format!(
                    "{} {} ({} → {}): {}",
                    m.site,
                    m.url,
                    from.as_str(),
                    m.cause.as_str(),
                    m.summary
                )
            }
            // The first site's diagnosis follows in full: each line says only what differs.
            _ => {
                // The time alone when it is today's, else with its date.
                let when = |t: OffsetDateTime| {
                    if t.date() == self.at.date() {
                        zone.time_of_day(t)
                    } else {
                        zone.moment(t)
                    }
                };
                let mut line = format!(
                    "{} {} ({}), {} since {}",
                    m.site,
                    m.url,
                    m.cause.as_str(),
                    if self.group.severity == Severity::Down {
                        "failing"
                    } else {
                        "degraded"
                    },
                    when(m.since)
                );
                if let Some(back) = m.recovered_at {
                    line.push_str(&format!("; answers again since {}", when(back)));
                }
                line
            }
        }
    }

    /// How the incident's cause went for this destination's sites: one cause (or one turn of
    /// causes) when they share it, else each site's own, the first few.
    fn causes_said(&self) -> Option<String> {
        let incident = self.group.incident;
        let first = self.mine.first()?;
        let shared = self
            .mine
            .iter()
            .all(|m| m.cause == first.cause && m.earlier == first.earlier);
        if shared {
            return Some(super::mail::incident_causes(
                incident,
                &first.earlier,
                first.cause,
            ));
        }
        const SAID: usize = 5;
        let mut each: Vec<String> = self
            .mine
            .iter()
            .take(SAID)
            .map(|m| {
                let turns: Vec<&str> = m
                    .earlier
                    .iter()
                    .chain([&m.cause])
                    .map(|c| c.as_str())
                    .collect();
                format!("{} {}", m.site, turns.join(" then "))
            })
            .collect();
        if self.mine.len() > SAID {
            each.push(format!("{} more", self.mine.len() - SAID));
        }
        Some(format!(
            "Incident #{incident}'s causes: {}.",
            each.join("; ")
        ))
    }

    /// The incident's facts for several sites: its number, since when, how it was confirmed,
    /// or its cause and span at its end.
    fn facts(&self) -> Vec<String> {
        let zone = self.audience.zone;
        let group = self.group;
        let mut facts: Vec<String> = Vec::new();
        if group.kind == GroupKind::Failure {
            // This destination's sites' span: others of the incident may have begun earlier.
            let since = self
                .mine
                .iter()
                .map(|m| m.since)
                .min()
                .or(group.since)
                .unwrap_or(self.at);
            match self.notice {
                GroupNotice::Recovered { ended, lasted } => {
                    facts.extend(self.causes_said());
                    facts.push(format!(
                        "{} from {}: {}.",
                        if group.severity == Severity::Down {
                            "Down"
                        } else {
                            "Degraded"
                        },
                        zone.span(since, *ended),
                        duration(*lasted)
                    ));
                }
                _ => {
                    facts.push(format!(
                        "Incident #{}, {} since {}.",
                        group.incident,
                        if group.severity == Severity::Down {
                            "failing"
                        } else {
                            "degraded"
                        },
                        zone.moment(since)
                    ));
                    if self.opening {
                        let confirmed = self.mine.iter().map(|m| m.joined_at).max();
                        let at = zone.time_of_day(confirmed.unwrap_or(self.at));
                        let (runs, attempts) = self.audience.confirmed_by;
                        facts.push(if group.severity == Severity::Down {
                            format!(
                                "Confirmed at {at} for each site by {}.",
                                mail::confirmation(runs, attempts)
                            )
                        } else {
                            format!(
                                "Confirmed at {at} by {} in a row for each site.",
                                plural(
                                    u64::from(self.audience.degraded_runs),
                                    "degraded run",
                                    "degraded runs"
                                )
                            )
                        });
                    }
                }
            }
        }
        if let Some(page) = self.audience.page {
            facts.push(format!("Status page: {page}"));
        }
        facts
    }

    /// The mail for several sites: the lead, the incident's facts, one line per site, then the
    /// first site's diagnosis in full.
    fn several_mail(&self, to: &str) -> NewMessage {
        let lead = self.lead().map(Member::diagnosis);
        let told = self.told(lead.as_ref());
        let facts = self.facts();
        let mut text = format!("{}\n", told.lead);
        let mut html = format!("<p><strong>{}</strong></p>\n", xml(&told.lead));
        if !facts.is_empty() {
            text.push('\n');
            html.push_str("<p>");
            for (i, line) in facts.iter().enumerate() {
                let _ = writeln!(text, "{line}");
                let _ = write!(html, "{}{}", if i > 0 { "<br>" } else { "" }, xml(line));
            }
            html.push_str("</p>\n");
        }
        let title = match self.group.kind {
            GroupKind::Certificate => "Certificate",
            GroupKind::Failure => "Sites",
        };
        mail::append_list(&mut text, &mut html, title, &told.evidence);
        if let (Some(d), Some(first)) = (told.diagnosis, self.lead()) {
            let _ = write!(
                text,
                "\nThe first of them, {}, in full:\n",
                printable(&first.site)
            );
            let _ = writeln!(
                html,
                "<h3>The first of them, {}, in full</h3>",
                xml(&first.site)
            );
            mail::append_diagnosis(&mut text, &mut html, d);
        }
        mail::append_list(&mut text, &mut html, "Next steps", &told.steps);
        text.push_str("\n-- \nprobe\n");
        NewMessage {
            channel: Channel::Mail,
            key: String::new(),
            notification: String::new(),
            recipients: vec![to.to_string()],
            subject: told.subject,
            body_text: text,
            body_html: format!("<!DOCTYPE html><html><body>\n{html}</body></html>\n"),
            thread: None,
        }
    }
}
