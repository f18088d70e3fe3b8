//! One mail for a shared outage: the due mails of sites failing on one origin address (or one
//! edge), to one recipient, told as one.
//!
//! A grouped mail waits until the oldest of its group's due mails is `wait` old (the other sites
//! on that origin are probed within one interval), then the group's mails to that recipient are
//! merged: an opening listing every site, "also affected" for a site joining an open group, one
//! reminder for all, and one recovery when the last site recovers (a site recovering before
//! the others is told in it). The recipient's group state (its open incident and its sites) is
//! kept in the store with the merge, in one transaction (its `members` are the sites down in it
//! now, its `streak` how many were in it in all). A group of one site is that site's own mail.

use std::time::Duration;

use time::OffsetDateTime;

use crate::alert::{AlertPhase, AlertState, GroupEvent, Grouping};
use crate::store::{Channel, NewMessage, OutboxMessage};
use crate::text::{printable, xml};

/// A grouped mail with its grouping.
type Member<'a> = (&'a OutboxMessage, &'a Grouping);

/// What to do with the due mails of one group to one recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// Every outbox row of the group considered (to try again if the merge cannot be saved).
    pub rows: Vec<i64>,
    /// Outbox rows told in `send` (or needing no mail of their own): closed without delivery.
    pub close: Vec<i64>,
    /// The mails that tell them, queued in their place, in order.
    pub send: Vec<NewMessage>,
    /// The recipient's group state after it, kept under `state_key`, and the one it was
    /// planned from (another prober may have moved it since: then nothing is saved).
    pub state_key: String,
    pub before: AlertState,
    pub state: AlertState,
}

/// The merges to save, and the grouped mails still gathering, each with when it is ready.
pub type Plan = (Vec<Merge>, Vec<(i64, OffsetDateTime)>);

/// The store key of one recipient's state of one group.
pub fn state_key(group: &str, recipient: &str) -> String {
    format!("@group:{group}:{recipient}")
}

