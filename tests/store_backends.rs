//! Both stores, one suite: every scenario below runs against an SQLite file and against a real
//! PostgreSQL 15 started here (initdb in a temp dir, unix socket and loopback port), a fresh
//! store each. Then what only PostgreSQL has: its schema of its own, a URL with a password that
//! never shows, several probers writing at once, and the database restarted under a running
//! store.

mod support;

use std::process::Command;
use std::time::Duration;

use probe::alert::group::{GroupKind, GroupPhase, GroupState};
use probe::alert::{AlertPhase, AlertState, Severity};
use probe::diagnose::Cause;
use probe::store::{NewMessage, PostgresStore, RegionalRun, RunRecord, SqliteStore, Store};
use probe::ProbeReport;
use support::postgres::{Postgres, PASSWORD};
use time::OffsetDateTime;

use support::{fixture as report, minute as at};

fn message(key: &str) -> NewMessage {
    NewMessage {
        channel: probe::store::Channel::Mail,
        key: key.into(),
        notification: key.into(),
        recipients: vec!["ops@example.com".into()],
        subject: format!("[DOWN] {key}"),
        body_text: "text".into(),
        body_html: "<p>html</p>".into(),
        thread: None,
    }
}

fn down(incident: u64, cause: Cause, since: i64) -> AlertState {
    AlertState {
        phase: AlertPhase::Down,
        streak: 0,
        cause: Some(cause),
        since: Some(at(since)),
        last_notified: Some(at(since)),
        incident,
        notified: 1,
        ..AlertState::default()
    }
}

fn totals(store: &dyn Store, since: OffsetDateTime) -> (u32, u32) {
    store
        .uptime_hours(since)
        .unwrap()
        .iter()
        .fold((0, 0), |(t, d), (_, h)| (t + h.total, d + h.down))
}

/// A scenario of the suite: given a new, empty store.
type Scenario = fn(&mut dyn Store);

const SUITE: &[(&str, Scenario)] = &[
    ("an incident's life", an_incidents_life),
    ("the outbox", the_outbox),
    ("a batch of runs", a_batch_of_runs),
    ("states without results", states_without_results),
    ("reads in byte order", reads_in_byte_order),
    ("a shared incident told once", a_shared_incident_told_once),
];

/// An incident opens with its mail queued in the same transaction, changes cause, recovers; the
/// feeds' reads and retention see it all.
fn an_incidents_life(store: &mut dyn Store) {
    let failing = report("lab_fpm_stopped");
    let healthy = report("lab_healthy");
    let opened = down(1, Cause::FpmUnreachable, 0);
    let run = |store: &mut dyn Store, minute, report, state, messages: &[NewMessage]| {
        store
            .record_run(&RunRecord {
                site: "shop",
                at: at(minute),
                report,
                state,
                messages,
            })
            .unwrap();
    };
    run(store, 0, &failing, &opened, &[message("shop/1/opened")]);
    assert_eq!(store.alert_state("shop").unwrap(), opened);
    assert_eq!(store.alert_state("nobody").unwrap(), AlertState::default());
    // Decided again (a rerun): not queued twice.
    run(store, 1, &failing, &opened, &[message("shop/1/opened")]);
    assert_eq!(store.due_messages(at(1)).unwrap().len(), 1);
    let changed = down(1, Cause::OriginRefused, 0);
    run(
        store,
        3,
        &failing,
        &changed,
        &[message("shop/1/cause/origin_refused")],
    );
    // The same cause again adds no cause to the history.
    run(store, 4, &failing, &changed, &[]);
    let recovered = AlertState {
        incident: 1,
        ..AlertState::default()
    };
    run(
        store,
        5,
        &healthy,
        &recovered,
        &[message("shop/1/recovered")],
    );

    let latest = store.latest_results().unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!((latest[0].site.as_str(), latest[0].at), ("shop", at(5)));
    assert_eq!(latest[0].report.status, healthy.status);
    let incidents = store.incidents(at(0)).unwrap();
    assert_eq!(incidents.len(), 1);
    let incident = &incidents[0];
    assert_eq!(
        (incident.number, incident.opened_at, incident.closed_at),
        (1, at(0), Some(at(5)))
    );
    let causes: Vec<&str> = incident.causes.iter().map(|c| c.cause.as_str()).collect();
    assert_eq!(causes, ["fpm_unreachable", "origin_refused"]);
    assert_eq!(incident.causes[0].evidence, failing.diagnosis.evidence);
    assert!(store.incidents(at(6)).unwrap().is_empty(), "closed before");
    assert_eq!(totals(store, at(0)), (5, 4));

    // Retention removes old results, not incidents, the outbox or uptime counts.
    assert_eq!(store.prune_results(at(2)).unwrap(), 2);
    assert_eq!(store.prune_results(at(2)).unwrap(), 0);
    assert_eq!(store.incidents(at(0)).unwrap().len(), 1);
    assert_eq!(store.undelivered().unwrap().len(), 3);
    assert_eq!(totals(store, at(0)), (5, 4));
    assert!(store.prune_uptime(at(24 * 60)).unwrap() >= 1);
    assert_eq!(totals(store, at(0)), (0, 0));
}

