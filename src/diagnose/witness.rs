//! The server's own witnesses: what PHP-FPM's status page and nginx's `stub_status` say, weighed
//! against the verdict the outside evidence reached. A status page states what timings only
//! suggest — every worker busy, requests waiting in the listen queue, which URIs hold the workers
//! and for how long, a restart — so it can confirm or sharpen a verdict about the pool. It never
//! overrides a hop in front of the pool, and a page that could not be read changes nothing but
//! one line of evidence that says so.
//!
//! Pure: the status pages are recorded observations; what earlier runs read of them comes in as
//! data (`WitnessCounters`, kept in the region's state of the site).

use super::pattern::{clock, ms as duration_ms};
use super::rules::{format_ms, is_healthy, Verdict, View};
use super::{Cause, Confidence, DiagnoseSettings};
use crate::observe::witness::{
    FpmCounters, FpmProcess, NginxCounters, NginxStatus, Witness, WitnessCounters, WorkerCount,
};
use crate::observe::{ErrorKind, Observation, PathRole, Phase};

/// A pool started this recently is said to have (re)started, when no earlier read of it is
/// there to compare with.
const RECENT_START_S: u64 = 300;
/// Workers started this recently in an older static pool were replaced (died, or recycled).
const RECENT_WORKER_S: u64 = 60;
/// Busy workers named in a witness line.
const LONGEST_SHOWN: usize = 3;
/// A request running this many times longer than the next one is "one slow request".
const FAR_PAST: f64 = 3.0;

/// What the status pages of one probe found, beyond their lines of evidence.
#[derive(Default)]
struct Findings {
    lines: Vec<String>,
    /// The pool has no free worker and requests wait (or our page waited): the sentence that
    /// says so.
    saturated: Option<String>,
    /// The pool ran out of workers since the last run, though it may have free ones now.
    reached_since: Option<String>,
    /// One request far past the others holds a worker: its URI and duration.
    one_slow: Option<(String, f64)>,
    /// PHP-FPM answers its status page (its master runs): the pool's name and its workers.
    fpm_answers: Option<(String, WorkerCount)>,
    /// PHP-FPM restarted, or workers were replaced lately: the sentence.
    restarted: Option<String>,
}

