//! End-to-end: each failure reproduced for real on nginx + PHP-FPM, and the diagnosis naming the
//! hop and cause, with the decisive observation in its evidence.

mod support;

use std::time::Duration;

use probe::diagnose::{Cause, Confidence, Hop};
use probe::Status;
use support::lab::{Lab, OriginSettings};
use support::php_fpm::PoolSettings;
use support::run_json;

/// Probes, and records the report as fixture `name` when asked to (see `record_fixture`).
async fn probe(name: &str, args: &[String]) -> probe::ProbeReport {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = run_json(&args).await.0;
    support::record_fixture(name, &report);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_lab_is_ok_fifty_times_in_a_row() {
    let lab = Lab::start(&OriginSettings::default());
    for run in 0..50 {
        let report = probe("lab_healthy", &lab.probe_args("/")).await;
        let d = &report.diagnosis;
        assert_eq!(
            (report.status, d.cause),
            (Status::Ok, Cause::Ok),
            "run {run}: {d:#?}"
        );
        let page = report.observations[0].response.as_ref().unwrap();
        assert!(
            page.body_excerpt.contains("hello from PHP-FPM"),
            "run {run}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fastcgi_pass_naming_the_old_php_socket_is_fpm_unreachable() {
    let lab = Lab::start(&OriginSettings {
        fastcgi_pass: Some("/run/php/php7.4-fpm.sock".into()),
        ..OriginSettings::default()
    });
    let report = probe("lab_stale_fastcgi_socket", &lab.probe_args("/")).await;
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
    assert!(
        d.evidence[0].contains("page 502 in") && d.evidence[0].contains("stock nginx page"),
        "{:#?}",
        d.evidence
    );
    assert!(
        d.evidence.iter().any(|e| e.contains("static 200")),
        "{:#?}",
        d.evidence
    );
    let log = std::fs::read_to_string(lab.origin.nginx.dir.join("error.log")).unwrap();
    assert!(
        log.contains("No such file or directory"),
        "nginx saw the missing socket: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn php_fpm_stopped_is_fpm_unreachable() {
    let mut lab = Lab::start(&OriginSettings::default());
    lab.origin.fpm.stop();
    let report = probe("lab_fpm_stopped", &lab.probe_args("/")).await;
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause),
        (Status::Down, Hop::OriginFpm, Cause::FpmUnreachable),
        "{d:#?}"
    );
    assert!(
        d.next_steps
            .iter()
            .any(|s| s.contains("systemctl status 'php*-fpm'")),
        "{:#?}",
        d.next_steps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_behind_a_short_read_timeout_is_fpm_saturated() {
    let lab = Lab::start(&OriginSettings {
        pool: PoolSettings {
            max_children: 1,
            ..PoolSettings::default()
        },
        fastcgi_read_timeout: Duration::from_secs(1),
        ..OriginSettings::default()
    });
    // One long request holds the only worker.
    let holder = lab.origin.hold_a_worker(4000);
    let report = probe("lab_busy_pool", &lab.probe_args("/")).await;
    drop(holder);
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause),
        (Status::Down, Hop::OriginFpm, Cause::FpmSaturated),
        "{d:#?}"
    );
    let page = report
        .observations
        .iter()
        .find(|o| o.response.as_ref().is_some_and(|r| r.status == 504))
        .expect("a 504");
    let ttfb = page.timings_ms.ttfb.unwrap();
    assert!(
        (950.0..1500.0).contains(&ttfb),
        "504 at the 1 s read timeout, got {ttfb} ms"
    );
    assert!(
        d.alternatives.iter().any(|a| a.cause == Cause::OriginSlow),
        "{:#?}",
        d.alternatives
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_request_is_fpm_worker_died() {
    let lab = Lab::start(&OriginSettings::default());
    let report = probe("lab_worker_killed", &lab.probe_args("/die.php?ms=400")).await;
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause),
        (Status::Down, Hop::OriginFpm, Cause::FpmWorkerDied),
        "{d:#?}"
    );
    let ttfb = report.observations[0].timings_ms.ttfb.unwrap();
    assert!(
        (390.0..900.0).contains(&ttfb),
        "502 at the moment of death, got {ttfb} ms"
    );
    assert!(d.evidence[0].contains("502 in"), "{:#?}", d.evidence);
    assert!(
        d.next_steps.iter().any(|s| s.contains("dmesg")),
        "{:#?}",
        d.next_steps
    );
}

/// A PHP page that works 3.7 s beside a static file nginx serves in a millisecond: PHP is slow,
/// not the network (`origin_slow`, hop `origin_fpm`), both figures said, the budget named; with
/// a budget above it, the same site is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_php_page_beside_a_fast_static_file_is_origin_slow() {
    let lab = Lab::start(&OriginSettings::default());
    let args = lab.probe_args("/sleep.php?ms=3700");
    let report = probe("lab_slow_page", &args).await;
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
        d.summary.starts_with("The page takes 3.7 s to its first byte, over its budget (budget.ttfb = 2s), while nginx serves the static file in ")
            && d.summary.ends_with(" on the same origin: PHP is slow, not the network."),
        "{}",
        d.summary
    );
    assert!(
        d.evidence[0].contains("page 200 in 37") && d.evidence[1].contains("static 200 in"),
        "{:#?}",
        d.evidence
    );
    for (i, line) in d.evidence.iter().enumerate() {
        assert!(!d.evidence[..i].contains(line), "said twice: {line}");
    }
    let mut patient = args.clone();
    patient.extend(["--budget".into(), "ttfb=5s".into()]);
    let report = probe("unused", &patient).await;
    assert_eq!(report.diagnosis.cause, Cause::Ok, "{:#?}", report.diagnosis);
}

