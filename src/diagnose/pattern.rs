//! Intermittent failures: what a site's recent runs say together that no single run says.
//!
//! A run leaves a `RunRecord` (its verdict, and the failure it saw — even one an in-run retry
//! hid); the store keeps the last runs of each site. `intermittency` tells whether the window
//! shows a site failing now and then, and `diagnose` reads the pattern: which causes, at what
//! moments, after what waits. Pure: the history comes in as data, the clock is the records'.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::rules::lowercase_first;
use super::{Cause, Confidence, Diagnosis};
use crate::observe::{Observation, PathRole, Status};

/// A 502 within this many milliseconds came from nginx without PHP-FPM taking the request: a
/// listen backlog that overflowed, not a worker that died mid-request.
const FAST_MS: f64 = 50.0;
/// Failure moments quoted one by one in the evidence.
const MOMENTS_SHOWN: usize = 10;

/// What one run showed, kept in a site's history (compact: hundreds of thousands are stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When the run was made (Unix seconds).
    #[serde(rename = "t")]
    pub at: i64,
    #[serde(rename = "s")]
    pub status: Status,
    #[serde(rename = "c")]
    pub cause: Cause,
    /// The failure the run saw, if any: in its verdict, or in an attempt a retry replaced.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Time to first byte of the page (the origin's when probed, else through the edge).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub page_ms: Option<f64>,
    /// Time to first byte of the static file, on the same route.
    #[serde(rename = "x", default, skip_serializing_if = "Option::is_none")]
    pub static_ms: Option<f64>,
}

/// A failed page request of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// The cause the run's diagnosis named for it.
    #[serde(rename = "c")]
    pub cause: Cause,
    /// The HTTP status, when there was an answer.
    #[serde(rename = "h", default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// How long it waited for the failure (time to first byte, else the whole request).
    #[serde(rename = "w")]
    pub wait_ms: f64,
    /// Page requests of the run that failed on that route, of how many it made: fewer failed
    /// than were made, and some got through at the same moment (a burst, several edge
    /// addresses).
    #[serde(rename = "n")]
    pub failed: u32,
    #[serde(rename = "of")]
    pub of: u32,
    /// A retry within the run succeeded: the run counts as healthy, the failure only here.
    #[serde(rename = "r", default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl Failure {
    /// The failure of one attempt, from what it observed and how it was judged; `None` when
    /// no page request failed.
    pub fn of(observations: &[Observation], diagnosis: &Diagnosis) -> Option<Failure> {
        let pages: Vec<&Observation> = observations
            .iter()
            .filter(|o| o.path_role == PathRole::Page)
            .collect();
        let failing = |o: &&&Observation| {
            o.error.is_some() || o.response.as_ref().is_none_or(|r| r.status >= 500)
        };
        let worst = pages.iter().find(failing)?;
        let route: Vec<&&Observation> = pages.iter().filter(|o| o.route == worst.route).collect();
        Some(Failure {
            cause: diagnosis.cause,
            code: worst.response.as_ref().map(|r| r.status),
            wait_ms: worst
                .timings_ms
                .ttfb
                .unwrap_or(worst.timings_ms.total)
                .round(),
            failed: route.iter().filter(|o| failing(o)).count() as u32,
            of: route.len() as u32,
            hidden: false,
        })
    }
}