/// Weighs the status pages against `verdict`: their lines join the evidence, and when they
/// speak to the pool they may confirm, sharpen or (for a pool that looked healthy from outside)
/// set the cause. `previous`: each origin's counters as the site's earlier runs read them.
pub(super) fn weigh(
    view: &View<'_>,
    settings: &DiagnoseSettings,
    previous: &[WitnessCounters],
    mut verdict: Verdict,
) -> Verdict {
    if view.fpm_status.is_empty() && view.nginx_status.is_empty() {
        return verdict;
    }
    let page_waited = page_waited(view, settings);
    let static_fast = !view.origin_static.is_empty()
        && view.origin_static.iter().all(|o| is_healthy(o))
        && view
            .origin_static
            .iter()
            .all(|o| o.timings_ms.ttfb.unwrap_or(0.0) < settings.budget.ttfb_ms());
    let mut found = Findings::default();
    for o in &view.fpm_status {
        let last = counters_of(previous, o).and_then(|c| c.fpm.as_ref());
        fpm(
            o,
            view,
            settings,
            last,
            page_waited,
            static_fast,
            &mut found,
        );
    }
    for o in &view.nginx_status {
        let last = counters_of(previous, o).and_then(|c| c.nginx.as_ref());
        nginx(o, last, &mut found);
    }
    // A route broken in front of the pool: a status page that failed with it says nothing new.
    let in_front = !matches!(
        verdict.cause,
        Cause::Ok
            | Cause::Slow
            | Cause::OriginSlow
            | Cause::FpmSaturated
            | Cause::FpmUnreachable
            | Cause::FpmWorkerDied
    );
    if in_front {
        verdict.evidence.extend(found.lines);
        return verdict;
    }
    if let Some(sentence) = found.saturated.clone() {
        let answered = matches!(verdict.cause, Cause::Ok | Cause::Slow);
        verdict.cause = Cause::FpmSaturated;
        verdict.confidence = Confidence::High;
        verdict.summary = if answered {
            format!("{sentence} Our page was still answered, after waiting its turn.")
        } else {
            sentence
        };
        if let Some((uri, ms)) = &found.one_slow {
            verdict.summary = format!(
                "One slow request holds a worker: {uri} has been running for {}, far longer than the others. {}",
                duration_ms(*ms),
                verdict.summary
            );
            verdict.steps.extend(slow_request_steps(uri));
        }
        if let Some(sentence) = &found.reached_since {
            verdict.summary.push(' ');
            verdict.summary.push_str(sentence);
        }
        // What the pool says rules out what only timings could not tell apart.
        verdict.witnessed = true;
    } else if let Some(sentence) = &found.reached_since {
        match verdict.cause {
            // Already shown from outside: the history adds to it and never lowers it.
            Cause::FpmSaturated => {
                verdict.summary.push(' ');
                verdict.summary.push_str(sentence);
            }
            Cause::Ok | Cause::Slow | Cause::OriginSlow => {
                verdict.cause = Cause::FpmSaturated;
                verdict.confidence = Confidence::Medium;
                verdict.summary = sentence.clone();
            }
            _ => {}
        }
    } else if let (Cause::FpmUnreachable, Some((pool, workers))) =
        (verdict.cause, &found.fpm_answers)
    {
        fpm_runs(&mut verdict, pool, workers);
    } else if let (Cause::OriginSlow, Some((pool, workers))) = (verdict.cause, &found.fpm_answers) {
        // Read just before the pages: with a free worker for each page request probe made at
        // once, the page did not queue; its time is the script's own.
        let at_once = view
            .edge_page
            .iter()
            .chain(&view.origin_page)
            .filter(|o| o.sample == 1)
            .count() as u64;
        if workers.free() >= at_once {
            verdict.witnessed = true;
            verdict.summary.push_str(&format!(
                " PHP-FPM's status, read just before: pool {pool}, {}; a worker was free for each of probe's page requests, so the page did not wait for one.",
                workers.describe()
            ));
        }
    } else if let (Cause::FpmWorkerDied, Some(restart)) = (verdict.cause, &found.restarted) {
        // Said, not proved: pm.max_requests recycles workers too.
        verdict
            .summary
            .push_str(&format!(" PHP-FPM's own status: {restart}."));
    }
    verdict.evidence.extend(found.lines);
    verdict
}

/// nginx cannot reach PHP-FPM, yet PHP-FPM answers its status page: it is not stopped, so the
/// "stopped or renamed socket" forms of the cause are told apart.
fn fpm_runs(verdict: &mut Verdict, pool: &str, workers: &WorkerCount) {
    verdict.variants_ruled_out = true;
    if workers.free() == 0 {
        // Every worker busy: a full listen backlog turns nginx away with the same instant 502
        // (EAGAIN), so the socket is not proved wrong.
        verdict.summary.push_str(&format!(
            " PHP-FPM itself runs: pool {pool} answers its status page, {}. nginx is turned away either at a socket PHP-FPM does not listen on, or at a full listen backlog; nginx's error log says which.",
            workers.describe()
        ));
        return;
    }
    verdict.confidence = Confidence::High;
    // What the pool says rules out a full backlog too: nothing is left to list as "also".
    verdict.witnessed = true;
    verdict.summary.push_str(&format!(
        " PHP-FPM itself runs: pool {pool} answers its status page, {}. So nginx is not talking to it: the socket that fastcgi_pass names for the pages is not the one PHP-FPM listens on (after a PHP upgrade, still the old version's socket).",
        workers.describe()
    ));
    verdict.steps.push(
        "grep -rn '^listen' /etc/php/*/fpm/pool.d/    # the socket PHP-FPM listens on: fastcgi_pass must name this one".into(),
    );
}

