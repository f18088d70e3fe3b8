//! The story told over time, on real parts: WordPress on nginx + PHP-FPM + MariaDB, a small
//! PHP-FPM pool with slow pages and its status page, a certificate near its expiry, mail through
//! a real SMTP server — under `probe run` (each pass stamped a minute later) and under `probe
//! watch` (real time). What an operator reads must be true: one incident with one number for
//! a shared failure, one message per turn of its story, clock times and true durations, no
//! mail and no saturation for a pool that is merely slow, one notice for one certificate.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use probe::config;
use probe::schedule::run::run_once;
use probe::store::{SqliteStore, Store};
use support::lab::{Lab, OriginSettings, WordPressLab, STATIC_PATH};
use support::minute;
use support::php_fpm::{PhpFpm, PoolSettings};
use support::smtp::{decoded, subject, SmtpServer, PASSWORD, USER};
use support::watch::{field, WatchProcess};

/// These tests read timings and run servers: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// probes.yaml with `sites` (YAML list entries) and `alerts` settings, mail to
/// ops@example.com through `smtp_port`.
fn config_text(ca: &Path, sites: &str, alerts: &str, smtp_port: u16, password_env: &str) -> String {
    let ca = ca.display();
    format!(
        r#"defaults:
  timeout: 5s
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
    )
}

fn write_config(dir: &Path, text: &str) -> config::Config {
    let path = dir.join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}")).config
}

/// Three sites of one WordPress on one origin.
fn three_sites(address: &str) -> String {
    ["blog", "shop", "news"]
        .iter()
        .map(|name| {
            format!(
                "  - {{ name: {name}, url: \"https://probe.test/?site={name}\", edge: \"{address}\", origins: [\"{address}\"], static_path: {STATIC_PATH} }}\n"
            )
        })
        .collect()
}

