//! Judging across time, on real parts: a real PHP-FPM whose worker dies now and then, a pool whose
//! listen backlog overflows under a burst, and certificates coming close to expiry — each run
//! stamped a minute later (compressed time), mail through a real SMTP server.

mod support;

use probe::config;
use probe::schedule::run::run_once;
use probe::store::{SqliteStore, Store};
use support::lab::{Lab, OriginSettings, STATIC_PATH};
use support::minute;
use support::php_fpm::PoolSettings;
use support::pki::Pki;
use support::servers::{tls_server, Alpn, Behaviour};
use support::smtp::{SmtpServer, PASSWORD, USER};

/// A config with `sites` (YAML list entries), `alerts` settings, mail to ops@example.com.
fn write_config(
    dir: &std::path::Path,
    ca: &std::path::Path,
    sites: &str,
    alerts: &str,
    smtp_port: u16,
    password_env: &str,
) -> config::Config {
    let ca = ca.display();
    let text = format!(
        r#"defaults:
  timeout: 3s
  ca_file: {ca}
sites:
{sites}
alerts:
  to: [ops@example.com]
{alerts}
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  security: starttls
  username: {USER}
  password_env: {password_env}
  from: "probe <probe@example.com>"
  ca_file: {ca}
  timeout: 5s
store:
  path: probe.sqlite
"#
    );
    let path = dir.join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}")).config
}

/// A PHP-FPM worker killed mid-request once every three runs: each failure is hidden by the
/// in-run retry (the run is healthy), yet the history shows it. One blip sends nothing; the
/// third opens one intermittent incident whose diagnosis reads the pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dying_one_request_in_three_opens_one_intermittent_incident() {
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_DIE", PASSWORD);
    let lab = Lab::start(&OriginSettings::default());
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    let address = lab.origin.address();
    let sites = format!(
        "  - {{ name: lab, url: \"https://probe.test/flaky.php\", edge: \"{address}\", origins: [\"{address}\"], static_path: {STATIC_PATH} }}"
    );
    let config = write_config(
        lab.dir.path(),
        &lab.pki.ca_path,
        &sites,
        "  confirm_retries: 2\n  retry_spacing: 50ms",
        server.port,
        "PROBE_TEST_SMTP_PASSWORD_JUDGE_DIE",
    );
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();

    let waits = [250, 400, 550, 300, 450, 350, 500];
    let mut sent = Vec::new();
    for m in 0..20 {
        if m % 3 == 1 {
            lab.origin.kill_next_worker_after(waits[(m / 3) as usize]);
        }
        let pass = run_once(&config, &mut store, minute(m)).await.unwrap();
        assert!(
            !lab.origin.worker_kill_pending(),
            "minute {m}: the planned death happened"
        );
        assert_eq!(
            pass.worst(),
            probe::Status::Ok,
            "minute {m}: the retry hides the failure"
        );
        sent.push(pass.mails_sent);
    }
    // Deaths at minutes 1, 4, 7, …: one blip (minute 1) and a second (4) send nothing; the
    // third (7) opens the incident; nothing more while it stays open.
    let mut expected = vec![0; 20];
    expected[7] = 1;
    assert_eq!(sent, expected);
    let subjects = server.subjects();
    assert_eq!(
        subjects,
        ["[INTERMITTENT] lab: a PHP-FPM worker died mid-request (fpm_worker_died)"]
    );
    let mail = &server.messages()[0];
    // The history quoted: 3 failures of the 8 runs so far, first at minute 1, each a 502 after
    // the worker's partial work.
    let first = minute(1);
    let line = format!(
        "3 of the last 8 runs failed, first at {:02}:{:02}; each a 502 after ",
        first.hour(),
        first.minute()
    );
    assert!(mail.contains(&line), "{mail}");
    assert!(
        mail.contains("3 of them hidden by a retry within the run"),
        "{mail}"
    );
    assert!(mail.contains("dmesg -T"), "crash vs OOM commands: {mail}");
    // The failure the retry hid is kept with the stored result of its run (minute 19).
    let latest = store.latest_results().unwrap().remove(0).report;
    let hidden = latest
        .hidden_failure
        .expect("the last run's death is on record");
    assert_eq!(
        (hidden.code, hidden.cause),
        (Some(502), probe::diagnose::Cause::FpmWorkerDied)
    );
    assert!(hidden.wait_ms >= 500.0, "{hidden:?}");
}