/// The counters earlier runs read on the origin `o` was read on.
fn counters_of<'a>(
    previous: &'a [WitnessCounters],
    o: &Observation,
) -> Option<&'a WitnessCounters> {
    let origin = o.address?.to_string();
    previous.iter().find(|c| c.origin == origin)
}

/// Our page waited for PHP: it timed out, nginx gave up on PHP-FPM (504), or it took longer
/// than the site's budget.
fn page_waited(view: &View<'_>, settings: &DiagnoseSettings) -> bool {
    let page = if view.origin_page.is_empty() {
        &view.edge_page
    } else {
        &view.origin_page
    };
    page.iter().any(|o| {
        let timed_out = o.error.as_ref().is_some_and(|e| {
            e.kind == ErrorKind::Timeout && matches!(e.phase, Phase::Headers | Phase::Body)
        });
        let gave_up = o.response.as_ref().is_some_and(|r| r.status == 504);
        let slow = o
            .timings_ms
            .ttfb
            .is_some_and(|t| t > settings.budget.ttfb_ms());
        timed_out || gave_up || slow
    })
}

/// The path a status observation asked for, without its query.
fn own_path(o: &Observation) -> String {
    url::Url::parse(&o.url)
        .map(|u| u.path().to_string())
        .unwrap_or_default()
}