/// Plans the merges of the grouped mails among `due`; `state` reads a stored state (a group's
/// under its key, a site's under its name). Returns the merges, and the grouped mails whose
/// group is still gathering, each with when it is ready. A grouped mail already tried (left to
/// go out alone, and refused for now) is not planned again.
pub fn plan<E>(
    due: &[OutboxMessage],
    state: &mut dyn FnMut(&str) -> Result<AlertState, E>,
    now: OffsetDateTime,
    wait: Duration,
) -> Result<Plan, E> {
    let mut buckets: Vec<(String, &str, Vec<Member<'_>>)> = Vec::new();
    let grouped = due
        .iter()
        .filter(|m| m.channel == Channel::Mail && m.attempts == 0);
    for m in grouped {
        let (Some(g), Some(to)) = (m.grouping.as_ref(), m.recipients.first()) else {
            continue;
        };
        match buckets
            .iter_mut()
            .find(|(key, r, _)| *key == g.group.key && r == to)
        {
            Some((_, _, members)) => members.push((m, g)),
            None => buckets.push((g.group.key.clone(), to, vec![(m, g)])),
        }
    }
    let mut merges = Vec::new();
    let mut waiting = Vec::new();
    for (group, recipient, mut members) in buckets {
        let oldest = members.iter().map(|(m, _)| m.created_at).min();
        let ready = oldest.map_or(now, |t| t + wait);
        if ready > now {
            waiting.extend(members.iter().map(|(m, _)| (m.id, ready)));
            continue;
        }
        members.sort_by_key(|(m, _)| (m.created_at, m.id));
        let key = state_key(&group, recipient);
        let before = state(&key)?;
        // A member whose own incident ended without a mail of this group (in a maintenance
        // window, say) or left it is let go, so the group can close.
        let mut current = before.clone();
        let mut kept = Vec::new();
        for site in &current.members {
            let told_now = members.iter().any(|(_, g)| &g.site == site);
            let own = state(site)?;
            let still_in = own.is_open() && own.group.as_ref().is_some_and(|g| g.key == group);
            if told_now || still_in {
                kept.push(site.clone());
            }
        }
        current.members = kept;
        if current.phase == AlertPhase::Down && current.members.is_empty() {
            current = AlertState {
                incident: current.incident,
                ..AlertState::default()
            };
        }
        let mut merge = merge(&key, current, recipient, &members, now);
        merge.before = before;
        merges.push(merge);
    }
    Ok((merges, waiting))
}

/// Tells the group's mails to one recipient in the order they were queued: each stretch of
/// openings, reminders or recoveries becomes one mail (or none: a site recovering before the
/// others, a group of one site).
fn merge(
    key: &str,
    before: AlertState,
    recipient: &str,
    members: &[Member<'_>],
    now: OffsetDateTime,
) -> Merge {
    let mut state = before.clone();
    let mut close = Vec::new();
    let mut send = Vec::new();
    let mut at = 0;
    while at < members.len() {
        let event = members[at].1.event;
        let run = members[at..]
            .iter()
            .take_while(|(_, g)| g.event == event)
            .count();
        let stretch: Vec<&Member<'_>> = members[at..at + run].iter().collect();
        at += run;
        match event {
            GroupEvent::Opened => opened(
                &mut state, key, recipient, &stretch, now, &mut close, &mut send,
            ),
            GroupEvent::Reminder => {
                reminded(&mut state, key, recipient, &stretch, &mut close, &mut send)
            }
            GroupEvent::Recovered => recovered(
                &mut state, key, recipient, &stretch, now, &mut close, &mut send,
            ),
        }
    }
    Merge {
        rows: members.iter().map(|(m, _)| m.id).collect(),
        close,
        send,
        state_key: key.to_string(),
        before,
        state,
    }
}

fn opened(
    state: &mut AlertState,
    key: &str,
    recipient: &str,
    stretch: &[&Member<'_>],
    now: OffsetDateTime,
    close: &mut Vec<i64>,
    send: &mut Vec<NewMessage>,
) {
    let place = &stretch[0].1.group.place;
    let joining: Vec<&Member<'_>> = stretch
        .iter()
        .copied()
        .filter(|(_, g)| !state.members.contains(&g.site))
        .collect();
    if joining.is_empty() {
        return;
    }
    if state.phase != AlertPhase::Down {
        state.phase = AlertPhase::Down;
        state.incident += 1;
        state.since = joining.iter().map(|(m, _)| m.created_at).min();
        state.notified = 1;
        state.last_notified = Some(now);
        state.members = joining.iter().map(|(_, g)| g.site.clone()).collect();
        state.streak = joining.len() as u32;
        // Later mails thread under the mail that opens it: the group's, or the lone site's.
        state.thread = Some(if joining.len() > 1 {
            format!("{key}/{}/opened", state.incident)
        } else {
            joining[0].0.notification.clone()
        });
        if joining.len() > 1 {
            let subject = format!(
                "[DOWN] {} sites {place}: {}",
                joining.len(),
                shared_cause(&joining)
            );
            let lead = format!(
                "{} sites {place} are down together: one shared failure, told once.",
                joining.len()
            );
            send.push(render(
                key, recipient, state, "opened", subject, &lead, &joining,
            ));
            close.extend(joining.iter().map(|(m, _)| m.id));
        }
        // One site alone: its own mail goes out as it is.
        return;
    }
    state.notified += 1;
    state.streak += joining.len() as u32;
    state
        .members
        .extend(joining.iter().map(|(_, g)| g.site.clone()));
    let names: Vec<&str> = joining.iter().map(|(_, g)| g.site.as_str()).collect();
    let subject = format!(
        "[DOWN] also affected {place}: {} ({})",
        names.join(", "),
        shared_cause(&joining)
    );
    let lead = format!(
        "More sites {place} fail with the open incident #{}; {} sites of yours are in it now.",
        state.incident,
        state.members.len()
    );
    let part = format!("also-{}", state.notified);
    send.push(render(
        key, recipient, state, &part, subject, &lead, &joining,
    ));
    close.extend(joining.iter().map(|(m, _)| m.id));
}

fn reminded(
    state: &mut AlertState,
    key: &str,
    recipient: &str,
    stretch: &[&Member<'_>],
    close: &mut Vec<i64>,
    send: &mut Vec<NewMessage>,
) {
    // A group that only ever held one site reminds as that site.
    if state.phase != AlertPhase::Down || state.streak <= 1 {
        return;
    }
    let place = &stretch[0].1.group.place;
    state.notified += 1;
    let subject = format!(
        "[STILL DOWN] {} sites {place}: {}",
        stretch.len(),
        shared_cause(stretch)
    );
    let lead = format!(
        "{} sites {place} are still down (incident #{}).",
        stretch.len(),
        state.incident
    );
    let part = format!("reminder-{}", state.notified);
    send.push(render(
        key, recipient, state, &part, subject, &lead, stretch,
    ));
    close.extend(stretch.iter().map(|(m, _)| m.id));
}

fn recovered(
    state: &mut AlertState,
    key: &str,
    recipient: &str,
    stretch: &[&Member<'_>],
    now: OffsetDateTime,
    close: &mut Vec<i64>,
    send: &mut Vec<NewMessage>,
) {
    let place = &stretch[0].1.group.place;
    let leaving: Vec<&Member<'_>> = stretch
        .iter()
        .copied()
        .filter(|(_, g)| state.members.contains(&g.site))
        .collect();
    if state.phase != AlertPhase::Down || leaving.is_empty() {
        return;
    }
    state
        .members
        .retain(|s| !leaving.iter().any(|(_, g)| g.site == *s));
    if state.streak <= 1 {
        // A group of one site: its own recovery mail goes out as it is.
    } else {
        // Told in the group's recovery (now, or when its last site recovers).
        close.extend(leaving.iter().map(|(m, _)| m.id));
        if state.members.is_empty() {
            // From the first failure to the last site's recovery (not to this delivery).
            let ended = leaving
                .iter()
                .map(|(m, _)| m.created_at)
                .max()
                .unwrap_or(now);
            let lasted = state
                .since
                .map_or(0, |s| (ended - s).whole_minutes().max(0));
            let subject = format!("[RECOVERED] {} sites {place} after {lasted}m", state.streak);
            let lead = format!(
                "Every site of incident #{} answers again ({} in all): the shared failure {place} is over. The last to recover:",
                state.incident, state.streak
            );
            send.push(render(
                key,
                recipient,
                state,
                "recovered",
                subject,
                &lead,
                &leaving,
            ));
        }
    }
    if state.members.is_empty() {
        *state = AlertState {
            incident: state.incident,
            ..AlertState::default()
        };
    }
}

/// The cause the sites share, or "several causes".
fn shared_cause(members: &[&Member<'_>]) -> String {
    let first = members[0].1.group.cause;
    if members.iter().all(|(_, g)| g.group.cause == first) {
        first.title().to_string()
    } else {
        "several causes".to_string()
    }
}

/// The group mail: the lead, every site told (name, URL, cause, its summary), then the first
/// site's own mail for the evidence and the commands.
fn render(
    key: &str,
    recipient: &str,
    state: &AlertState,
    part: &str,
    subject: String,
    lead: &str,
    members: &[&Member<'_>],
) -> NewMessage {
    use std::fmt::Write as _;
    let notification = format!("{key}/{}/{part}", state.incident);
    let mut text = format!("{lead}\n\nSites:\n");
    let mut html = format!("<p><strong>{}</strong></p>\n<ul>\n", xml(lead));
    for (_, g) in members {
        let cause = g.group.cause.as_str();
        let _ = writeln!(
            text,
            "  {} {} ({cause}){}",
            printable(&g.site),
            printable(&g.url),
            if g.summary.is_empty() {
                String::new()
            } else {
                format!(": {}", printable(&g.summary))
            }
        );
        let _ = writeln!(
            html,
            "<li><strong>{}</strong> <a href=\"{}\">{}</a> ({cause}) {}</li>",
            xml(&g.site),
            xml(&g.url),
            xml(&g.url),
            xml(&g.summary)
        );
    }
    html.push_str("</ul>\n");
    if let Some((first, g)) = members
        .first()
        .filter(|(_, g)| g.event != GroupEvent::Recovered)
    {
        let _ = write!(
            text,
            "\nThe first of them, {}, in full:\n\n{}",
            printable(&g.site),
            first.body_text
        );
        let _ = write!(
            html,
            "<h3>The first of them, {}, in full</h3>\n<blockquote>{}</blockquote>\n",
            xml(&g.site),
            strip_document(&first.body_html)
        );
    } else {
        text.push_str("\n-- \nprobe\n");
    }
    NewMessage {
        channel: Channel::Mail,
        key: format!("{notification}#mail-{recipient}"),
        notification,
        recipients: vec![recipient.to_string()],
        subject: printable(&subject).into_owned(),
        body_text: text,
        body_html: format!("<!DOCTYPE html><html><body>\n{html}</body></html>\n"),
        grouping: None,
        thread: state.thread.clone().filter(|_| part != "opened"),
    }
}

/// A rendered mail's HTML body without its document wrapper, to quote inside another.
fn strip_document(html: &str) -> &str {
    html.trim()
        .trim_start_matches("<!DOCTYPE html><html><body>")
        .trim_end_matches("</body></html>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Group;
    use crate::diagnose::Cause;

    fn at(minute: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + minute * 60).unwrap()
    }

    fn mail(id: i64, site: &str, event: GroupEvent, minute: i64) -> OutboxMessage {
        OutboxMessage {
            id,
            channel: Channel::Mail,
            key: format!("{site}/{id}#mail-ops@example.com"),
            notification: format!("{site}/{id}"),
            recipients: vec!["ops@example.com".into()],
            subject: format!("[DOWN] {site}"),
            body_text: format!("{site} is down.\n"),
            body_html: String::new(),
            attempts: 0,
            created_at: at(minute),
            thread: None,
            grouping: Some(Grouping {
                group: Group {
                    key: "origin 203.0.113.10".into(),
                    place: "on 203.0.113.10".into(),
                    cause: Cause::FpmUnreachable,
                },
                site: site.into(),
                url: format!("https://{site}.example/"),
                event,
                summary: "nginx cannot reach PHP-FPM".into(),
            }),
        }
    }

    /// Plans `due` against `state`, applies the merges to it, and returns what was sent (the
    /// subjects of merged mails, and `own:ID` for each mail left to go out alone).
    fn pass(
        state: &mut AlertState,
        due: &[OutboxMessage],
        minute: i64,
        wait: Duration,
    ) -> Vec<String> {
        // Every site is still down in the group, as far as its own state says.
        let mut read = |key: &str| -> Result<AlertState, ()> {
            if key.starts_with("@group:") {
                return Ok(state.clone());
            }
            Ok(AlertState {
                phase: AlertPhase::Down,
                group: due[0].grouping.as_ref().map(|g| g.group.clone()),
                ..AlertState::default()
            })
        };
        let (merges, waiting) = plan(due, &mut read, at(minute), wait).unwrap();
        let mut out: Vec<String> = Vec::new();
        let mut told: Vec<i64> = waiting.iter().map(|(id, _)| *id).collect();
        for merge in merges {
            out.extend(merge.send.into_iter().map(|m| m.subject));
            told.extend(merge.close);
            *state = merge.state;
        }
        out.extend(
            due.iter()
                .filter(|m| !told.contains(&m.id))
                .map(|m| format!("own:{}", m.id)),
        );
        out
    }

    use GroupEvent::{Opened, Recovered, Reminder};

    #[test]
    fn a_shared_failure_is_told_once_joined_reminded_and_recovered_by_its_last_site() {
        let mut state = AlertState::default();
        let wait = Duration::from_secs(60);
        // Two openings a few seconds apart: held until the first is a minute old, then one mail.
        let due = [mail(1, "a", Opened, 0), mail(2, "b", Opened, 0)];
        assert!(pass(&mut state, &due, 0, wait).is_empty());
        let sent = pass(&mut state, &due, 1, wait);
        assert_eq!(
            sent,
            ["[DOWN] 2 sites on 203.0.113.10: the web server cannot reach PHP-FPM"]
        );
        assert_eq!(state.members, ["a", "b"]);
        // A third site later: "also affected".
        let sent = pass(&mut state, &[mail(3, "c", Opened, 5)], 6, wait);
        assert_eq!(
            sent,
            ["[DOWN] also affected on 203.0.113.10: c (the web server cannot reach PHP-FPM)"]
        );
        // Their reminders: one mail.
        let due = [mail(4, "a", Reminder, 240), mail(5, "b", Reminder, 240)];
        let sent = pass(&mut state, &due, 241, wait);
        assert_eq!(
            sent,
            ["[STILL DOWN] 2 sites on 203.0.113.10: the web server cannot reach PHP-FPM"]
        );
        // One site recovers before the others: nothing yet; the last two: one mail, for all 3.
        assert!(pass(&mut state, &[mail(6, "a", Recovered, 300)], 301, wait).is_empty());
        let due = [mail(7, "b", Recovered, 310), mail(8, "c", Recovered, 310)];
        let sent = pass(&mut state, &due, 311, wait);
        assert_eq!(sent, ["[RECOVERED] 3 sites on 203.0.113.10 after 310m"]);
        assert_eq!((state.phase, state.incident), (AlertPhase::Ok, 1));
    }

    #[test]
    fn a_backlog_delivered_at_once_is_told_in_order() {
        // The only prober with SMTP was away: openings and recoveries come due together.
        let mut state = AlertState::default();
        let due = [
            mail(1, "a", Opened, 0),
            mail(2, "b", Opened, 0),
            mail(3, "a", Recovered, 30),
            mail(4, "b", Recovered, 31),
        ];
        assert_eq!(
            pass(&mut state, &due, 60, Duration::ZERO),
            [
                "[DOWN] 2 sites on 203.0.113.10: the web server cannot reach PHP-FPM",
                "[RECOVERED] 2 sites on 203.0.113.10 after 31m"
            ]
        );
        assert_eq!(state.phase, AlertPhase::Ok);
    }

    #[test]
    fn an_opening_left_alone_and_retried_is_never_closed_by_a_later_merge() {
        let mut state = AlertState::default();
        assert_eq!(
            pass(&mut state, &[mail(1, "a", Opened, 0)], 0, Duration::ZERO),
            ["own:1"]
        );
        // Its delivery failed for now; b joins while it is retried.
        let mut retried = mail(1, "a", Opened, 0);
        retried.attempts = 1;
        let due = [retried, mail(2, "b", Opened, 2)];
        assert_eq!(
            pass(&mut state, &due, 2, Duration::ZERO),
            [
                "[DOWN] also affected on 203.0.113.10: b (the web server cannot reach PHP-FPM)",
                "own:1"
            ]
        );
    }

    #[test]
    fn a_member_whose_incident_ended_unseen_does_not_hold_the_group_open() {
        // a and b were told together; a's incident then closed inside a maintenance window (no
        // mail). b's recovery closes the group.
        let group = Group {
            key: "origin 203.0.113.10".into(),
            place: "on 203.0.113.10".into(),
            cause: Cause::FpmUnreachable,
        };
        let open = AlertState {
            phase: AlertPhase::Down,
            incident: 4,
            since: Some(at(0)),
            streak: 2,
            members: vec!["a".into(), "b".into()],
            ..AlertState::default()
        };
        let due = [mail(9, "b", Recovered, 50)];
        let mut read = |key: &str| -> Result<AlertState, ()> {
            Ok(match key {
                "a" => AlertState::default(),
                "b" => AlertState {
                    group: Some(group.clone()),
                    ..AlertState::default()
                },
                _ => open.clone(),
            })
        };
        let (merges, _) = plan(&due, &mut read, at(51), Duration::ZERO).unwrap();
        let subjects: Vec<&str> = merges[0].send.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["[RECOVERED] 2 sites on 203.0.113.10 after 50m"]);
        assert_eq!(merges[0].state.phase, AlertPhase::Ok);
        assert_eq!(merges[0].before, open);
    }

    #[test]
    fn later_mails_thread_under_the_mail_that_opened_the_group() {
        let read = |state: AlertState| {
            move |key: &str| -> Result<AlertState, ()> {
                if key.starts_with("@group:") {
                    Ok(state.clone())
                } else {
                    Ok(AlertState {
                        phase: AlertPhase::Down,
                        group: mail(0, "x", Opened, 0).grouping.map(|g| g.group),
                        ..AlertState::default()
                    })
                }
            }
        };
        // Opened by two sites: the group's own opening is the root.
        let due = [mail(1, "a", Opened, 0), mail(2, "b", Opened, 0)];
        let (merges, _) = plan(
            &due,
            &mut read(AlertState::default()),
            at(0),
            Duration::ZERO,
        )
        .unwrap();
        let opened = merges[0].state.clone();
        let root = merges[0].send[0].notification.clone();
        assert_eq!(opened.thread.as_deref(), Some(root.as_str()));
        let (merges, _) = plan(
            &[mail(3, "c", Opened, 5)],
            &mut read(opened),
            at(5),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(merges[0].send[0].thread.as_deref(), Some(root.as_str()));
        // Opened by one site alone: that site's own opening is the root.
        let (merges, _) = plan(
            &[mail(4, "a", Opened, 0)],
            &mut read(AlertState::default()),
            at(0),
            Duration::ZERO,
        )
        .unwrap();
        let alone = merges[0].state.clone();
        assert_eq!(alone.thread.as_deref(), Some("a/4"));
        let (merges, _) = plan(
            &[mail(5, "b", Opened, 5)],
            &mut read(alone),
            at(5),
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(merges[0].send[0].thread.as_deref(), Some("a/4"));
    }

    #[test]
    fn a_group_of_one_site_is_that_sites_own_mail() {
        let mut state = AlertState::default();
        let wait = Duration::ZERO;
        assert_eq!(
            pass(&mut state, &[mail(1, "a", Opened, 0)], 0, wait),
            ["own:1"]
        );
        assert_eq!(
            pass(&mut state, &[mail(2, "a", Reminder, 240)], 240, wait),
            ["own:2"]
        );
        assert_eq!(
            pass(&mut state, &[mail(3, "a", Recovered, 300)], 300, wait),
            ["own:3"]
        );
        assert_eq!(state.phase, AlertPhase::Ok);
    }
}
