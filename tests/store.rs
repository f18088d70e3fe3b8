//! The SQLite store: schema migrations, atomic runs (result + alert state + queued mail), the
//! outbox's never-lost / never-twice rules, incidents with their cause history, retention, and a
//! writer killed with SIGKILL mid-stream leaving a sound file with whole runs only.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use probe::alert::{AlertPhase, AlertState};
use probe::diagnose::Cause;
use probe::store::{NewMessage, RunRecord, SqliteStore, Store};

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

/// The first schema, as probe wrote it.
const V1_SCHEMA: &str = "CREATE TABLE results (id INTEGER PRIMARY KEY, site TEXT NOT NULL, at INTEGER NOT NULL, status TEXT NOT NULL, hop TEXT NOT NULL, cause TEXT NOT NULL, report TEXT NOT NULL);
     CREATE TABLE incidents (id INTEGER PRIMARY KEY, site TEXT NOT NULL, number INTEGER NOT NULL, opened_at INTEGER NOT NULL, closed_at INTEGER, UNIQUE (site, number));
     CREATE TABLE incident_causes (incident_id INTEGER NOT NULL REFERENCES incidents (id), at INTEGER NOT NULL, cause TEXT NOT NULL, summary TEXT NOT NULL);
     CREATE TABLE alert_state (site TEXT PRIMARY KEY, state TEXT NOT NULL);
     CREATE TABLE outbox (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL, recipients TEXT NOT NULL, subject TEXT NOT NULL, body_text TEXT NOT NULL, body_html TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL, last_error TEXT, sent_at INTEGER);";

fn count(path: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

#[test]
fn a_new_store_is_created_and_reopened_without_migrating_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(store);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.alert_state("nobody").unwrap(), AlertState::default());
    assert_eq!(count(&path, "PRAGMA user_version"), 7);
    assert_eq!(
        count(&path, "PRAGMA application_id"),
        0x7072_6f62,
        "the file says it is a probe store"
    );
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn a_store_from_a_newer_probe_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteStore::open(&path).err().expect("refused");
    assert!(
        err.to_string().contains("schema version 99 is newer"),
        "{err}"
    );
}

#[test]
fn runs_incidents_and_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let failing = report("lab_fpm_stopped");
    let healthy = report("lab_healthy");

    // An incident opens, with its mail queued in the same transaction.
    let opened = down(1, Cause::FpmUnreachable, 0);
    store
        .record_run(&RunRecord {
            site: "shop",
            at: at(0),
            report: &failing,
            state: &opened,
            messages: &[message("shop/1/opened")],
        })
        .unwrap();
    assert_eq!(store.alert_state("shop").unwrap(), opened);
    let due = store.due_messages(at(0)).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].key.as_str(), due[0].attempts), ("shop/1/opened", 0));

    // Delivery fails: it waits, and is due again after the backoff.
    store
        .mark_failed(due[0].id, "421 try later", at(2))
        .unwrap();
    assert!(store.due_messages(at(1)).unwrap().is_empty());
    let again = store.due_messages(at(2)).unwrap();
    assert_eq!((again.len(), again[0].attempts), (1, 1));

    // The same notification decided again (a rerun) is not queued twice.
    store
        .record_run(&RunRecord {
            site: "shop",
            at: at(1),
            report: &failing,
            state: &opened,
            messages: &[message("shop/1/opened")],
        })
        .unwrap();
    assert_eq!(count(&path, "SELECT COUNT(*) FROM outbox"), 1);
    store.mark_sent(again[0].id, at(2)).unwrap();
    assert!(
        store.due_messages(at(100)).unwrap().is_empty(),
        "sent means never again"
    );

    // The cause changes, then the site recovers: the incident keeps its cause history and closes.
    let changed = down(1, Cause::OriginRefused, 0);
    store
        .record_run(&RunRecord {
            site: "shop",
            at: at(3),
            report: &failing,
            state: &changed,
            messages: &[message("shop/1/cause/origin_refused")],
        })
        .unwrap();
    let recovered = AlertState {
        incident: 1,
        ..AlertState::default()
    };
    store
        .record_run(&RunRecord {
            site: "shop",
            at: at(5),
            report: &healthy,
            state: &recovered,
            messages: &[message("shop/1/recovered")],
        })
        .unwrap();
    assert_eq!(count(&path, "SELECT COUNT(*) FROM incidents"), 1);
    assert_eq!(count(&path, "SELECT COUNT(*) FROM incident_causes"), 2);
    assert_eq!(
        count(
            &path,
            "SELECT COUNT(*) FROM incidents WHERE closed_at IS NOT NULL"
        ),
        1
    );
    assert_eq!(store.result_count("shop").unwrap(), 4);
    assert_eq!(store.due_messages(at(5)).unwrap().len(), 2);

    // What the feeds read: the latest report, the incident with both causes and their evidence,
    // hourly uptime counts.
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
    assert!(
        store.incidents(at(6)).unwrap().is_empty(),
        "closed before the window"
    );
    let hours = store.uptime_hours(at(0)).unwrap();
    let (total, down) = hours
        .iter()
        .fold((0, 0), |(t, d), (_, h)| (t + h.total, d + h.down));
    assert_eq!((total, down), (4, 3), "{hours:?}");

    // Retention removes old results, not incidents, mail or uptime counts.
    assert_eq!(store.prune_results(at(2)).unwrap(), 2);
    assert_eq!(store.result_count("shop").unwrap(), 2);
    assert_eq!(count(&path, "SELECT COUNT(*) FROM incidents"), 1);
    assert_eq!(count(&path, "SELECT COUNT(*) FROM outbox"), 3);
    assert_eq!(store.uptime_hours(at(0)).unwrap(), hours);
    assert!(store.prune_uptime(at(24 * 60)).unwrap() >= 1);
    assert!(store.uptime_hours(at(0)).unwrap().is_empty());
}