/// The incident number a mail names ("incident #7").
fn incident_number(text: &str) -> Option<u64> {
    let at = text.find("ncident #")? + "ncident #".len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Waits (at most 20 s) until the first site's page shows `cause` (PHP-FPM's workers take a
/// moment after it starts: a page caught then is another story).
async fn until_cause(config: &config::Config, cause: probe::diagnose::Cause) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let report = probe::probe_site(&config.sites[0].probe).await.unwrap();
        if report.diagnosis.cause == cause {
            return;
        }
        assert!(
            Instant::now() < until,
            "the site never showed {}: {}",
            cause.as_str(),
            report.diagnosis.summary
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// PHP-FPM stops under three sites of one origin, then comes back with the database refusing
/// WordPress, then the database is back: one [DOWN] listing the three, one [CHANGED] with the
/// same number, one [RECOVERED] with the start, the end and the true duration; every mail of
/// the incident threads under its opening and names its one number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_failure_under_probe_run_is_one_incident_told_once_per_turn() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_STORY_RUN", PASSWORD);
    let mut wp = WordPressLab::start();
    let server = SmtpServer::start(wp.lab.dir.path(), &wp.lab.pki, None);
    let address = wp.lab.origin.address();
    let text = config_text(
        &wp.lab.pki.ca_path,
        &three_sites(&address),
        "  confirm_retries: 0\n  confirm_runs: 1\n  recover_runs: 2",
        server.port,
        "PROBE_TEST_SMTP_PASSWORD_STORY_RUN",
    );
    let config = write_config(wp.lab.dir.path(), &text);
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();

    let pass = run_once(&config, &mut store, minute(0)).await.unwrap();
    assert_eq!(pass.worst(), probe::Status::Ok);
    wp.lab.origin.fpm.stop();
    run_once(&config, &mut store, minute(1)).await.unwrap();
    let mails = server.messages();
    assert_eq!(mails.len(), 1, "{:#?}", server.subjects());
    assert_eq!(
        subject(&mails[0]),
        "[DOWN] 3 sites on 127.0.0.1: the web server cannot reach PHP-FPM"
    );
    let opening = decoded(&mails[0]);
    for name in ["blog", "shop", "news"] {
        assert!(
            opening.contains(&format!(
                "  {name} https://probe.test/?site={name} (fpm_unreachable), failing since "
            )),
            "{opening}"
        );
    }
    let number = incident_number(&opening).expect("the opening names its incident");

    // PHP-FPM back, the database refusing WordPress: the same incident, a new cause, one mail.
    wp.db
        .sql("ALTER USER 'wp'@'localhost' IDENTIFIED BY 'not the password';");
    wp.lab.origin.fpm = PhpFpm::start(wp.lab.dir.path(), &PoolSettings::default());
    until_cause(&config, probe::diagnose::Cause::DatabaseUnreachable).await;
    run_once(&config, &mut store, minute(2)).await.unwrap();
    let mails = server.messages();
    assert_eq!(mails.len(), 2, "{:#?}", server.subjects());
    assert_eq!(
        subject(&mails[1]),
        "[CHANGED] 3 sites on 127.0.0.1: now WordPress cannot reach its database (was fpm_unreachable)"
    );
    let changed = decoded(&mails[1]);
    assert_eq!(incident_number(&changed), Some(number), "{changed}");
    for name in ["blog", "shop", "news"] {
        assert!(
            changed.contains(&format!(
                "  {name} https://probe.test/?site={name} (fpm_unreachable → database_unreachable): "
            )),
            "{changed}"
        );
    }

    // The database back: two healthy runs, one recovery for the three.
    wp.db.sql("ALTER USER 'wp'@'localhost' IDENTIFIED BY 'wp';");
    until_cause(&config, probe::diagnose::Cause::Ok).await;
    run_once(&config, &mut store, minute(3)).await.unwrap();
    assert_eq!(server.messages().len(), 2, "recovering, not recovered yet");
    run_once(&config, &mut store, minute(4)).await.unwrap();
    let mails = server.messages();
    assert_eq!(mails.len(), 3, "{:#?}", server.subjects());
    assert_eq!(
        subject(&mails[2]),
        "[RECOVERED] 3 sites on 127.0.0.1 after 2 minutes"
    );
    let end = decoded(&mails[2]);
    assert_eq!(incident_number(&end), Some(number), "{end}");
    assert!(
        // From the first failing run to the first healthy one (not the one that confirmed it).
        end.contains("Down from 2027-01-15 08:01:00 to 08:03:00 UTC: 2 minutes."),
        "{end}"
    );
    for name in ["blog", "shop", "news"] {
        assert!(
            end.contains(&format!(
                "  {name} https://probe.test/?site={name}: down from 2027-01-15 08:01:00 to 08:03:00 UTC (2 minutes)"
            )),
            "{end}"
        );
    }
    // One thread: the later mails answer the opening.
    let root = mails[0]
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap();
    for later in &mails[1..] {
        assert!(later.contains(&format!("In-Reply-To: {root}")), "{later}");
    }
    for mail in &mails {
        let text = decoded(mail);
        assert!(!text.contains(" ago"), "{text}");
        assert!(!text.contains(" 0m") && !text.contains("after 0"), "{text}");
    }
    // The store keeps each site's record, all under the one number; the feeds show one.
    let incidents = store.incidents(minute(0)).unwrap();
    assert_eq!(incidents.len(), 3);
    assert!(incidents
        .iter()
        .all(|i| i.number == number && i.closed_at.is_some()));
}

/// Two sites on a pool of three workers whose pages take 2.5 s: probe takes turns at the
/// origin, so the pool is never full of probe's own requests. For several passes nothing is
/// mailed and nowhere is the pool called saturated: the pages are slow PHP (`origin_slow`, a
/// degraded finding); once that has lasted the warning's confirmation, one warning tells it
/// for both sites — and still nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_is_merely_slow_is_never_called_saturated_and_lasting_is_one_warning() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_STORY_SLOW", PASSWORD);
    let settings = OriginSettings {
        pool: PoolSettings {
            max_children: 3,
            status_path: true,
            ..PoolSettings::default()
        },
        ..OriginSettings::default()
    };
    let lab = Lab::start(&settings);
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    let address = lab.origin.address();
    let sites: String = ["blog", "shop"]
        .iter()
        .map(|name| {
            format!(
                "  - {{ name: {name}, url: \"https://probe.test/sleep.php?ms=2500&site={name}\", edge: \"{address}\", origins: [\"{address}\"], static_path: {STATIC_PATH}, fpm_status: /fpm-status }}\n"
            )
        })
        .collect();
    let text = config_text(
        &lab.pki.ca_path,
        &sites,
        "  confirm_retries: 1\n  confirm_runs: 2\n  warning: {confirm_runs: 3}",
        server.port,
        "PROBE_TEST_SMTP_PASSWORD_STORY_SLOW",
    );
    let config = write_config(lab.dir.path(), &text);
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let mut seen = Vec::new();
    for m in 0..2 {
        run_once_with_lines(&config, &mut store, minute(m), &mut seen).await;
    }
    assert!(server.subjects().is_empty(), "{:#?}", server.subjects());
    for m in 2..5 {
        run_once_with_lines(&config, &mut store, minute(m), &mut seen).await;
    }
    for (site, status, cause, summary) in &seen {
        assert_eq!(
            (status.as_str(), cause.as_str()),
            ("degraded", "origin_slow"),
            "{site}: {summary}"
        );
        assert!(!summary.contains("no free worker"), "{site}: {summary}");
    }
    let subjects = server.subjects();
    assert_eq!(
        subjects,
        ["[WARNING] 2 sites on 127.0.0.1: the origin answers too slowly"],
        "one warning for the two, once"
    );
    let text = decoded(&server.messages()[0]);
    assert!(
        text.contains("2 sites on 127.0.0.1 are degraded together (incident #"),
        "{text}"
    );
    assert!(text.contains("degraded since "), "{text}");
}