impl RunRecord {
    /// The record of a run: its final attempt (`observations`, `diagnosis`), and the failure of
    /// an earlier attempt a retry replaced, if the final one did not fail itself.
    pub fn of(
        at: OffsetDateTime,
        observations: &[Observation],
        diagnosis: &Diagnosis,
        hidden: Option<&Failure>,
    ) -> RunRecord {
        // What visitors could meet: the run failing, or some of its page requests failing
        // beside answered ones. A route failing whole while the run is only degraded (the
        // origin refusing behind an edge that still serves) is a steady warning, judged as
        // one, not a failure now and then.
        let own = Failure::of(observations, diagnosis)
            .filter(|f| diagnosis.status == Status::Down || f.failed < f.of);
        let failure = own.or_else(|| {
            hidden.map(|f| Failure {
                hidden: true,
                ..f.clone()
            })
        });
        let ttfb = |role: PathRole| {
            let on = |route| {
                observations
                    .iter()
                    .filter(|o| o.route == route && o.path_role == role && o.error.is_none())
                    .filter_map(|o| o.timings_ms.ttfb)
                    .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
            };
            on(crate::observe::Route::Origin).or_else(|| on(crate::observe::Route::Edge))
        };
        RunRecord {
            at: at.unix_timestamp(),
            status: diagnosis.status,
            cause: diagnosis.cause,
            failure,
            // Whole milliseconds: the history is written on every run of every site.
            page_ms: ttfb(PathRole::Page).map(f64::round),
            static_ms: ttfb(PathRole::Static).map(f64::round),
        }
    }

    /// A visitor could have met a failure: the run's verdict failed, some of its page requests
    /// failed beside answered ones, or an attempt a retry replaced failed.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }
}

/// How often the site failed in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intermittency {
    pub failed: usize,
    pub runs: usize,
}

/// The last `window` runs of `history` (oldest first).
pub fn window(history: &[RunRecord], window: usize) -> &[RunRecord] {
    &history[history.len().saturating_sub(window)..]
}

/// Whether the window shows a site failing now and then: at least `min_failures` failed runs,
/// and not failing steadily (some run was clean, or some request of a failed run succeeded). A
/// site failing every run and every request is an outage or a steady warning, not this.
pub fn intermittency(
    history: &[RunRecord],
    window_runs: usize,
    min_failures: usize,
) -> Option<Intermittency> {
    let recent = window(history, window_runs);
    let failed: Vec<&Failure> = recent.iter().filter_map(|r| r.failure.as_ref()).collect();
    let partly = failed.iter().any(|f| f.hidden || f.failed < f.of);
    let steady = failed.len() == recent.len() && !partly;
    (failed.len() >= min_failures.max(1) && !steady).then_some(Intermittency {
        failed: failed.len(),
        runs: recent.len(),
    })
}

/// A full window of runs, none of them failed: an intermittent incident may close.
pub fn clean_window(history: &[RunRecord], window_runs: usize) -> bool {
    history.len() >= window_runs && window(history, window_runs).iter().all(|r| !r.failed())
}