/// The site probed as http:// on the port where nginx speaks TLS: nginx's 400 "The plain HTTP
/// request was sent to HTTPS port" is recognised as the probe's own request being wrong — the
/// site is not judged (unknown), and the fix is said, in one sentence each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_tls_port_is_the_probes_own_request() {
    let lab = Lab::start(&OriginSettings::default());
    let mut args = lab.probe_args("/");
    args[0] = format!("http://probe.test:{}/", lab.origin.nginx.port);
    let report = probe("lab_plain_http_to_tls", &args).await;
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause),
        (Status::Unknown, Hop::Unknown, Cause::Unknown),
        "{d:#?}"
    );
    assert!(
        d.summary
            .starts_with("The request probe sent is plain HTTP to a port where nginx speaks TLS")
            && d.summary.contains("write the site's URL as https://"),
        "{}",
        d.summary
    );
    assert!(
        d.evidence[0].contains("nginx's page \"The plain HTTP request was sent to HTTPS port\""),
        "{:#?}",
        d.evidence
    );
    assert!(
        !d.summary.contains("?.") && !d.summary.contains(".."),
        "{}",
        d.summary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_port_closed_is_origin_refused() {
    let lab = Lab::start(&OriginSettings::default());
    let closed = support::servers::refused_port().to_string();
    let mut args = lab.probe_args("/");
    let at = args.iter().position(|a| a == "--origin").unwrap() + 1;
    args[at] = closed.clone();
    let report = probe("lab_origin_port_closed", &args).await;
    let d = &report.diagnosis;
    assert_eq!(
        (d.hop, d.cause),
        (Hop::EdgeOrigin, Cause::OriginRefused),
        "{d:#?}"
    );
    assert!(
        d.evidence[0].contains(&format!("origin {closed} page: connect refused")),
        "{:#?}",
        d.evidence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordpress_in_maintenance_and_without_its_database() {
    let mut wp = support::lab::WordPressLab::start();

    let report = probe("wordpress_healthy", &wp.lab.probe_args("/")).await;
    assert_eq!(
        (report.status, report.diagnosis.cause),
        (Status::Ok, Cause::Ok),
        "{:#?}",
        report.diagnosis
    );
    let page = report.observations[0].response.as_ref().unwrap();
    assert!(
        page.body_excerpt.contains("probe lab"),
        "the installed blog's front page: {}",
        page.body_excerpt
    );

    wp.start_maintenance();
    let report = probe("wordpress_maintenance", &wp.lab.probe_args("/")).await;
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause),
        (Status::Down, Hop::App, Cause::Maintenance),
        "{d:#?}"
    );
    let page = report.observations[0].response.as_ref().unwrap();
    assert_eq!(
        (page.status, page.headers.retry_after.as_deref()),
        (503, Some("600"))
    );
    assert!(
        d.evidence[0].contains("WordPress maintenance page"),
        "{:#?}",
        d.evidence
    );
    wp.end_maintenance();

    wp.db.stop();
    let report = probe("wordpress_database_down", &wp.lab.probe_args("/")).await;
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause, d.confidence),
        (
            Status::Down,
            Hop::FpmDatabase,
            Cause::DatabaseUnreachable,
            Confidence::High
        ),
        "{d:#?}"
    );
    assert!(
        d.evidence[0].contains("500") && d.evidence[0].contains("WordPress database error page"),
        "{:#?}",
        d.evidence
    );
}

/// `PROBE_LOG=debug` is probe's own debug: every line names the site it is about, and other
/// crates (HTTP/2 frames) stay quiet unless named (`PROBE_LOG=debug,h2=trace`).
#[test]
fn debug_logs_are_ours_and_name_the_site() {
    let lab = Lab::start(&OriginSettings::default());
    let run = |log: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(lab.probe_args("/"))
            .env("PROBE_LOG", log)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let ours = run("debug");
    let observed: Vec<&str> = ours.lines().filter(|l| l.contains("observed")).collect();
    assert!(observed.len() >= 4, "{ours}");
    assert!(
        observed
            .iter()
            .all(|l| l.contains("probe{host=probe.test}")),
        "{ours}"
    );
    assert!(
        !ours.contains(" h2::"),
        "no HTTP/2 frame lines unless asked: {ours}"
    );
    let asked = run("debug,h2=trace");
    assert!(
        asked.contains(" h2::"),
        "h2 lines when named: {}",
        &asked[..asked.len().min(2000)]
    );
}
