//! A pool: two `probe watch` processes of one region sharing 1,000 sites through PostgreSQL 15
//! (started here). Each due site is claimed by one of them (`FOR UPDATE SKIP LOCKED`), so every
//! site is probed once per interval, never twice; both take a share; one killed with SIGKILL,
//! the other probes every site from the next interval on. A region whose probers all go silent
//! raises one "region offline" notice, and one when it is back.
//!
//! The sites are a closed loopback port (each probe ends at once in a refused connection): what
//! is under test is who probes what and when, not the sites.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::postgres::Postgres;
use support::{wait_until, Killed};

const SITES: usize = 1000;
/// Long enough that one prober of a debug build probes and stores all 1,001 sites per interval.
const INTERVAL_S: i64 = 10;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn watch(config: &std::path::Path, db: &Postgres, region: &str, log: &std::path::Path) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["watch", "-c"])
            .arg(config)
            .env("PROBE_DATABASE_URL", db.socket_url())
            .env("PROBE_REGION", region)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn two_probers_of_a_region_share_its_sites_and_take_over_from_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let closed = support::free_tcp_port();
    let mut text = format!(
        "defaults:\n  interval: {INTERVAL_S}s\n  timeout: 2s\nalerts:\n  confirm_retries: 0\nstore:\n  url_env: PROBE_DATABASE_URL\nsites:\n"
    );
    for i in 0..SITES {
        text.push_str(&format!(
            "  - {{ name: s{i}, url: \"http://127.0.0.1:{closed}/?s={i}\" }}\n"
        ));
    }
    // One site mails ops@, so the probers' own notices go there too (and no other site mails).
    text.push_str(&format!(
        "  - {{ name: watched, url: \"http://127.0.0.1:{closed}/\", alert_to: [ops@example.com] }}\n"
    ));
    let config = dir.path().join("probes.yaml");
    std::fs::write(&config, text).unwrap();
    let first = watch(&config, &db, "eu-west", &dir.path().join("first.log"));
    let mut second = watch(&config, &db, "eu-west", &dir.path().join("second.log"));
    wait_until("the schedule shared", Duration::from_secs(30), || {
        db.count(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'probe' AND tablename = 'schedule'",
        ) == 1
            && db.count("SELECT COUNT(*) FROM probe.schedule") == SITES as i64 + 1
    });
    // Three intervals of both at work.
    let start = now() + 1;
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_S as u64 + 2));
    let end = now() - 1;
    let probed = db.count(&format!(
        "SELECT COUNT(DISTINCT site) FROM probe.results WHERE at BETWEEN {start} AND {end}"
    ));
    assert_eq!(probed, SITES as i64 + 1, "every site probed");
    // Never twice in one interval: a site's results are an interval apart (to the second).
    let closest = db.count(&format!(
        "SELECT COALESCE(MIN(gap), 999) FROM (
             SELECT at - lag(at) OVER (PARTITION BY site ORDER BY at, id) AS gap
             FROM probe.results WHERE at >= {start}) g"
    ));
    assert!(
        closest >= INTERVAL_S - 1,
        "a site probed twice within {closest} s"
    );
    let per_site = db.count(&format!(
        "SELECT MIN(n) FROM (SELECT COUNT(*) AS n FROM probe.results
                             WHERE at BETWEEN {start} AND {end} GROUP BY site) c"
    ));
    let total = db.count(&format!(
        "SELECT COUNT(*) FROM probe.results WHERE at BETWEEN {start} AND {end}"
    ));
    assert!(
        per_site >= 2,
        "each site probed every interval ({per_site}; {total} results in {} s)",
        end - start
    );
    let holders = db.count("SELECT COUNT(DISTINCT holder) FROM probe.schedule");
    assert_eq!(holders, 2, "both probers take a share");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM probe.probers WHERE region = 'eu-west'"),
        2
    );

    // One dies: from the next interval on, the other probes every site.
    second.0.kill().unwrap();
    second.0.wait().unwrap();
    let killed_at = now();
    std::thread::sleep(Duration::from_secs(INTERVAL_S as u64 + 1));
    let from = now();
    std::thread::sleep(Duration::from_secs(INTERVAL_S as u64 + 2));
    let taken = db.count(&format!(
        "SELECT COUNT(DISTINCT site) FROM probe.results WHERE at >= {from}"
    ));
    assert_eq!(
        taken,
        SITES as i64 + 1,
        "every site probed after the kill at {killed_at}"
    );
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT holder) FROM probe.schedule"),
        1
    );

    // The whole region goes silent: one "region offline" notice, raised by a prober of another
    // region; when a prober of it is back, one "online".
    drop(first);
    let other = watch(&config, &db, "us-east", &dir.path().join("other.log"));
    let notices = || {
        db.sql(
            "probe",
            "SELECT string_agg(key, ' ' ORDER BY id) FROM probe.outbox WHERE key LIKE '@region:eu-west/%'",
        )
        .trim()
        .to_string()
    };
    let phase = || {
        db.sql(
            "probe",
            "SELECT COALESCE(state::json->>'phase', '') FROM probe.alert_state WHERE site = '@region:eu-west'",
        )
        .trim()
        .to_string()
    };
    wait_until("eu-west called offline", Duration::from_secs(60), || {
        phase() == "down"
    });
    assert_eq!(notices(), "@region:eu-west/1/offline#mail-ops@example.com");
    let back = watch(&config, &db, "eu-west", &dir.path().join("back.log"));
    wait_until("eu-west back", Duration::from_secs(30), || phase() == "ok");
    let incident = db.sql(
        "probe",
        "SELECT state::json->>'incident' FROM probe.alert_state WHERE site = '@region:eu-west'",
    );
    assert_eq!(incident.trim(), "1", "one offline period, counted once");
    assert_eq!(
        notices(),
        "@region:eu-west/1/offline#mail-ops@example.com @region:eu-west/1/online#mail-ops@example.com"
    );
    drop(back);
    drop(other);
}