/// Reads the failures of the window into a diagnosis: the pattern's cause, the history quoted
/// as evidence, and commands that tell its variants apart.
pub fn diagnose(history: &[RunRecord], window_runs: usize) -> Diagnosis {
    let recent = window(history, window_runs);
    let failures: Vec<(&RunRecord, &Failure)> = recent
        .iter()
        .filter_map(|r| r.failure.as_ref().map(|f| (r, f)))
        .collect();
    let mut evidence = vec![history_line(recent, &failures)];
    let hidden = failures.iter().filter(|(_, f)| f.hidden).count();
    if hidden > 0 {
        evidence.push(format!(
            "{hidden} of them hidden by a retry within the run (the retry succeeded)"
        ));
    }
    let partial = failures.iter().filter(|(_, f)| f.failed < f.of).count();
    if partial > 0 {
        evidence.push(format!(
            "{partial} of them failed only some of their page requests while the others were answered"
        ));
    }
    evidence.push(moments_line(&failures));
    let climbing = ttfb_climbing(recent);
    if let Some((from, to, statics)) = climbing {
        evidence.push(format!(
            "page time to first byte climbed from {} to {} over the window while the static file stayed at {}",
            ms(from),
            ms(to),
            statics.map_or("(not probed)".to_string(), ms)
        ));
    }

    let codes = |code: u16| {
        failures
            .iter()
            .filter(|(_, f)| f.code == Some(code))
            .count()
    };
    // Fast by the clock, or by the run's own reading (which allows for the round trips of a
    // route through an edge).
    let fast = |f: &Failure| {
        f.code == Some(502) && (f.wait_ms <= FAST_MS || f.cause == Cause::FpmSaturated)
    };
    let fast_502s = failures.iter().filter(|(_, f)| fast(f)).count();
    let slow_502s = codes(502) - fast_502s;
    let n = failures.len().max(1);
    let (cause, confidence, summary, next_steps) = if let Some(schedule) =
        scheduled(recent, &failures)
    {
        (
            Cause::FpmSaturated,
            Confidence::Medium,
            format!(
                "The 504s come {}: a scheduled job (cron, WP-Cron, a backup) holds every PHP-FPM worker while it runs.",
                schedule.describe()
            ),
            scheduled_job_steps(schedule),
        )
    } else if fast_502s * 2 >= n && fast_502s > 0 {
        (
            Cause::FpmSaturated,
            Confidence::Medium,
            "Some requests get a 502 at once while others are answered: PHP-FPM's listen backlog fills under load and nginx is turned away (every worker busy, the queue full).".to_string(),
            backlog_steps(),
        )
    } else if slow_502s * 2 >= n && slow_502s > 0 {
        let waits: Vec<f64> = failures
            .iter()
            .filter(|(_, f)| f.code == Some(502) && !fast(f))
            .map(|(_, f)| f.wait_ms)
            .collect();
        let varying = spread(&waits).is_some_and(|(lo, hi)| hi - lo > 0.1 * hi);
        (
            Cause::FpmWorkerDied,
            Confidence::Medium,
            format!(
                "Now and then a PHP-FPM worker dies mid-request: nginx answers 502 after {} of work{}. A crash (segfault) and an out-of-memory kill look the same from outside; the logs below tell them apart.",
                spread(&waits).map_or("some".to_string(), |(lo, hi)| range(lo, hi)),
                if varying { ", at no fixed timeout" } else { "" }
            ),
            worker_died_steps(),
        )
    } else if climbing.is_some() && codes(504) * 2 >= n {
        (
            Cause::FpmSaturated,
            Confidence::Medium,
            "PHP pages take longer and longer while the static file does not: the PHP-FPM pool is saturating, and the slowest requests now time out (504).".to_string(),
            backlog_steps(),
        )
    } else {
        let cause = dominant(&failures).unwrap_or(Cause::Unknown);
        (
            cause,
            Confidence::Low,
            format!(
                "The site fails now and then, most often because {}; between the failures it answers.",
                lowercase_first(cause.title())
            ),
            Vec::new(),
        )
    };
    Diagnosis {
        status: Status::Degraded,
        hop: cause.hop(),
        cause,
        confidence,
        summary,
        evidence,
        next_steps,
        alternatives: Vec::new(),
    }
}

/// "7 of the last 20 runs failed, first at 14:02; each a 502 after 0.2–0.6 s".
fn history_line(recent: &[RunRecord], failures: &[(&RunRecord, &Failure)]) -> String {
    let first = failures.first().map_or(String::new(), |(r, _)| {
        format!(", first at {}", clock(r.at))
    });
    let mut codes: Vec<String> = Vec::new();
    for (_, f) in failures {
        let what = f
            .code
            .map_or_else(|| f.cause.as_str().to_string(), |c| format!("a {c}"));
        if !codes.contains(&what) {
            codes.push(what);
        }
    }
    let waits: Vec<f64> = failures.iter().map(|(_, f)| f.wait_ms).collect();
    let each = match (codes.as_slice(), spread(&waits)) {
        ([one], Some((lo, hi))) => format!("; each {one} after {}", range(lo, hi)),
        (_, Some((lo, hi))) => format!("; {} after {}", codes.join(" or "), range(lo, hi)),
        _ => String::new(),
    };
    format!(
        "{} of the last {} runs failed{first}{each}",
        failures.len(),
        recent.len()
    )
}