/// Queued, failed and retried, sent, given up: each delivery's life in the outbox.
fn the_outbox(store: &mut dyn Store) {
    let healthy = report("lab_healthy");
    store
        .record_run(&RunRecord {
            site: "shop",
            at: at(0),
            report: &healthy,
            state: &AlertState::default(),
            messages: &[
                message("shop/1/opened#mail-a@example.com"),
                message("shop/1/opened#mail-b@example.com"),
            ],
        })
        .unwrap();
    let due = store.due_messages(at(0)).unwrap();
    assert_eq!(due.len(), 2);
    assert_eq!(
        (due[0].key.as_str(), due[0].attempts, &due[0].recipients),
        (
            "shop/1/opened#mail-a@example.com",
            0,
            &vec!["ops@example.com".to_string()]
        )
    );
    assert_eq!(due[0].body_html, "<p>html</p>");
    store
        .mark_failed(due[0].id, "421 try later", at(2))
        .unwrap();
    assert_eq!(store.due_messages(at(1)).unwrap().len(), 1);
    let again = store.due_messages(at(2)).unwrap();
    assert_eq!((again.len(), again[0].attempts), (2, 1));
    store.mark_sent(again[0].id, at(2)).unwrap();
    store
        .mark_given_up(again[1].id, "550 5.1.1 no such user", at(2))
        .unwrap();
    assert!(store.due_messages(at(100_000)).unwrap().is_empty());
    let undelivered = store.undelivered().unwrap();
    assert_eq!(undelivered.len(), 1, "sent is gone, given up stays listed");
    let given_up = &undelivered[0];
    assert_eq!(
        given_up.last_error.as_deref(),
        Some("550 5.1.1 no such user")
    );
    assert_eq!(
        (
            given_up.given_up_at,
            given_up.next_attempt_at,
            given_up.created_at
        ),
        (Some(at(2)), None, at(0))
    );
}

/// A pass's batch in one call: many sites, one of them twice (its last run wins the state and
/// the latest report; both count for uptime).
fn a_batch_of_runs(store: &mut dyn Store) {
    let failing = report("lab_fpm_stopped");
    let healthy = report("lab_healthy");
    let names: Vec<String> = (0..300).map(|i| format!("site-{i:03}")).collect();
    let opened = down(1, Cause::FpmUnreachable, 0);
    let idle = AlertState::default();
    let mut runs: Vec<RunRecord<'_>> = names
        .iter()
        .map(|name| RunRecord {
            site: name,
            at: at(0),
            report: &healthy,
            state: &idle,
            messages: &[],
        })
        .collect();
    let queued = [message("site-007/1/opened")];
    runs.push(RunRecord {
        site: "site-007",
        at: at(1),
        report: &failing,
        state: &opened,
        messages: &queued,
    });
    store.record_runs(&runs).unwrap();
    assert_eq!(store.latest_results().unwrap().len(), 300);
    assert_eq!(store.alert_state("site-007").unwrap(), opened);
    assert_eq!(
        store.alert_state("site-008").unwrap(),
        AlertState::default()
    );
    assert_eq!(totals(store, at(0)), (301, 1));
    assert_eq!(store.due_messages(at(1)).unwrap().len(), 1);
    let incidents = store.incidents(at(0)).unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].site, "site-007");
    let latest = store.latest_results().unwrap();
    let seven = latest.iter().find(|l| l.site == "site-007").unwrap();
    assert_eq!((seven.at, seven.report.status), (at(1), failing.status));
}