#[test]
fn a_version_1_store_is_migrated_with_its_results_carried_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        // The first schema, as probe wrote it, with two results of one site.
        conn.execute_batch(V1_SCHEMA).unwrap();
        conn.execute_batch("PRAGMA user_version = 1;").unwrap();
        for (minute, name) in [(0, "lab_fpm_stopped"), (1, "lab_healthy")] {
            let r = report(name);
            conn.execute(
                "INSERT INTO results (site, at, status, hop, cause, report) VALUES ('shop', ?1, ?2, 'x', 'x', ?3)",
                rusqlite::params![at(minute).unix_timestamp(), r.status.as_str(), serde_json::to_string(&r).unwrap()],
            )
            .unwrap();
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(count(&path, "PRAGMA user_version"), 7);
    assert_eq!(
        count(
            &path,
            "SELECT COUNT(*) FROM results WHERE region = 'default'"
        ),
        2,
        "results from before regions were the one region's"
    );
    let latest = store.latest_results().unwrap();
    assert_eq!((latest.len(), latest[0].at), (1, at(1)));
    let hours = store.uptime_hours(at(0)).unwrap();
    let (total, down) = hours
        .iter()
        .fold((0, 0), |(t, d), (_, h)| (t + h.total, d + h.down));
    assert_eq!((total, down), (2, 1));
}

/// Run by `a_writer_killed_mid_run_leaves_whole_runs_only` in a child process: records runs as
/// fast as it can until killed.
#[test]
fn writer_child() {
    let Some(path) = std::env::var_os("PROBE_STORE_WRITER") else {
        return; // only runs as the child
    };
    let mut store = SqliteStore::open(Path::new(&path)).unwrap();
    let failing = report("lab_fpm_stopped");
    for n in 0..100_000i64 {
        let state = down(n as u64 + 1, Cause::FpmUnreachable, n);
        let key = format!("site/{n}/opened");
        store
            .record_run(&RunRecord {
                site: "site",
                at: at(n),
                report: &failing,
                state: &state,
                messages: &[message(&key)],
            })
            .unwrap();
    }
}