/// "failed at 14:02 (502), 14:04 (502), …".
fn moments_line(failures: &[(&RunRecord, &Failure)]) -> String {
    let mut shown: Vec<String> = failures
        .iter()
        .take(MOMENTS_SHOWN)
        .map(|(r, f)| match f.code {
            Some(code) => format!("{} ({code}, {})", clock(r.at), ms(f.wait_ms)),
            None => format!("{} ({}, {})", clock(r.at), f.cause.as_str(), ms(f.wait_ms)),
        })
        .collect();
    if failures.len() > MOMENTS_SHOWN {
        shown.push(format!("and {} more", failures.len() - MOMENTS_SHOWN));
    }
    format!("failed at {}", shown.join(", "))
}

/// Distinct hours (or days) a schedule must have shown its failures in before it is claimed:
/// two could be chance, and minutes apart are one episode, not a schedule.
const SCHEDULE_REPEATS: usize = 3;

/// When a site's failures recur on a clock: the same minute of every hour, or the same time of
/// every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schedule {
    Hourly { minute: i64 },
    Daily { hour: i64, minute: i64 },
}

impl Schedule {
    fn describe(self) -> String {
        match self {
            Schedule::Hourly { minute } => {
                format!("at the same minute of every hour (:{minute:02} UTC)")
            }
            Schedule::Daily { hour, minute } => {
                format!("at the same time every day ({hour:02}:{minute:02} UTC)")
            }
        }
    }
}

/// The schedule the failures of `recent` keep, claimed only with the evidence for it: they are
/// mostly 504s (a job holding the workers), every failure fell at one minute of the hour (none
/// spread elsewhere), and that minute failed in at least `SCHEDULE_REPEATS` distinct hours over
/// a history at least that many hours long — or, at one time of day, on that many distinct
/// days over that many days. Three failures within a minute or two are one episode, whatever
/// minute it was.
fn scheduled(recent: &[RunRecord], failures: &[(&RunRecord, &Failure)]) -> Option<Schedule> {
    let gateway = failures.iter().filter(|(_, f)| f.code == Some(504)).count();
    if gateway < SCHEDULE_REPEATS || gateway * 2 < failures.len() {
        return None;
    }
    let minute_of_hour = |at: i64| at.div_euclid(60).rem_euclid(60);
    let hour_of_day = |at: i64| at.div_euclid(3600).rem_euclid(24);
    let first = failures.first()?.0.at;
    if !failures
        .iter()
        .all(|(r, _)| minute_of_hour(r.at) == minute_of_hour(first))
    {
        return None;
    }
    let distinct = |unit: i64| {
        let mut seen: Vec<i64> = failures
            .iter()
            .map(|(r, _)| r.at.div_euclid(unit))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len()
    };
    let covered = match (recent.first(), recent.last()) {
        (Some(a), Some(b)) => b.at - a.at,
        _ => 0,
    };
    let shown = |period: i64| {
        distinct(period) >= SCHEDULE_REPEATS && covered >= SCHEDULE_REPEATS as i64 * period
    };
    let minute = minute_of_hour(first);
    let one_time_of_day = failures
        .iter()
        .all(|(r, _)| hour_of_day(r.at) == hour_of_day(first));
    if one_time_of_day {
        return shown(86_400).then_some(Schedule::Daily {
            hour: hour_of_day(first),
            minute,
        });
    }
    shown(3600).then_some(Schedule::Hourly { minute })
}