/// Runs one pass, collecting each site's (name, status, cause, summary).
async fn run_once_with_lines(
    config: &config::Config,
    store: &mut SqliteStore,
    at: time::OffsetDateTime,
    seen: &mut Vec<(String, String, String, String)>,
) {
    probe::schedule::run::run_once_with(config, store, at, &mut |site, report, _| {
        let d = &report.diagnosis;
        seen.push((
            site.to_string(),
            d.status.as_str().to_string(),
            d.cause.as_str().to_string(),
            d.summary.clone(),
        ));
    })
    .await
    .unwrap();
}

/// One certificate near its expiry presented by two sites: one warning naming both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_certificate_on_two_sites_is_one_warning() {
    use support::servers::{tls_server, Alpn, Behaviour};
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_STORY_CERT", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path());
    let server = SmtpServer::start(dir.path(), &pki, None);
    let start = minute(0);
    let leaf = pki.leaf_until(
        &[support::pki::SITE],
        start + time::Duration::days(10) + time::Duration::hours(12),
    );
    let tls = tls_server(&leaf, Alpn::H2AndHttp11, Behaviour::ok()).await;
    let address = tls.addr;
    let sites: String = ["blog", "shop"]
        .iter()
        .map(|name| {
            format!(
                "  - {{ name: {name}, url: \"https://probe.test/?site={name}\", edge: \"{address}\", origins: [\"{address}\"] }}\n"
            )
        })
        .collect();
    let text = config_text(
        &pki.ca_path,
        &sites,
        "  confirm_retries: 0",
        server.port,
        "PROBE_TEST_SMTP_PASSWORD_STORY_CERT",
    );
    let config = write_config(dir.path(), &text);
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    run_once(&config, &mut store, start).await.unwrap();
    run_once(&config, &mut store, start + time::Duration::minutes(1))
        .await
        .unwrap();
    let subjects = server.subjects();
    assert_eq!(subjects.len(), 1, "{subjects:#?}");
    assert!(
        subjects[0].starts_with("[WARNING] certificate ")
            && subjects[0].ends_with(" expires in 10 days (2 sites)"),
        "{}",
        subjects[0]
    );
    let text = decoded(&server.messages()[0]);
    assert!(text.contains("presented by: blog, shop"), "{text}");
    assert!(
        text.contains("certbot renew") || text.contains("renew"),
        "{text}"
    );
}

