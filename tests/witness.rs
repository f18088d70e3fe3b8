//! The server's own witnesses, on real parts: PHP-FPM's status page (`pm.status_path`, read as
//! `?json&full`) and nginx's `stub_status`, read on the origin route while the test holds real
//! workers busy with a slow script; refused, missing and unreadable pages; a restart and a pool
//! that filled up between two scheduled runs.

mod support;

use std::time::Duration;

use probe::diagnose::{Cause, Confidence, Hop};
use probe::observe::witness::Witness;
use probe::observe::PathRole;
use probe::{ProbeReport, Status};
use support::lab::{Lab, OriginSettings, NGINX_STATUS_PATH, STATIC_PATH};
use support::php_fpm::{PoolSettings, FPM_STATUS_PATH};
use support::run_json;

/// The lab tests here run one at a time: they hold workers and read timings.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn probe(name: &str, args: &[String]) -> ProbeReport {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = run_json(&args).await.0;
    support::record_fixture(name, &report);
    report
}

/// `lab.probe_args(path)` with both status pages and a deadline.
fn witness_args(lab: &Lab, path: &str, timeout: &str) -> Vec<String> {
    let mut args = lab.probe_args(path);
    args.extend([
        "--fpm-status".into(),
        FPM_STATUS_PATH.into(),
        "--nginx-status".into(),
        NGINX_STATUS_PATH.into(),
        "--timeout".into(),
        timeout.into(),
    ]);
    args
}

fn witness(report: &ProbeReport, role: PathRole) -> Option<&Witness> {
    report
        .observations
        .iter()
        .find(|o| o.path_role == role)
        .and_then(|o| o.witness.as_ref())
}