/// The prober's own state (no result) and its notice, atomically; a notice decided twice is
/// queued once.
fn states_without_results(store: &mut dyn Store) {
    let cut_off = AlertState {
        phase: AlertPhase::Down,
        incident: 1,
        ..AlertState::default()
    };
    for _ in 0..2 {
        store
            .record_state("(prober)", at(0), &cut_off, &[message("prober/1/cut-off")])
            .unwrap();
    }
    assert_eq!(store.alert_state("(prober)").unwrap(), cut_off);
    assert_eq!(store.due_messages(at(0)).unwrap().len(), 1);
    assert!(store.latest_results().unwrap().is_empty());
}

/// A shared incident is written by a site's decision, its number from the store's one count
/// of incidents, and told only over the state it was planned from: the told state and its
/// messages together, or (another prober told it meanwhile) nothing at all.
fn a_shared_incident_told_once(store: &mut dyn Store) {
    let failing = report("lab_fpm_stopped");
    let runs = [RegionalRun {
        site: "a",
        at: at(0),
        report: &failing,
        state: Some(&AlertState::default()),
    }];
    let mut numbers = Vec::new();
    store
        .record_regional("default", &runs, &mut |_, _, _, ledger| {
            numbers = vec![ledger.next_incident()?, ledger.next_incident()?];
            let mut shared = GroupState::begin(
                "origin 203.0.113.10",
                "on 203.0.113.10",
                Severity::Down,
                GroupKind::Failure,
                numbers[0],
                at(0),
            );
            shared.join(
                "a",
                "https://a.example/",
                at(0),
                at(0),
                &failing.diagnosis,
                0,
            );
            ledger.put_shared(&shared)?;
            assert_eq!(
                ledger.shared("origin 203.0.113.10")?.as_ref(),
                Some(&shared)
            );
            Ok(None)
        })
        .unwrap();
    assert_eq!(numbers[1], numbers[0] + 1, "one count: {numbers:?}");
    let stored = store.shared_states().unwrap();
    assert_eq!(stored.len(), 1);
    let before = stored[0].clone();
    let mut told = before.clone();
    told.phase = GroupPhase::Open;
    let saved = store
        .record_shared(at(1), &before, &told, &[message("origin/1/opened")])
        .unwrap();
    assert!(saved);
    // Another prober planned from the old state: refused, nothing written.
    let stale = store
        .record_shared(at(2), &before, &before, &[message("origin/1/again")])
        .unwrap();
    assert!(!stale);
    assert_eq!(store.shared_states().unwrap(), [told]);
    let due: Vec<String> = store
        .due_messages(at(2))
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(due, ["origin/1/opened"]);
}

/// Sites come back in byte order (the feeds tally one site at a time in that order), whatever
/// the database's collation.
fn reads_in_byte_order(store: &mut dyn Store) {
    let healthy = report("lab_healthy");
    let names = ["b-site", "B-site", "a-site", "Zeta", "é-site", "_x"];
    let idle = AlertState::default();
    let runs: Vec<RunRecord<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| RunRecord {
            site: name,
            at: at(i as i64 * 61),
            report: &healthy,
            state: &idle,
            messages: &[],
        })
        .collect();
    store.record_runs(&runs).unwrap();
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort();
    let latest: Vec<String> = store
        .latest_results()
        .unwrap()
        .into_iter()
        .map(|l| l.site)
        .collect();
    assert_eq!(latest, sorted);
    let hours: Vec<String> = store
        .uptime_hours(at(0))
        .unwrap()
        .into_iter()
        .map(|(site, _)| site)
        .collect();
    let mut grouped = hours.clone();
    grouped.dedup();
    assert_eq!(
        grouped, sorted,
        "each site's hours together, sites in byte order"
    );
}

#[test]
fn the_sqlite_store_passes_the_suite() {
    for (name, scenario) in SUITE {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("probe.sqlite")).unwrap();
        eprintln!("sqlite: {name}");
        scenario(&mut store);
    }
}

#[test]
fn the_postgresql_store_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    for (index, (name, scenario)) in SUITE.iter().enumerate() {
        let database = format!("suite_{index}");
        db.sql(
            "postgres",
            &format!("CREATE DATABASE {database} OWNER probe"),
        );
        let url = db.socket_url().replace("/probe?", &format!("/{database}?"));
        let mut store = PostgresStore::open(&url).unwrap();
        eprintln!("postgresql: {name}");
        scenario(&mut store);
        // Nothing outside the schema of its own.
        let elsewhere: i64 = db
            .sql(
                &database,
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .parse()
            .unwrap();
        assert_eq!(elsewhere, 0, "{name}: tables outside schema probe");
    }
}