/// The page's time to first byte over the window: (early, late, static) when it at least
/// doubled from the first third to the last while the static file stayed within half again.
fn ttfb_climbing(recent: &[RunRecord]) -> Option<(f64, f64, Option<f64>)> {
    let third = recent.len() / 3;
    if third < 2 {
        return None;
    }
    let mean = |part: &[RunRecord], f: fn(&RunRecord) -> Option<f64>| {
        let v: Vec<f64> = part.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let (early, late) = (&recent[..third], &recent[recent.len() - third..]);
    let (from, to) = (mean(early, |r| r.page_ms)?, mean(late, |r| r.page_ms)?);
    let statics = (mean(early, |r| r.static_ms), mean(late, |r| r.static_ms));
    let flat = match statics {
        (Some(a), Some(b)) => b <= a * 1.5 + 5.0,
        _ => true,
    };
    (to >= 2.0 * from && to - from >= 100.0 && flat).then_some((from, to, statics.1))
}

fn dominant(failures: &[(&RunRecord, &Failure)]) -> Option<Cause> {
    let mut counts: Vec<(Cause, usize)> = Vec::new();
    for (_, f) in failures {
        match counts.iter_mut().find(|(c, _)| *c == f.cause) {
            Some((_, n)) => *n += 1,
            None => counts.push((f.cause, 1)),
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(c, _)| c)
}

fn spread(values: &[f64]) -> Option<(f64, f64)> {
    let lo = values.iter().copied().reduce(f64::min)?;
    let hi = values.iter().copied().reduce(f64::max)?;
    Some((lo, hi))
}

fn range(lo: f64, hi: f64) -> String {
    if (hi - lo).abs() < 0.05 * hi.max(1.0) {
        ms(hi)
    } else if lo >= 1000.0 || hi >= 1000.0 {
        format!("{:.1}–{:.1} s", lo / 1000.0, hi / 1000.0)
    } else {
        format!("{lo:.0}–{hi:.0} ms")
    }
}

pub(super) fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

/// HH:MM in UTC.
pub(super) fn clock(at: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!("{:02}:{:02}", t.hour(), t.minute())
}

fn worker_died_steps() -> Vec<String> {
    [
        "dmesg -T | grep -iE 'out of memory|killed process'   # an OOM kill names php-fpm here",
        "grep -E 'exited on signal|SIGSEGV|SIGKILL' /var/log/php*-fpm.log   # signal 11: a crash; signal 9: killed (OOM or a watchdog)",
        "journalctl -u 'php*-fpm' --since '-3h' | grep -iE 'signal|exited'   # the same, where PHP-FPM logs to journald",
        "grep -E '^(pm.max_children|pm.max_requests|request_terminate_timeout)' /etc/php/*/fpm/pool.d/*.conf; php -i | grep memory_limit",
    ]
    .map(String::from)
    .to_vec()
}

fn backlog_steps() -> Vec<String> {
    [
        "ss -ltnx | grep -E 'php|fpm|:9000'   # Recv-Q near Send-Q: the listen queue is full",
        "grep -E 'max_children|listen queue' /var/log/php*-fpm.log | tail   # 'server reached pm.max_children setting'",
        "grep -E '^(pm|pm.max_children|listen.backlog)' /etc/php/*/fpm/pool.d/*.conf; sysctl net.core.somaxconn",
        "tail -n 50 /var/log/nginx/error.log | grep -E 'Resource temporarily unavailable|connect\\(\\) to unix'",
    ]
    .map(String::from)
    .to_vec()
}

fn scheduled_job_steps(schedule: Schedule) -> Vec<String> {
    let (minute, cron) = match schedule {
        Schedule::Hourly { minute } => (minute, format!("{minute} ")),
        Schedule::Daily { hour, minute } => (minute, format!("{minute} +{hour} ")),
    };
    vec![
        format!("grep -rE '^[^#]*\\b{cron}' /etc/crontab /etc/cron.d/ /var/spool/cron/ 2>/dev/null   # jobs at minute {minute} (cron's own times are the server's zone; these are UTC)"),
        "wp cron event list --fields=hook,next_run_relative   # WP-Cron events, run by visitors' requests".to_string(),
        format!("awk '$4 ~ /:{minute:02}:/' /var/log/nginx/access.log | sort -k7 | uniq -c -f6 | sort -rn | head   # what ran at :{minute:02}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(minute: i64, failure: Option<(u16, f64, bool)>) -> RunRecord {
        RunRecord {
            at: 1_800_000_000 + minute * 60,
            status: Status::Ok,
            cause: Cause::Ok,
            failure: failure.map(|(code, wait_ms, hidden)| Failure {
                cause: if code == 502 && wait_ms <= FAST_MS {
                    Cause::FpmSaturated
                } else if code == 502 {
                    Cause::FpmWorkerDied
                } else {
                    Cause::FpmSaturated
                },
                code: Some(code),
                wait_ms,
                failed: 1,
                of: 1,
                hidden,
            }),
            page_ms: Some(40.0),
            static_ms: Some(2.0),
        }
    }

    #[test]
    fn a_single_blip_is_not_intermittent_and_three_are() {
        let mut history: Vec<RunRecord> = (0..20).map(|m| record(m, None)).collect();
        history[5] = record(5, Some((502, 300.0, true)));
        assert_eq!(intermittency(&history, 20, 3), None);
        history[9] = record(9, Some((502, 450.0, true)));
        history[14] = record(14, Some((502, 220.0, false)));
        assert_eq!(
            intermittency(&history, 20, 3),
            Some(Intermittency {
                failed: 3,
                runs: 20
            })
        );
        // Failing steadily is not intermittent.
        let steady: Vec<RunRecord> = (0..20)
            .map(|m| record(m, Some((502, 1.0, false))))
            .collect();
        assert_eq!(intermittency(&steady, 20, 3), None);
        assert!(!clean_window(&history, 20));
        let after: Vec<RunRecord> = (20..40).map(|m| record(m, None)).collect();
        assert!(clean_window(&[history, after].concat(), 20));
    }

    #[test]
    fn workers_dying_are_read_from_varying_waits_and_quoted() {
        let history: Vec<RunRecord> = (0..20)
            .map(|m| {
                let wait = 200.0 + (m as f64) * 20.0;
                record(m, (m % 3 == 0).then_some((502, wait, m % 2 == 0)))
            })
            .collect();
        let d = diagnose(&history, 20);
        assert_eq!(d.cause, Cause::FpmWorkerDied);
        assert_eq!(
            d.evidence[0],
            "7 of the last 20 runs failed, first at 08:00; each a 502 after 200–560 ms"
        );
        assert!(d.evidence[1].starts_with("4 of them hidden by a retry"));
        assert!(d.next_steps.iter().any(|s| s.contains("dmesg")));
    }

    #[test]
    fn fast_502s_read_as_a_full_backlog_and_504s_at_one_minute_as_a_job() {
        let history: Vec<RunRecord> = (0..20)
            .map(|m| record(m, (m % 4 == 1).then_some((502, 3.0, false))))
            .collect();
        let d = diagnose(&history, 20);
        assert_eq!(d.cause, Cause::FpmSaturated);
        assert!(d.summary.contains("listen backlog"), "{}", d.summary);
        // Every hour at :05, a 504.
        let history: Vec<RunRecord> = (0..20)
            .map(|h| {
                let minute = h * 60 + if h % 2 == 0 { 5 } else { 30 };
                record(minute, (h % 2 == 0).then_some((504, 60_000.0, false)))
            })
            .collect();
        let d = diagnose(&history, 20);
        assert!(d.summary.contains("every hour (:05 UTC)"), "{}", d.summary);
        assert!(d.next_steps[0].contains("\\b5 '"), "{}", d.next_steps[0]);
    }

    /// A run at `seconds` past the reference time, failing with a 504 after 30 s.
    fn timed_out_at(seconds: i64) -> RunRecord {
        let mut r = record(0, Some((504, 30_000.0, false)));
        r.at = 1_800_000_000 + seconds;
        r
    }

    /// A history of a run every `step` seconds over `span` seconds, failing with a 504 at
    /// minute `minute` of every hour (and nowhere else).
    fn hourly_504s(step: i64, span: i64, minute: i64) -> Vec<RunRecord> {
        (0..=span / step)
            .map(|i| {
                // 1_800_000_000 is a whole hour.
                let at = 1_800_000_000 + i * step;
                let mut r = record(
                    0,
                    (at / 60 % 60 == minute).then_some((504, 30_000.0, false)),
                );
                r.at = at;
                r
            })
            .collect()
    }

    #[test]
    fn no_history_shorter_than_three_hours_claims_a_schedule() {
        // Three 504s within 40 seconds, all at one minute of the hour: one episode.
        let episode = [timed_out_at(0), timed_out_at(20), timed_out_at(40)];
        assert_eq!(scheduled(&episode, &pairs(&episode)), None);
        let d = diagnose(&episode, 20);
        assert!(!d.summary.contains("scheduled job"), "{}", d.summary);
        // Failures at one minute of every hour, runs every `step` seconds, over any span
        // shorter than three hours: never a schedule.
        for step in [20, 60, 300, 600, 1200] {
            for span in (0..3 * 3600).step_by(step as usize * 3) {
                let history = hourly_504s(step, span, 18);
                let failures = pairs(&history);
                assert_eq!(
                    scheduled(&history, &failures),
                    None,
                    "{} failures over {span} s",
                    failures.len()
                );
            }
        }
        // Three hours and more: claimed.
        let history = hourly_504s(60, 3 * 3600, 18);
        assert_eq!(
            scheduled(&history, &pairs(&history)),
            Some(Schedule::Hourly { minute: 18 })
        );
    }

    #[test]
    fn a_schedule_needs_three_hours_or_days_and_no_failure_elsewhere() {
        let hour = 3600;
        // :18 in three hours over four: hourly.
        let mut three: Vec<RunRecord> = (0..3).map(|h| timed_out_at(h * hour + 18 * 60)).collect();
        three.push(record(4 * 60, None));
        three.last_mut().unwrap().at = 1_800_000_000 + 4 * hour;
        assert_eq!(
            scheduled(&three, &pairs(&three)),
            Some(Schedule::Hourly { minute: 18 })
        );
        // The same, with one failure at another minute: no schedule.
        let mut spread = three.clone();
        spread.push(timed_out_at(3 * hour + 40 * 60));
        assert_eq!(scheduled(&spread, &pairs(&spread)), None);
        // One time of day on three days, over four days: daily, at that time.
        let day = 24 * hour;
        let mut daily: Vec<RunRecord> = (0..3).map(|d| timed_out_at(d * day + 15 * 60)).collect();
        daily.push(record(0, None));
        daily.last_mut().unwrap().at = 1_800_000_000 + 4 * day;
        let at = OffsetDateTime::from_unix_timestamp(daily[0].at).unwrap();
        assert_eq!(
            scheduled(&daily, &pairs(&daily)),
            Some(Schedule::Daily {
                hour: i64::from(at.hour()),
                minute: i64::from(at.minute())
            })
        );
        let d = diagnose(&daily, 20);
        assert!(d.summary.contains("every day"), "{}", d.summary);
    }

    fn pairs(history: &[RunRecord]) -> Vec<(&RunRecord, &Failure)> {
        history
            .iter()
            .filter_map(|r| r.failure.as_ref().map(|f| (r, f)))
            .collect()
    }

    #[test]
    fn a_climbing_page_time_with_a_flat_static_file_is_quoted() {
        let history: Vec<RunRecord> = (0..21)
            .map(|m| {
                let mut r = record(m, (m > 15).then_some((504, 30_000.0, false)));
                r.page_ms = Some(100.0 + m as f64 * 100.0);
                r
            })
            .collect();
        let d = diagnose(&history, 21);
        assert!(
            d.evidence.iter().any(|e| e.contains("climbed")),
            "{:?}",
            d.evidence
        );
    }
}