/// Waits (at most `within`) until the server holds `count` messages; returns when it did.
fn until_mails(server: &SmtpServer, count: usize, within: Duration) -> Instant {
    let until = Instant::now() + within;
    while server.messages().len() < count {
        assert!(
            Instant::now() < until,
            "{count} mails not there within {within:?}: {:#?}",
            server.subjects()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Instant::now()
}

/// The same shared failure under `probe watch`, each site on its own 1-second interval: the
/// three sites fail at moments apart, and still one [DOWN] lists them all; it leaves within a
/// couple of seconds of being decided; the recovery is one mail with the true span.
#[test]
fn a_shared_failure_under_probe_watch_is_one_mail_and_leaves_at_once() {
    let _serial = ONE_AT_A_TIME.blocking_lock();
    let lab = Lab::start(&OriginSettings::default());
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    let address = lab.origin.address();
    let sites: String = ["blog", "shop", "news"]
        .iter()
        .map(|name| {
            format!(
                "  - {{ name: {name}, url: \"https://probe.test/index.php?site={name}\", edge: \"{address}\", origins: [\"{address}\"], static_path: {STATIC_PATH} }}\n"
            )
        })
        .collect();
    let var = "PROBE_TEST_SMTP_PASSWORD_STORY_WATCH";
    let text = config_text(
        &lab.pki.ca_path,
        &sites,
        "  confirm_retries: 0\n  confirm_runs: 2\n  recover_runs: 2",
        server.port,
        var,
    )
    .replace(
        "  timeout: 5s\n  ca_file",
        "  timeout: 900ms\n  interval: 1s\n  ca_file",
    );
    let path = lab.dir.path().join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    let mut lab = lab;
    let mut watch = WatchProcess::start(&path, &[], &[(var, PASSWORD)]);
    watch.wait_for("watching", Duration::from_secs(10), |l| {
        field(l, "message") == "watching"
    });
    // Every site probed healthy once.
    let mut healthy: Vec<String> = Vec::new();
    while healthy.len() < 3 {
        let line = watch.wait_for("a healthy probe", Duration::from_secs(10), |l| {
            field(l, "message") == "probed"
        });
        let site = field(&line, "site").to_string();
        if !healthy.contains(&site) {
            healthy.push(site);
        }
    }
    lab.origin.fpm.stop();
    let opened = watch.wait_for("the shared opening", Duration::from_secs(20), |l| {
        field(l, "message") == "alert"
            && field(l, "transition") == "opened"
            && field(l, "group").starts_with("origin ")
    });
    let decided = Instant::now();
    let arrived = until_mails(&server, 1, Duration::from_secs(10));
    let took = arrived - decided;
    assert!(
        took < Duration::from_secs(3),
        "the opening took {took:?} to leave"
    );
    assert_eq!(
        subject(&server.messages()[0]),
        "[DOWN] 3 sites on 127.0.0.1: the web server cannot reach PHP-FPM",
        "{opened}"
    );
    let number = incident_number(&decoded(&server.messages()[0])).unwrap();
    assert_eq!(opened["fields"]["incident"], number);

    lab.origin.fpm = PhpFpm::start(lab.dir.path(), &PoolSettings::default());
    watch.wait_for("the shared recovery", Duration::from_secs(20), |l| {
        field(l, "message") == "alert" && field(l, "transition") == "recovered"
    });
    until_mails(&server, 2, Duration::from_secs(10));
    // Nothing else said meanwhile: one mail for the failure, one for its end.
    std::thread::sleep(Duration::from_secs(2));
    let subjects = server.subjects();
    assert_eq!(subjects.len(), 2, "{subjects:#?}");
    assert!(
        subjects[1].starts_with("[RECOVERED] 3 sites on 127.0.0.1 after "),
        "{}",
        subjects[1]
    );
    let end = decoded(&server.messages()[1]);
    assert_eq!(incident_number(&end), Some(number), "{end}");
    assert!(end.contains("Down from "), "{end}");
    assert!(!end.contains("after less than a second"), "{end}");
}