#[test]
fn postgresql_migrates_once_refuses_newer_schemas_and_foreign_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let url = db.socket_url();
    drop(PostgresStore::open(&url).unwrap());
    drop(PostgresStore::open(&url).unwrap());
    let sqlite = {
        let file = dir.path().join("probe.sqlite");
        drop(SqliteStore::open(&file).unwrap());
        rusqlite::Connection::open(&file)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
            .unwrap()
    };
    assert_eq!(
        db.count("SELECT version FROM probe.probe_schema"),
        sqlite,
        "both backends at the same schema version"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM probe.probe_schema"), 1);

    db.sql("probe", "UPDATE probe.probe_schema SET version = 99");
    let e = PostgresStore::open(&url).err().expect("refused");
    assert!(e.to_string().contains("schema version 99 is newer"), "{e}");

    // Another program's schema named probe: refused, left as it was.
    db.sql("postgres", "CREATE DATABASE other OWNER probe");
    db.sql(
        "other",
        "CREATE SCHEMA probe; CREATE TABLE probe.invoices (id INT); INSERT INTO probe.invoices VALUES (7)",
    );
    let other = url.replace("/probe?", "/other?");
    let e = PostgresStore::open(&other).err().expect("refused");
    let text = e.to_string();
    assert!(
        text.contains("not a probe store") && text.contains("invoices"),
        "{text}"
    );
    assert_eq!(
        db.sql(
            "other",
            "SELECT string_agg(table_name, ',') FROM information_schema.tables WHERE table_schema = 'probe'"
        ),
        "invoices"
    );
}

#[test]
fn a_password_in_the_url_is_used_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    // Over TCP the server asks for the password (SCRAM): the right one gets in.
    let mut store = PostgresStore::open(&db.tcp_url()).unwrap();
    assert!(!store.shown().contains(PASSWORD), "{}", store.shown());
    assert_eq!(store.alert_state("x").unwrap(), AlertState::default());
    store
        .record_state("x", at(0), &AlertState::default(), &[])
        .unwrap();

    // A wrong password, a wrong port: errors that name the database, never the password.
    let wrong = db.tcp_url().replace(PASSWORD, "not-the-s3cret-password");
    let e = PostgresStore::open(&wrong).err().expect("refused");
    let text = e.to_string();
    assert!(text.contains("postgresql://probe@127.0.0.1"), "{text}");
    assert!(!text.contains("not-the-s3cret-password"), "{text}");
    assert!(text.contains("28P01"), "the server's reason: {text}");
    assert!(!e.is_transient(), "a wrong password stays wrong: {text}");
    let closed = format!(
        "postgresql://probe:{PASSWORD}@127.0.0.1:{}/probe?connect_timeout=2",
        support::free_tcp_port()
    );
    let e = PostgresStore::open(&closed).err().expect("refused");
    let text = e.to_string();
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(e.is_transient(), "nothing listening may pass: {text}");

    // The CLI says the same: check-config shows the store without its password.
    let config = dir.path().join("probes.yaml");
    std::fs::write(
        &config,
        "sites:\n  - url: http://127.0.0.1:9/\nstore:\n  url_env: PROBE_DATABASE_URL\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["check-config", "-c"])
        .arg(&config)
        .env("PROBE_DATABASE_URL", db.tcp_url())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("store: postgresql://probe@127.0.0.1"),
        "{shown}"
    );
    assert!(!shown.contains(PASSWORD), "{shown}");
}

/// Several probers write the same sites at once (regions, a pool): every run is kept, no
/// deadlock surfaces, and each site ends with one state and one latest report.
#[test]
fn probers_writing_together_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let url = db.socket_url();
    drop(PostgresStore::open(&url).unwrap());
    let healthy = report("lab_healthy");
    let idle = AlertState::default();
    let names: Vec<String> = (0..200).map(|i| format!("site-{i:03}")).collect();
    std::thread::scope(|scope| {
        for prober in 0..4 {
            let (url, names, healthy, idle) = (&url, &names, &healthy, &idle);
            scope.spawn(move || {
                let mut store = PostgresStore::open(url).unwrap();
                for pass in 0..5 {
                    // Each prober in its own order: the store sorts its row locks.
                    let mut order: Vec<&String> = names.iter().collect();
                    order.rotate_left(prober * 37 % names.len());
                    let runs: Vec<RunRecord<'_>> = order
                        .iter()
                        .map(|name| RunRecord {
                            site: name,
                            at: at(pass),
                            report: healthy,
                            state: idle,
                            messages: &[],
                        })
                        .collect();
                    store.record_runs(&runs).unwrap();
                }
            });
        }
    });
    assert_eq!(db.count("SELECT COUNT(*) FROM probe.results"), 4 * 5 * 200);
    assert_eq!(db.count("SELECT COUNT(*) FROM probe.latest"), 200);
    assert_eq!(db.count("SELECT SUM(total) FROM probe.uptime_hourly"), 4000);
}