fn fpm(
    o: &Observation,
    view: &View<'_>,
    settings: &DiagnoseSettings,
    last: Option<&FpmCounters>,
    page_waited: bool,
    static_fast: bool,
    found: &mut Findings,
) {
    let path = own_path(o);
    let status = match &o.witness {
        Some(Witness::FpmStatus(status)) => status,
        _ => {
            let stuck = unavailable(o, "PHP-FPM status", &path, found);
            // Our page waiting too is what makes the status page's silence a full pool; a
            // status page that hangs beside an answered (or at once failing) page proves
            // nothing: a location routed elsewhere, a hostile server.
            if stuck && static_fast && page_waited {
                found.saturated.get_or_insert(format!(
                    "PHP-FPM has no free worker: even its status page ({path}) waits for one, and so does our page, while the web server serves the static file at once."
                ));
            }
            return;
        }
    };
    // Busiest first, whatever order the page (or a saved report) listed them in.
    let mut busy: Vec<&FpmProcess> = status.busy_others(&path).collect();
    busy.sort_by(|a, b| {
        b.request_duration_ms
            .partial_cmp(&a.request_duration_ms)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    // One count everywhere: the worker answering our own read is never one of the busy ones
    // (it is free again as soon as the page is sent), and the pool keeps its real size.
    let workers = status.workers(&path);
    let measured = status.listen_queue_len > 0;
    let waiting = status.listen_queue;
    let pool = format!("PHP-FPM pool {}", status.pool);
    found.fpm_answers = Some((status.pool.clone(), workers));

    // Against the last read of this pool: a start time that moved, or fewer requests accepted
    // than then, is a restart; otherwise what its counters gained happened in between.
    let restarted_at = last
        .filter(|l| l.start_time != status.start_time || l.accepted_conn > status.accepted_conn)
        .map(|l| l.at);
    let reached_delta = last.filter(|_| restarted_at.is_none()).and_then(|l| {
        (status.max_children_reached > l.max_children_reached)
            .then(|| (l.at, status.max_children_reached - l.max_children_reached))
    });
    let mut line = format!(
        "{pool}: {}, listen queue {}",
        workers.describe(),
        if measured {
            waiting.to_string()
        } else {
            "not measurable (a unix socket)".to_string()
        }
    );
    if measured && status.max_listen_queue > 0 {
        line.push_str(&format!(
            " (at most {} since it started)",
            status.max_listen_queue
        ));
    }
    line.push_str(&format!(
        ", max children reached {}",
        status.max_children_reached
    ));
    if let Some((at, delta)) = reached_delta {
        line.push_str(&format!(" (+{delta} since {})", clock(at)));
    }
    if status.slow_requests > 0 {
        line.push_str(&format!(", slow requests {}", status.slow_requests));
    }
    if !busy.is_empty() {
        let longest: Vec<String> = busy
            .iter()
            .take(LONGEST_SHOWN)
            .map(|p| format!("{} {}", shown_uri(p), duration_ms(p.request_duration_ms)))
            .collect();
        line.push_str(&format!("; longest: {}", longest.join(", ")));
    }
    found.lines.push(line);

    let restart = match restarted_at {
        Some(at) => Some(format!(
            "PHP-FPM restarted since its status was last read, at {} (at this read the pool had been up {}, {} since): stopped and started, a crash, a deploy or a reload",
            clock(at),
            age(status.start_since),
            crate::words::plural(status.accepted_conn, "request", "requests")
        )),
        // With no earlier read to compare with, a young pool says the same.
        None if last.is_none() && status.start_since < RECENT_START_S => Some(format!(
            "{pool} had been up {} at this read: PHP-FPM was just (re)started (a crash, a deploy or a reload?)",
            age(status.start_since)
        )),
        None => None,
    };
    if let Some(sentence) = &restart {
        found.lines.push(sentence.clone());
        found.restarted = Some(sentence.clone());
    }
    // A static pool replaces a worker only when it ends: died, or recycled by pm.max_requests.
    let replaced = if status.process_manager == "static" && status.start_since > RECENT_WORKER_S {
        status
            .processes
            .iter()
            .filter(|p| p.start_since < RECENT_WORKER_S)
            .count()
    } else {
        0
    };
    if replaced > 0 {
        let sentence = format!(
            "{replaced} of its workers started in the last minute, in a pool up for {}: replaced after dying, or recycled by pm.max_requests",
            age(status.start_since)
        );
        found.lines.push(format!("{pool}: {sentence}"));
        found.restarted.get_or_insert(sentence);
    }

    // One request far past the others (not our own page, which the verdict already times).
    let page_path = view
        .origin_page
        .first()
        .or(view.edge_page.first())
        .map(|p| own_path(p))
        .unwrap_or_default();
    if let Some(first) = busy.first().filter(|p| {
        p.request_uri != page_path && p.request_duration_ms >= settings.budget.ttfb_ms()
    }) {
        let next = busy.get(1).map_or(0.0, |p| p.request_duration_ms);
        if first.request_duration_ms >= FAR_PAST * next {
            found.one_slow = Some((shown_uri(first), first.request_duration_ms));
        }
    }

    // Requests waiting in the listen queue prove a full pool (PHP-FPM refreshes the count about
    // once a second). Our page waiting is the same proof, seen first-hand, only when no worker
    // was free besides the one answering our read: that one serves the page next, so a slow
    // page beside it is PHP's own time, not a queue.
    let holders = holders(&busy);
    if workers.idle == 0 && measured && waiting > 0 {
        found.saturated = Some(format!(
            "{pool} has no free worker ({}) and {waiting} {} in its listen queue{holders}.",
            workers.describe(),
            if waiting == 1 {
                "request waits"
            } else {
                "requests wait"
            }
        ));
    } else if workers.all_busy() && page_waited {
        found.saturated = Some(format!(
            "{pool} has no free worker ({}) and our page waited for one{holders}.",
            workers.describe()
        ));
    }
    if let Some((at, delta)) = reached_delta {
        found.reached_since = Some(format!(
            "{pool} ran out of workers since the last run: it reached pm.max_children {delta} more time{} since {} (it has {} free now).",
            if delta == 1 { "" } else { "s" },
            clock(at),
            status.idle_processes
        ));
    }
}

/// "; holding them longest: URI for 48 s, …" over the busy workers (busiest first).
fn holders(busy: &[&FpmProcess]) -> String {
    if busy.is_empty() {
        return String::new();
    }
    let named: Vec<String> = busy
        .iter()
        .take(LONGEST_SHOWN)
        .map(|p| {
            format!(
                "{} for {}",
                shown_uri(p),
                duration_ms(p.request_duration_ms)
            )
        })
        .collect();
    format!("; holding them longest: {}", named.join(", "))
}

fn shown_uri(p: &FpmProcess) -> String {
    if p.request_uri.is_empty() {
        "(no URI)".to_string()
    } else {
        p.request_uri.clone()
    }
}

fn nginx(o: &Observation, last: Option<&NginxCounters>, found: &mut Findings) {
    let status: &NginxStatus = match &o.witness {
        Some(Witness::NginxStatus(status)) => status,
        _ => {
            unavailable(o, "nginx stub_status", &own_path(o), found);
            return;
        }
    };
    let count = |n: u64, thing: &str| crate::words::plural(n, thing, &format!("{thing}s"));
    let mut line = format!(
        "nginx: {} (reading {}, writing {}, waiting {}); {} accepted, {} handled, {}",
        count(status.active, "connection"),
        status.reading,
        status.writing,
        status.waiting,
        status.accepts,
        status.handled,
        count(status.requests, "request")
    );
    let dropped = status.accepts.saturating_sub(status.handled);
    let restarted = last.is_some_and(|l| l.accepts > status.accepts);
    let dropped_since = last.filter(|_| !restarted).and_then(|l| {
        let before = l.accepts.saturating_sub(l.handled);
        (dropped > before).then(|| (l.at, dropped - before))
    });
    if let Some((at, n)) = dropped_since {
        line.push_str(&format!(
            "; {n} connections dropped since {} (worker_connections reached)",
            clock(at)
        ));
    } else if dropped > 0 {
        line.push_str(&format!(
            "; {dropped} connections dropped since it started (worker_connections reached)"
        ));
    }
    if let Some(l) = last.filter(|_| restarted) {
        line.push_str(&format!(
            "; restarted since it was last read, at {}",
            clock(l.at)
        ));
    }
    found.lines.push(line);
}

/// The line for a status page that told nothing; whether it waited without an answer (a status
/// request queued behind busy workers).
fn unavailable(o: &Observation, what: &str, path: &str, found: &mut Findings) -> bool {
    let (why, stuck) = match (&o.witness, &o.response, &o.error) {
        (Some(Witness::Unreadable(why)), _, _) => (format!("unreadable: {why}"), false),
        (_, _, Some(e)) if e.kind == ErrorKind::Timeout => (
            format!("no answer within {}", format_ms(o.timings_ms.total)),
            matches!(e.phase, Phase::Headers | Phase::Body),
        ),
        (_, _, Some(e)) => (format!("{} {}", e.phase.as_str(), e.kind.as_str()), false),
        (_, Some(r), None) => match r.status {
            401 | 403 => (format!("{} (the origin refuses it: allow the prober's address, or send the header it expects: status_header)", r.status), false),
            404 => (
                "404 (not routed: is the path right, and passed to the status handler?)".to_string(),
                false,
            ),
            504 => ("504 (the web server timed out waiting for it)".to_string(), true),
            status => (format!("answered {status}"), false),
        },
        (_, None, None) => ("nothing recorded".to_string(), false),
    };
    found.lines.push(format!(
        "{what} {path} unavailable: {why}; judged from outside only"
    ));
    stuck && o.path_role == PathRole::FpmStatus
}

/// Commands for the playbook's slow request holding a worker.
fn slow_request_steps(uri: &str) -> Vec<String> {
    vec![
        format!("grep -rn 'request_slowlog_timeout\\|slowlog' /etc/php/*/fpm/pool.d/   # set request_slowlog_timeout = 10s: the slow log shows where {uri} spends its time"),
        format!("move {uri} off the visitors' pool: run it as a background job (Action Scheduler, WP-CLI cron), or pass its location to a PHP-FPM pool of its own (its own pm.max_children, memory and time limits)"),
    ]
}

fn age(seconds: u64) -> String {
    crate::text::duration(std::time::Duration::from_secs(seconds))
}

/// Whether a probe read any status page (a judgement with history may then differ).
pub fn has_witness(observations: &[Observation]) -> bool {
    observations.iter().any(|o| o.path_role.is_witness())
}