#[test]
fn a_writer_killed_mid_run_leaves_whole_runs_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    drop(SqliteStore::open(&path).unwrap());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "writer_child", "--nocapture"])
        .env("PROBE_STORE_WRITER", &path)
        .spawn()
        .unwrap();
    // Let it commit some runs, then kill it without warning, mid-stream.
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while count(&path, "SELECT COUNT(*) FROM results") < 20 {
        assert!(
            std::time::Instant::now() < until,
            "the writer made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let results = count(&path, "SELECT COUNT(*) FROM results");
    let mails = count(&path, "SELECT COUNT(*) FROM outbox");
    let incidents = count(&path, "SELECT COUNT(*) FROM incidents");
    assert!(results >= 20);
    assert_eq!(
        (mails, incidents),
        (results, results),
        "every committed run is whole: its mail and incident with it"
    );
    let state = store.alert_state("site").unwrap();
    assert_eq!(
        state.incident as i64, results,
        "the alert state is the last committed run's"
    );
}

/// A store written by the first schema, its outbox holding a pending mail for two recipients
/// (one listed twice), a mail already sent and one that failed once, migrated all the way: one
/// delivery per recipient, what was sent still sent, attempts and errors carried over.
#[test]
fn an_old_outbox_is_split_into_one_delivery_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(V1_SCHEMA).unwrap();
        conn.execute_batch(
            "INSERT INTO outbox (key, created_at, recipients, subject, body_text, body_html, attempts, next_attempt_at, last_error, sent_at) VALUES
                 ('shop/1/opened', 0, '[\"a@example.com\",\"b@example.com\",\"a@example.com\"]', 's', 't', 'h', 2, 0, '421 try later', NULL),
                 ('shop/0/opened', 0, '[\"a@example.com\"]', 's', 't', 'h', 1, 0, NULL, 5);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(count(&path, "PRAGMA user_version"), 7);
    assert_eq!(count(&path, "PRAGMA application_id"), 0x7072_6f62);
    let due = store.due_messages(at(0)).unwrap();
    let mut rows: Vec<(String, String, Vec<String>, u32)> = due
        .into_iter()
        .map(|m| (m.key, m.notification, m.recipients, m.attempts))
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            (
                "shop/1/opened#mail-a@example.com".to_string(),
                "shop/1/opened".to_string(),
                vec!["a@example.com".to_string()],
                2
            ),
            (
                "shop/1/opened#mail-b@example.com".to_string(),
                "shop/1/opened".to_string(),
                vec!["b@example.com".to_string()],
                2
            ),
        ],
        "the pending mail, once per recipient; the sent one not due"
    );
    assert_eq!(
        count(&path, "SELECT COUNT(*) FROM outbox WHERE key = 'shop/0/opened#mail-a@example.com' AND sent_at = 5"),
        1,
        "what was sent stays sent"
    );
    assert_eq!(
        count(
            &path,
            "SELECT COUNT(*) FROM outbox WHERE last_error = '421 try later'"
        ),
        2
    );
}

#[test]
fn a_delivery_given_up_is_never_due_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let healthy = report("lab_healthy");
    store
        .record_run(&RunRecord {
            site: "shop",
            at: at(0),
            report: &healthy,
            state: &AlertState::default(),
            messages: &[message("shop/1/opened#mail-bad@example.com")],
        })
        .unwrap();
    let id = store.due_messages(at(0)).unwrap()[0].id;
    store
        .mark_given_up(id, "550 5.1.1 no such user", at(0))
        .unwrap();
    assert!(store.due_messages(at(100_000)).unwrap().is_empty());
    let reason: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT last_error FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(reason, "550 5.1.1 no such user");
}

/// Another program's database, or a file that is not SQLite at all, given as the store: refused
/// with a clear message, and left byte for byte as it was (not switched to WAL first).
#[test]
fn a_file_that_is_not_a_probe_store_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("shop.db");
    {
        let conn = rusqlite::Connection::open(&foreign).unwrap();
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('ada');",
        )
        .unwrap();
    }
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database, just notes\n".repeat(100)).unwrap();
    for (path, what) in [
        (&foreign, "an SQLite database with tables customers"),
        (&text, "not an SQLite database"),
    ] {
        let before = std::fs::read(path).unwrap();
        let err = SqliteStore::open(path).err().expect("refused");
        let message = err.to_string();
        assert!(
            message.contains("not a probe store") && message.contains(what),
            "{message}"
        );
        assert!(message.contains("left untouched"), "{message}");
        assert_eq!(std::fs::read(path).unwrap(), before, "{}", path.display());
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        assert!(!std::path::Path::new(&wal).exists(), "no WAL beside it");
    }
    let mode: String = rusqlite::Connection::open(&foreign)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "still in its own journal mode");
}

/// One writer at a time: while a store is open for writing, another open waits, then says who
/// holds it; once released, it opens.
#[test]
fn a_store_has_one_writer_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probe.sqlite");
    let first = SqliteStore::open(&path).unwrap();
    let started = std::time::Instant::now();
    let err = SqliteStore::open_waiting(&path, Duration::from_millis(300))
        .err()
        .expect("the second writer is refused");
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "in use by another probe process (pid {})",
            std::process::id()
        )),
        "{message}"
    );
    assert!(err.is_transient());
    // A reader is never refused.
    let reader = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(reader.alert_state("x").unwrap(), AlertState::default());
    drop(first);
    SqliteStore::open_waiting(&path, Duration::from_millis(300)).unwrap();
}