/// The database restarted under a running store: the call during the outage fails as
/// transient, and the next one after it reconnects by itself.
#[test]
fn a_restarted_database_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Postgres::start(dir.path());
    let mut store = PostgresStore::open(&db.socket_url()).unwrap();
    let healthy = report("lab_healthy");
    let idle = AlertState::default();
    let run = |minute| RunRecord {
        site: "shop",
        at: at(minute),
        report: &healthy,
        state: &idle,
        messages: &[],
    };
    store.record_run(&run(0)).unwrap();
    db.stop();
    let e = store.record_run(&run(1)).expect_err("no database");
    assert!(e.is_transient(), "{e}");
    assert!(store.alert_state("shop").is_err());
    db.resume();
    store.record_run(&run(2)).unwrap();
    assert_eq!(totals(&store, at(0)), (2, 0));
    assert_eq!(
        store.latest_results().unwrap()[0].at,
        at(2),
        "{}",
        db.log().lines().last().unwrap_or_default()
    );
}

#[test]
fn the_harness_stops_postgres_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let port;
    {
        let db = Postgres::start(dir.path());
        port = db.port;
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "postgres still listening after drop"
    );
}

/// Everything a store's reads show, for comparing two stores.
fn everything(store: &dyn Store, sites: &[&str]) -> String {
    let states: Vec<_> = sites
        .iter()
        .map(|s| store.alert_state(s).unwrap())
        .collect();
    let regions: Vec<_> = sites
        .iter()
        .map(|s| store.region_state(s, "default").unwrap())
        .collect();
    let latest: Vec<_> = store
        .latest_results()
        .unwrap()
        .into_iter()
        .map(|l| (l.site, l.at, serde_json::to_string(&l.report).unwrap()))
        .collect();
    let due = store.due_messages(at(100_000)).unwrap();
    format!(
        "{states:?}\n{regions:?}\n{latest:?}\n{:?}\n{:?}\n{:?}\n{due:?}",
        store.incidents(at(0)).unwrap(),
        store.uptime_hours(at(0)).unwrap(),
        store.undelivered().unwrap(),
    )
}

/// `probe store migrate` copies a SQLite store into a new PostgreSQL one: the same states,
/// history, incidents with their causes, uptime and outbox; the copy goes on working (new
/// incidents and messages take new ids), and a second copy into it is refused.
#[test]
fn a_sqlite_store_moves_to_postgresql_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let file = dir.path().join("probe.sqlite");
    let mut sqlite = SqliteStore::open(&file).unwrap();
    an_incidents_life_kept(&mut sqlite);
    // The outbox in every state: one sent, one failed once, one given up.
    let due = sqlite.due_messages(at(5)).unwrap();
    assert_eq!(due.len(), 3);
    sqlite.mark_sent(due[0].id, at(6)).unwrap();
    sqlite
        .mark_failed(due[1].id, "421 try later", at(8))
        .unwrap();
    sqlite
        .mark_given_up(due[2].id, "550 no such user", at(6))
        .unwrap();
    let before = everything(&sqlite, &["shop", "cafe"]);
    let results = sqlite.result_count("shop").unwrap();
    drop(sqlite);

    let migrate = |to: &str| {
        Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["store", "migrate", "--from"])
            .arg(&file)
            .args(["--to-env", "PROBE_TEST_MIGRATE_URL"])
            .env("PROBE_TEST_MIGRATE_URL", to)
            .output()
            .unwrap()
    };
    let output = migrate(&db.tcp_url());
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{shown}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(shown.contains("incident_causes  2 rows"), "{shown}");
    assert!(
        shown.contains("into postgresql://probe@127.0.0.1"),
        "{shown}"
    );
    assert!(!shown.contains(PASSWORD), "{shown}");

    let mut postgres = PostgresStore::open(&db.socket_url()).unwrap();
    assert_eq!(everything(&postgres, &["shop", "cafe"]), before);
    assert_eq!(postgres.result_count("shop").unwrap(), results);
    // The copy goes on: a new incident and its mail get ids after the copied ones.
    let failing = report("lab_fpm_stopped");
    postgres
        .record_run(&RunRecord {
            site: "shop",
            at: at(10),
            report: &failing,
            state: &down(2, Cause::FpmUnreachable, 10),
            messages: &[message("shop/2/opened")],
        })
        .unwrap();
    assert_eq!(postgres.incidents(at(0)).unwrap().len(), 2);
    assert!(postgres
        .due_messages(at(100_000))
        .unwrap()
        .iter()
        .any(|m| m.key == "shop/2/opened"));

    // Into a store that holds data: refused, nothing changed, the file untouched.
    let again = migrate(&db.tcp_url());
    let said = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(3), "{said}");
    assert!(said.contains("holds probe data already"), "{said}");
    assert_eq!(postgres.incidents(at(0)).unwrap().len(), 2);
    let sqlite = SqliteStore::open(&file).unwrap();
    assert_eq!(everything(&sqlite, &["shop", "cafe"]), before);
}