fn fpm_settings(max_children: u32) -> OriginSettings {
    OriginSettings {
        pool: PoolSettings {
            max_children,
            status_path: true,
            status_listen: true,
            ..PoolSettings::default()
        },
        nginx_status: true,
        ..OriginSettings::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_names_the_requests_holding_the_workers() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let lab = Lab::start(&fpm_settings(3));
    let held = [
        lab.origin.hold_a_worker(8000),
        lab.origin.hold_a_worker(8000),
    ];
    // Long enough for the held requests to be seen running for a while.
    std::thread::sleep(Duration::from_millis(600));
    let report = probe("lab_fpm_status_two_held", &witness_args(&lab, "/", "5s")).await;
    drop(held);
    let d = &report.diagnosis;
    // The third worker answers the page: working, and the status says how close it came.
    assert_eq!((report.status, d.cause), (Status::Ok, Cause::Ok), "{d:#?}");
    let Some(Witness::FpmStatus(status)) = witness(&report, PathRole::FpmStatus) else {
        panic!("no PHP-FPM status read: {:#?}", report.observations);
    };
    assert_eq!((status.pool.as_str(), status.total_processes), ("www", 3));
    let slow: Vec<_> = status
        .processes
        .iter()
        .filter(|p| p.is_busy() && p.request_uri == "/sleep.php")
        .collect();
    assert_eq!(slow.len(), 2, "{:#?}", status.processes);
    assert!(
        slow.iter().all(|p| p.request_duration_ms >= 500.0),
        "{slow:#?}"
    );
    // The query string (which may hold tokens) is never kept.
    assert!(!format!("{report:?}").contains("mark=held"));
    let line = d
        .evidence
        .iter()
        .find(|l| l.starts_with("PHP-FPM pool www:"))
        .unwrap_or_else(|| panic!("{:#?}", d.evidence));
    // Two held; the status pages are read before our own page requests start.
    assert!(
        line.contains("3 workers: 2 busy, 1 idle") && line.contains("longest: /sleep.php"),
        "{line}"
    );
    // nginx's stub_status, read for real: the held connections are among its active ones.
    let Some(Witness::NginxStatus(nginx)) = witness(&report, PathRole::NginxStatus) else {
        panic!("no stub_status read: {:#?}", report.observations);
    };
    assert!(nginx.active >= 3 && nginx.writing >= 3, "{nginx:#?}");
    assert!(
        nginx.accepts >= nginx.handled && nginx.requests >= 3,
        "{nginx:#?}"
    );
    assert!(
        d.evidence.iter().any(|l| l.starts_with("nginx: ")),
        "{:#?}",
        d.evidence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_held_with_requests_queued_is_fpm_saturated_high() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // PHP-FPM measures its listen queue on a TCP socket only (Linux).
    let mut settings = fpm_settings(3);
    settings.pool.listen_tcp = true;
    let lab = Lab::start(&settings);
    let held = [
        lab.origin.hold_a_worker(9000),
        lab.origin.hold_a_worker(9000),
        lab.origin.hold_a_worker(9000),
    ];
    let queued = lab.origin.queue_a_request(100);
    // PHP-FPM refreshes its listen queue count about once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let report = probe(
        "lab_fpm_saturated_witnessed",
        &witness_args(&lab, "/", "2s"),
    )
    .await;
    drop((held, queued));
    let d = &report.diagnosis;
    assert_eq!(
        (d.hop, d.cause, d.confidence),
        (Hop::OriginFpm, Cause::FpmSaturated, Confidence::High),
        "{d:#?}"
    );
    assert!(
        d.summary
            .contains("no free worker (3 workers: 3 busy, 0 idle)")
            && d.summary.contains("in its listen queue")
            && d.summary.contains("/sleep.php"),
        "{}",
        d.summary
    );
    let Some(Witness::FpmStatus(status)) = witness(&report, PathRole::FpmStatus) else {
        panic!("no PHP-FPM status read");
    };
    assert!(
        status.listen_queue >= 1 && status.listen_queue_len > 0,
        "{status:#?}"
    );
    // The pool's own account leaves no "or a slow request" open.
    assert!(d.alternatives.is_empty(), "{:#?}", d.alternatives);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_page_waiting_behind_the_busy_workers_is_saturation() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // No status pool of its own: the status request needs a worker like any other.
    let mut settings = fpm_settings(2);
    settings.pool.status_listen = false;
    let lab = Lab::start(&settings);
    let held = [
        lab.origin.hold_a_worker(6000),
        lab.origin.hold_a_worker(6000),
    ];
    let report = probe("lab_fpm_status_waits", &witness_args(&lab, "/", "2s")).await;
    drop(held);
    let d = &report.diagnosis;
    assert_eq!(
        (d.cause, d.confidence),
        (Cause::FpmSaturated, Confidence::High),
        "{d:#?}"
    );
    assert!(d.summary.contains("even its status page"), "{}", d.summary);
    assert!(
        d.evidence
            .iter()
            .any(|l| l.contains("PHP-FPM status /fpm-status unavailable: no answer within")),
        "{:#?}",
        d.evidence
    );
}

/// nginx passes the pages to a socket nobody listens on while its status location reaches
/// PHP-FPM (served by the pool's own workers, as on most servers): PHP-FPM runs, nginx is not
/// talking to it. One count of the workers everywhere, the one answering our read set apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_answering_its_status_page_beside_instant_502s_is_the_wrong_socket() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut settings = fpm_settings(3);
    settings.pool.status_listen = false;
    settings.fastcgi_pass = Some("/run/php/php7.4-fpm.sock".into());
    let lab = Lab::start(&settings);
    let args = witness_args(&lab, "/", "5s");
    let report = probe("lab_fpm_status_wrong_socket", &args).await;
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause, d.confidence),
        (
            Status::Down,
            Hop::OriginFpm,
            Cause::FpmUnreachable,
            Confidence::High
        ),
        "{d:#?}"
    );
    let count = "3 workers: 0 busy, 2 idle, 1 answering this status read";
    assert!(
        d.summary.contains(&format!(
            "PHP-FPM itself runs: pool www answers its status page, {count}. So nginx is not talking to it"
        )) && d.summary.contains("fastcgi_pass"),
        "{}",
        d.summary
    );
    // No sentence saying it might be stopped, no backlog against an idle pool.
    assert!(!d.summary.contains("is stopped"), "{}", d.summary);
    assert!(d.alternatives.is_empty(), "{:#?}", d.alternatives);
    let lines: Vec<&String> = d.evidence.iter().filter(|l| l.contains("busy")).collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with(&format!("PHP-FPM pool www: {count}")),
        "{:#?}",
        d.evidence
    );
    // The table counts the workers as the evidence does.
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, table) = support::run_cli(&arg_refs).await;
    assert!(
        table.contains(&format!(
            "status PHP-FPM pool www (static): {count}, listen queue"
        )),
        "{table}"
    );
    assert!(!table.contains(" active, "), "{table}");
}