/// One PHP-FPM worker with a listen backlog of 1, and a site asking for its page 5 times at
/// once: some requests are turned away at once (502) while others are answered — the full
/// backlog, read from the pattern as an intermittent incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_against_a_full_backlog_reads_as_saturation() {
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_BURST", PASSWORD);
    let settings = OriginSettings {
        pool: PoolSettings {
            max_children: 1,
            listen_backlog: Some(1),
            ..PoolSettings::default()
        },
        ..OriginSettings::default()
    };
    let lab = Lab::start(&settings);
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    let address = lab.origin.address();
    let sites = format!(
        "  - {{ name: lab, url: \"https://probe.test/sleep.php?ms=300\", edge: \"{address}\", origins: [\"{address}\"], static_path: {STATIC_PATH}, burst: 5 }}"
    );
    let config = write_config(
        lab.dir.path(),
        &lab.pki.ca_path,
        &sites,
        "  confirm_retries: 0",
        server.port,
        "PROBE_TEST_SMTP_PASSWORD_JUDGE_BURST",
    );
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    for m in 0..4 {
        run_once(&config, &mut store, minute(m)).await.unwrap();
    }
    let latest = store.latest_results().unwrap().remove(0).report;
    let pages: Vec<_> = latest
        .observations
        .iter()
        .filter(|o| o.path_role == probe::observe::PathRole::Page)
        .collect();
    assert_eq!(pages.len(), 10, "5 at once on each route");
    let refused = pages
        .iter()
        .filter(|o| o.response.as_ref().is_some_and(|r| r.status == 502))
        .count();
    assert!(
        refused > 0 && refused < 10,
        "some turned away, some answered: {refused}"
    );
    let subjects = server.subjects();
    assert_eq!(
        subjects,
        ["[INTERMITTENT] lab: PHP-FPM has no free worker (fpm_saturated)"],
        "one incident; the warning the degraded runs would raise is part of it"
    );
    let mail = &server.messages()[0];
    assert!(mail.contains("listen backlog"), "{mail}");
    assert!(
        mail.contains("failed only some of their page requests"),
        "{mail}"
    );
}

/// A certificate seen 13, 6 and 2 days before its expiry (the run's clock compressed: the
/// same certificate, its days running out), then a renewed one: one notice at each threshold of
/// [14, 7, 3, 1] crossed, naming the certificate, then one "renewed" that closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_threshold_is_noticed_once_and_the_renewal_closes_it() {
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_CERT", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let smtp = SmtpServer::start(dir.path(), &pki, None);
    let start = minute(0);
    let day = time::Duration::DAY;
    let names = [support::pki::SITE];
    let expiring = pki.leaf_until(&names, start + day * 13 + time::Duration::hours(12));
    let renewed = pki.leaf_until(&names, start + day * 90);
    let old = tls_server(&expiring, Alpn::H2AndHttp11, Behaviour::ok()).await;
    let new = tls_server(&renewed, Alpn::H2AndHttp11, Behaviour::ok()).await;
    // (days after the start, the server presenting the certificate)
    let runs = [
        (0, &old),
        (0, &old),
        (7, &old),
        (7, &old),
        (11, &old),
        (11, &old),
        (12, &new),
        (12, &new),
    ];
    let mut store: Option<SqliteStore> = None;
    let mut sent = Vec::new();
    for (i, (days, server)) in runs.iter().enumerate() {
        let address = server.addr;
        let sites = format!(
            "  - {{ name: shop, url: \"https://probe.test/\", edge: \"{address}\", origins: [\"{address}\"] }}"
        );
        let config = write_config(
            dir.path(),
            &pki.ca_path,
            &sites,
            "  confirm_retries: 0",
            smtp.port,
            "PROBE_TEST_SMTP_PASSWORD_JUDGE_CERT",
        );
        let store = store
            .get_or_insert_with(|| SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap());
        let at = start + day * *days + time::Duration::minutes(i as i64);
        let pass = run_once(&config, store, at).await.unwrap();
        sent.push(pass.mails_sent);
    }
    assert_eq!(sent, [1, 0, 1, 0, 1, 0, 1, 0]);
    let subjects = smtp.subjects();
    assert_eq!(subjects.len(), 4, "{subjects:#?}");
    for (subject, days) in subjects.iter().zip([13, 6, 2]) {
        assert!(
            subject.starts_with("[WARNING] shop: certificate ")
                && subject.ends_with(&format!(" expires in {days} days (edge and origin route)")),
            "{subject}"
        );
    }
    assert!(
        subjects[3].starts_with("[WARNING] shop: certificate ")
            && subjects[3].ends_with(" renewed (edge and origin route)"),
        "{}",
        subjects[3]
    );
    let first = &smtp.messages()[0];
    assert!(first.contains("notice at 14 days"), "{first}");
    assert!(first.contains("issuer: "), "{first}");
    assert!(first.contains("certbot renew"), "{first}");
    let last = &smtp.messages()[3];
    assert!(last.contains("replaced by: "), "{last}");
}