/// An incident's life, left in the store (no pruning), beside a second site.
fn an_incidents_life_kept(store: &mut dyn Store) {
    let failing = report("lab_fpm_stopped");
    let healthy = report("lab_healthy");
    let steps: [(i64, &str, &ProbeReport, AlertState, Vec<NewMessage>); 4] = [
        (
            0,
            "shop",
            &failing,
            down(1, Cause::FpmUnreachable, 0),
            vec![message("shop/1/opened")],
        ),
        (1, "cafe", &healthy, AlertState::default(), vec![]),
        (
            3,
            "shop",
            &failing,
            down(1, Cause::OriginRefused, 0),
            vec![message("shop/1/2/cause/origin_refused")],
        ),
        (
            5,
            "shop",
            &healthy,
            AlertState {
                incident: 1,
                ..AlertState::default()
            },
            vec![message("shop/1/recovered")],
        ),
    ];
    for (minute, site, report, state, messages) in &steps {
        store
            .record_run(&RunRecord {
                site,
                at: at(*minute),
                report,
                state,
                messages,
            })
            .unwrap();
    }
}

/// The channel of the test's messages.
const MAIL: &[probe::store::Channel] = &[probe::store::Channel::Mail];

/// Probers sharing a PostgreSQL store deliver from one outbox: each due message is claimed by
/// one of them, never two; a claim left by a prober that died runs out after its lease, and the
/// message is then another's to send (with the same key, so the same Message-ID).
#[test]
fn probers_claim_each_delivery_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let url = db.socket_url();
    let mut first = PostgresStore::open(&url).unwrap();
    let healthy = report("lab_healthy");
    let messages: Vec<NewMessage> = (0..300)
        .map(|i| message(&format!("shop/{i}/opened")))
        .collect();
    first
        .record_run(&RunRecord {
            site: "shop",
            at: at(0),
            report: &healthy,
            state: &AlertState::default(),
            messages: &messages,
        })
        .unwrap();
    let lease = Duration::from_secs(300);
    // A prober without the channel (no SMTP server configured) claims nothing.
    assert!(first
        .claim_due(at(1), lease, &[probe::store::Channel::Webhook])
        .unwrap()
        .is_empty());
    // Four probers claim at the same moment, repeatedly: every message claimed exactly once.
    let claimed: Vec<Vec<String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let url = &url;
                scope.spawn(move || {
                    let mut store = PostgresStore::open(url).unwrap();
                    let mut mine = Vec::new();
                    for _ in 0..5 {
                        mine.extend(
                            store
                                .claim_due(at(1), lease, MAIL)
                                .unwrap()
                                .into_iter()
                                .map(|m| m.key),
                        );
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<&String> = claimed.iter().flatten().collect();
    assert_eq!(all.len(), 300, "each message claimed once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 300);
    // Nobody claims them again within the lease; once it runs out, what was not sent is due.
    assert!(first.claim_due(at(5), lease, MAIL).unwrap().is_empty());
    let due_again = first
        .claim_due(at(1) + time::Duration::seconds(301), lease, MAIL)
        .unwrap();
    assert_eq!(due_again.len(), 300);
    // A message sent or rescheduled by its claimer follows its own record, not the lease.
    first.mark_sent(due_again[0].id, at(7)).unwrap();
    first
        .mark_failed(due_again[1].id, "421 later", at(8))
        .unwrap();
    let later = first.claim_due(at(8), lease, MAIL).unwrap();
    assert_eq!(
        later.iter().map(|m| m.id).collect::<Vec<_>>(),
        [due_again[1].id]
    );
}
