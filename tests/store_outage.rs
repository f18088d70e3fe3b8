//! PostgreSQL stopped for a minute under a running `probe watch`, then started again: the
//! watch keeps probing, says so once, keeps the results in memory and writes them all when the
//! database is back, and the site that broke meanwhile gets its alert queued exactly once.
//! Real parts: PostgreSQL 15, Python's http.server as the site, the probe binary.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::postgres::Postgres;
use support::{wait_until, Killed};

/// How long the database is down: a restart, an upgrade, a failover.
const OUTAGE: Duration = Duration::from_secs(60);

#[test]
fn a_database_outage_loses_no_result_and_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Postgres::start(dir.path());
    let port = support::free_tcp_port();
    let site = Killed(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the site listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let config = dir.path().join("probes.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults:\n  interval: 1s\n  timeout: 900ms\nsites:\n  - {{ name: a, url: \"http://127.0.0.1:{port}/\" }}\n  - {{ name: b, url: \"http://127.0.0.1:{port}/\" }}\nalerts:\n  to: [ops@example.com]\n  confirm_retries: 0\n  confirm_runs: 1\n  recover_runs: 1\nstore:\n  url_env: PROBE_DATABASE_URL\n"
        ),
    )
    .unwrap();
    let log = dir.path().join("watch.log");
    let mut watch = Killed(
        Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["watch", "-c"])
            .arg(&config)
            // Over TCP with the password: the outage's log lines must not show it.
            .env("PROBE_DATABASE_URL", db.tcp_url())
            .env("PROBE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let results = |db: &Postgres, site: &str, from: i64, to: i64| {
        db.count(&format!(
            "SELECT COUNT(*) FROM probe.results WHERE site = '{site}' AND at BETWEEN {from} AND {to}"
        ))
    };
    wait_until("the store made", Duration::from_secs(30), || {
        if let Some(status) = watch.0.try_wait().unwrap() {
            panic!(
                "the watch ended ({status}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        db.count(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'probe' AND tablename = 'outbox'",
        ) == 1
    });
    wait_until("results stored", Duration::from_secs(30), || {
        results(&db, "a", 0, i64::MAX) >= 2 && results(&db, "b", 0, i64::MAX) >= 2
    });

    // The database goes away; a few seconds in, the site breaks too.
    let down_at = time::OffsetDateTime::now_utc().unix_timestamp();
    db.stop();
    std::thread::sleep(Duration::from_secs(5));
    drop(site);
    std::thread::sleep(OUTAGE - Duration::from_secs(5));
    assert!(
        watch.0.try_wait().unwrap().is_none(),
        "the watch survives the outage"
    );
    let up_at = time::OffsetDateTime::now_utc().unix_timestamp();
    db.resume();
    let said = || {
        let mut text = String::new();
        std::fs::File::open(&log)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    };
    let until = Instant::now() + Duration::from_secs(30);
    while !said().contains("the store is back") {
        assert!(
            Instant::now() < until,
            "the spool not written within 30 s:\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every second of the outage has its results: probed, kept, written (1 s interval with a
    // little jitter: at least 45 in the 56 s between its edges).
    for name in ["a", "b"] {
        let kept = results(&db, name, down_at + 2, up_at - 2);
        assert!(kept >= 45, "site {name}: {kept} results from the outage");
    }
    // The site broke during the outage: one alert each, queued once, after the healthy runs.
    let opened = db.count(
        "SELECT COUNT(*) FROM probe.outbox WHERE key LIKE '_/%/opened#mail-ops@example.com'",
    );
    assert_eq!(opened, 2);
    // Nothing else but the same incidents' cause changes (refused, then maybe a timeout while
    // the server went away): no second incident, no recovery.
    let others = db.sql(
        "probe",
        "SELECT string_agg(o.key, ' ') FROM probe.outbox o
         WHERE NOT EXISTS (SELECT 1 FROM probe.outbox p
                           WHERE p.key LIKE '%/opened#mail-ops@example.com'
                             AND split_part(p.key, '/', 1) = split_part(o.key, '/', 1)
                             AND split_part(p.key, '/', 2) = split_part(o.key, '/', 2))",
    );
    assert!(others.trim().is_empty(), "{others}");
    let incidents = db.count(&format!(
        "SELECT COUNT(*) FROM probe.incidents WHERE opened_at BETWEEN {down_at} AND {up_at}"
    ));
    assert_eq!(
        incidents,
        2,
        "opened when the site broke ({down_at}..{up_at}), not when the database came back: {}\n{}",
        db.sql("probe", "SELECT string_agg(site || ' ' || number || ' ' || opened_at, '; ') FROM probe.incidents"),
        said()
    );
    // Said once each, however many results waited.
    let text = said();
    assert_eq!(text.matches("cannot write the store").count(), 1, "{text}");
    assert_eq!(text.matches("the store is back").count(), 1, "{text}");
    assert!(!text.contains("cannot store the result"), "{text}");
    assert!(!text.contains(support::postgres::PASSWORD), "{text}");
    assert!(
        text.contains("postgresql://probe@127.0.0.1"),
        "the store named: {text}"
    );

    // Stopped gracefully, it exits 0.
    Command::new("kill")
        .args(["-TERM", &watch.0.id().to_string()])
        .status()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = watch.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the watch stops within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}