/// A slow page while the pool's status page, answered by one of its own workers, shows free
/// workers: PHP's own time (`origin_slow`), never a full pool because of the worker serving us;
/// nothing left "also possible".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_page_beside_free_workers_is_origin_slow_not_saturation() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut settings = fpm_settings(4);
    settings.pool.status_listen = false;
    let lab = Lab::start(&settings);
    let held = lab.origin.hold_a_worker(9000);
    let report = probe(
        "lab_slow_page_witnessed",
        &witness_args(&lab, "/sleep.php?ms=3000", "8s"),
    )
    .await;
    drop(held);
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause, d.confidence),
        (
            Status::Degraded,
            Hop::OriginFpm,
            Cause::OriginSlow,
            Confidence::High
        ),
        "{d:#?}"
    );
    assert!(
        d.summary.contains("PHP is slow, not the network")
            && d.summary
                .contains("pool www, 4 workers: 1 busy, 2 idle, 1 answering this status read;")
            && d.summary.contains("the page did not wait for one"),
        "{}",
        d.summary
    );
    assert!(d.alternatives.is_empty(), "{:#?}", d.alternatives);
}

/// A refused (403), missing (404) or unreadable status page is one line of evidence; the
/// verdict is the one the outside evidence reaches alone, on a healthy and on a broken origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_status_page_changes_nothing_but_says_so() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut settings = fpm_settings(3);
    settings.status_access = "deny all;";
    // No stub_status location: the path falls through to WordPress-style routing (index.php
    // answers 200 with a page that is not a status).
    settings.nginx_status = false;
    let mut lab = Lab::start(&settings);
    for broken in [false, true] {
        if broken {
            lab.origin.fpm.stop();
        }
        let outside = probe("unused", &lab.probe_args("/")).await;
        let refused = probe("unused", &witness_args(&lab, "/", "5s")).await;
        let mut missing_args = witness_args(&lab, "/", "5s");
        let at = missing_args
            .iter()
            .position(|a| a == "--fpm-status")
            .unwrap();
        missing_args[at + 1] = "/no-such-status.php".into();
        let missing = probe("unused", &missing_args).await;
        // With PHP-FPM stopped, what PHP would have answered is nginx's 502.
        let (missing_line, unreadable_line) = if broken {
            (
                "PHP-FPM status /no-such-status.php unavailable: answered 502",
                "nginx stub_status /nginx_status unavailable: answered 502",
            )
        } else {
            (
                "PHP-FPM status /no-such-status.php unavailable: 404",
                "nginx stub_status /nginx_status unavailable: unreadable: not nginx's stub_status",
            )
        };
        for (what, report, line) in [
            (
                "403",
                &refused,
                "PHP-FPM status /fpm-status unavailable: 403",
            ),
            ("404", &missing, missing_line),
            ("unreadable", &refused, unreadable_line),
        ] {
            let (a, b) = (&outside.diagnosis, &report.diagnosis);
            // Timings differ from one probe to the next; the words may not.
            let words = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
            assert_eq!(
                (a.status, a.cause, a.confidence, words(&a.summary)),
                (b.status, b.cause, b.confidence, words(&b.summary)),
                "{what}, broken {broken}"
            );
            assert!(
                b.evidence
                    .iter()
                    .any(|l| l.starts_with(line) && l.ends_with("judged from outside only")),
                "{what}, broken {broken}: {:#?}",
                b.evidence
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_token_from_the_environment_opens_the_page_and_stays_secret() {
    let _serial = ONE_AT_A_TIME.lock().await;
    const TOKEN: &str = "s3cret-status-token";
    let mut settings = fpm_settings(3);
    settings.status_token = Some(TOKEN);
    let lab = Lab::start(&settings);
    let without = probe("unused", &witness_args(&lab, "/", "5s")).await;
    assert!(witness(&without, PathRole::FpmStatus).is_none());
    std::env::set_var("PROBE_TEST_STATUS_TOKEN", TOKEN);
    let mut args = witness_args(&lab, "/", "5s");
    args.extend([
        "--status-header".into(),
        "X-Status-Token=PROBE_TEST_STATUS_TOKEN".into(),
    ]);
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (report, json) = run_json(&arg_refs).await;
    assert!(
        matches!(
            witness(&report, PathRole::FpmStatus),
            Some(Witness::FpmStatus(_))
        ),
        "{:#?}",
        report.observations
    );
    assert!(!json.to_string().contains(TOKEN));
    let (_, table) = support::run_cli(&arg_refs).await;
    assert!(
        !table.contains(TOKEN) && table.contains("status PHP-FPM pool www"),
        "{table}"
    );
}

/// `probe run` twice, PHP-FPM restarted in between: the second run's diagnosis says so, read
/// from the pool's start time against the first run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_two_runs_is_detected() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut lab = Lab::start(&fpm_settings(3));
    let config = scheduled_config(&lab);
    let mut store = probe::store::SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let first = run_and_read(&config, &mut store, 0).await;
    assert!(
        !first.evidence.iter().any(|l| l.contains("restarted since")),
        "{:#?}",
        first.evidence
    );
    // The pool's start time is in whole seconds: a restart is told by a later one.
    std::thread::sleep(Duration::from_millis(1100));
    lab.origin.fpm.restart();
    let second = run_and_read(&config, &mut store, 1).await;
    assert!(
        second
            .evidence
            .iter()
            .any(|l| l.starts_with("PHP-FPM restarted since its status was last read, at")),
        "{:#?}",
        second.evidence
    );
    assert_eq!(second.cause, Cause::Ok, "a restart alone is not a failure");
}

/// The pool filled up between two runs and is free again: `max children reached` grew, so the
/// second run is degraded (fpm_saturated, medium) although its page answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_filled_up_between_runs_is_saturation_even_when_over() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut settings = fpm_settings(2);
    settings.pool.pm = "ondemand";
    let lab = Lab::start(&settings);
    let config = scheduled_config(&lab);
    let mut store = probe::store::SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let first = run_and_read(&config, &mut store, 0).await;
    assert_eq!(first.cause, Cause::Ok, "{first:#?}");
    {
        // Two workers held and a third request: ondemand counts pm.max_children reached.
        let _held = [
            lab.origin.hold_a_worker(1500),
            lab.origin.hold_a_worker(1500),
        ];
        let _third = lab.origin.queue_a_request(10);
        std::thread::sleep(Duration::from_millis(2500));
    }
    let second = run_and_read(&config, &mut store, 1).await;
    assert_eq!(
        (second.status, second.cause, second.confidence),
        (Status::Degraded, Cause::FpmSaturated, Confidence::Medium),
        "{second:#?}"
    );
    assert!(
        second
            .summary
            .contains("ran out of workers since the last run"),
        "{}",
        second.summary
    );
    assert!(
        second
            .evidence
            .iter()
            .any(|l| l.contains("max children reached 1 (+1 since")),
        "{:#?}",
        second.evidence
    );
}

/// A config probing the lab with both status pages, its store in the lab's folder.
fn scheduled_config(lab: &Lab) -> probe::config::Config {
    let address = lab.origin.address();
    let text = format!(
        r#"defaults:
  timeout: 5s
  ca_file: {ca}
sites:
  - name: lab
    url: https://probe.test/
    edge: "{address}"
    origins: ["{address}"]
    static_path: {STATIC_PATH}
    fpm_status: {FPM_STATUS_PATH}
    nginx_status: {NGINX_STATUS_PATH}
store:
  path: probe.sqlite
"#,
        ca = lab.pki.ca_path.display()
    );
    let path = lab.dir.path().join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    probe::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// One `probe run` pass at `minute`; the site's diagnosis as the pass judged it.
async fn run_and_read(
    config: &probe::config::Config,
    store: &mut probe::store::SqliteStore,
    minute: i64,
) -> probe::diagnose::Diagnosis {
    let mut seen = None;
    probe::schedule::run::run_once_with(
        config,
        store,
        support::minute(minute),
        &mut |_, report, _| {
            seen = Some(report.diagnosis.clone());
        },
    )
    .await
    .unwrap();
    seen.expect("the site was probed")
}
