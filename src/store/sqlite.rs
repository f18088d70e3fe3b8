//! The SQLite store: one file in WAL mode (`synchronous=FULL`), versioned migrations, the writer
//! lock, and the refusal of files that are not ours.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use super::{
    CauseRecord, Channel, IncidentRecord, LatestResult, NewMessage, OutboxMessage, Store,
    StoreError, UndeliveredMessage, UptimeHour,
};
use crate::alert::group::{store_key, GroupState};
use crate::alert::{AlertState, RegionSeen};

/// The SQLite store.
pub struct SqliteStore {
    pub(super) conn: Connection,
    pub(super) path: String,
    /// The writer lock, shared by every connection this process opened on the store; `None` for
    /// a read-only look.
    lock: Option<Arc<WriterLock>>,
}

/// `PRAGMA application_id` of a probe store ("prob"), so the file says whose it is.
const APPLICATION_ID: i64 = 0x7072_6f62;
/// How long `open` waits for another process to release the store.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);
/// Tables every probe store has had since schema 1.
const OUR_TABLES: [&str; 4] = ["results", "incidents", "alert_state", "outbox"];

/// The advisory lock one writer holds on `FILE.lock` (flock; the kernel drops it when the process
/// ends, even by SIGKILL). The file holds the holder's pid, for the message others get.
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock of the store at `path`, waiting at most `wait` for another holder.
    pub fn acquire(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let lock_path = lock_path(path);
        let shown = path.display().to_string();
        let failed = |source| StoreError::Lock {
            path: shown.clone(),
            lock: lock_path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(failed)?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    let mut pid = String::new();
                    let _ = file.read_to_string(&mut pid);
                    let pid = pid.trim();
                    return Err(StoreError::Busy {
                        path: shown,
                        holder: if pid.is_empty() {
                            String::new()
                        } else {
                            format!(" (pid {pid})")
                        },
                        waited: wait,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
            }
        }
        // The pid is only for messages: failing to write it does not matter.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        Ok(Self { _file: file })
    }
}

/// `probe.sqlite` → `probe.sqlite.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    path.with_file_name(name)
}

/// Whether the database behind `conn` is a probe store (or an empty file to make one of),
/// reading only: nothing is changed when it is not.
fn check_ours(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let foreign = |what: String| StoreError::Foreign {
        path: path.to_string(),
        what,
    };
    // One read transaction: the three facts come from one state of the file, even while
    // another probe process is migrating it (read apart, its first migration could land between
    // them, and its half-read tables look like another program's).
    let read = || -> rusqlite::Result<(i64, i64, Vec<String>)> {
        conn.busy_timeout(Duration::from_secs(5))?;
        let tx = conn.unchecked_transaction()?;
        let id = tx.pragma_query_value(None, "application_id", |r| r.get(0))?;
        let version = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tables = {
            let mut statement =
                tx.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
            let tables = statement
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?;
            tables
        };
        tx.commit()?;
        Ok((id, version, tables))
    };
    let (id, version, tables) = match read() {
        Ok(facts) => facts,
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => {
            return Err(foreign("not an SQLite database".into()))
        }
        Err(source) => {
            return Err(StoreError::Sqlite {
                path: path.to_string(),
                source,
            })
        }
    };
    let ours = id == APPLICATION_ID
        || (id == 0 && version == 0 && tables.is_empty())
        || (id == 0 && version >= 1 && OUR_TABLES.iter().all(|t| tables.iter().any(|n| n == t)));
    if ours {
        return Ok(());
    }
    let what = if id != 0 {
        format!("its application id is {id:#x}")
    } else {
        let shown: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        let more = if tables.len() > 5 { ", …" } else { "" };
        format!("an SQLite database with tables {}{more}", shown.join(", "))
    };
    Err(foreign(what))
}

/// Schema migrations, in order; `PRAGMA user_version` says how many have run.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE results (
         id INTEGER PRIMARY KEY,
         site TEXT NOT NULL,
         at INTEGER NOT NULL,
         status TEXT NOT NULL,
         hop TEXT NOT NULL,
         cause TEXT NOT NULL,
         report TEXT NOT NULL
     );
     CREATE INDEX results_site_at ON results (site, at);
     CREATE TABLE incidents (
         id INTEGER PRIMARY KEY,
         site TEXT NOT NULL,
         number INTEGER NOT NULL,
         opened_at INTEGER NOT NULL,
         closed_at INTEGER,
         UNIQUE (site, number)
     );
     CREATE TABLE incident_causes (
         incident_id INTEGER NOT NULL REFERENCES incidents (id),
         at INTEGER NOT NULL,
         cause TEXT NOT NULL,
         summary TEXT NOT NULL
     );
     CREATE TABLE alert_state (
         site TEXT PRIMARY KEY,
         state TEXT NOT NULL
     );
     CREATE TABLE outbox (
         id INTEGER PRIMARY KEY,
         key TEXT NOT NULL UNIQUE,
         created_at INTEGER NOT NULL,
         recipients TEXT NOT NULL,
         subject TEXT NOT NULL,
         body_text TEXT NOT NULL,
         body_html TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         next_attempt_at INTEGER NOT NULL,
         last_error TEXT,
         sent_at INTEGER
     );",
    // 2: what the feeds read: each site's latest report, hourly uptime counts (kept longer than
    // raw results, for 90-day figures), and the evidence behind each incident cause.
    "ALTER TABLE incident_causes ADD COLUMN evidence TEXT NOT NULL DEFAULT '[]';
     CREATE TABLE latest (
         site TEXT PRIMARY KEY,
         at INTEGER NOT NULL,
         report TEXT NOT NULL
     );
     INSERT INTO latest (site, at, report)
         SELECT site, at, report FROM results
         WHERE id IN (SELECT MAX(id) FROM results GROUP BY site);
     CREATE TABLE uptime_hourly (
         site TEXT NOT NULL,
         hour INTEGER NOT NULL,
         total INTEGER NOT NULL,
         down INTEGER NOT NULL,
         PRIMARY KEY (site, hour)
     );
     INSERT INTO uptime_hourly (site, hour, total, down)
         SELECT site, at - at % 3600, COUNT(*), SUM(status = 'down') FROM results
         GROUP BY site, at - at % 3600;",
    // 3: the outbox carries webhook deliveries beside mail.
    "ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'mail';",
    // 4: the file says it is a probe store; one outbox row per destination (a refused mail
    // recipient no longer holds back the others), each with the notification it carries, and
    // deliveries refused for good are given up instead of retried forever.
    "PRAGMA application_id = 1886547810;
     ALTER TABLE outbox ADD COLUMN notification TEXT NOT NULL DEFAULT '';
     ALTER TABLE outbox ADD COLUMN given_up_at INTEGER;
     UPDATE outbox SET notification = key WHERE channel = 'mail';
     UPDATE outbox SET notification = substr(key, 1, instr(key, '#webhook-') - 1)
         WHERE channel = 'webhook' AND instr(key, '#webhook-') > 0;
     INSERT OR IGNORE INTO outbox (key, created_at, recipients, subject, body_text, body_html,
                         attempts, next_attempt_at, last_error, sent_at, channel, notification)
         SELECT o.key || '#mail-' || r.value, o.created_at, json_array(r.value), o.subject,
                o.body_text, o.body_html, o.attempts, o.next_attempt_at, o.last_error, o.sent_at,
                o.channel, o.notification
         FROM outbox o, json_each(o.recipients) r WHERE o.channel = 'mail';
     DELETE FROM outbox WHERE channel = 'mail' AND instr(key, '#mail-') = 0;
     CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL AND given_up_at IS NULL;",
    // 5: regions. Each result says which region saw it; each region keeps its own state per
    // site (it confirms and recovers on its own) beside the site's incident state, which the
    // quorum of regions decides. A store from before had one region: its states become that
    // region's.
    "ALTER TABLE results ADD COLUMN region TEXT NOT NULL DEFAULT 'default';
     CREATE TABLE region_state (
         site TEXT NOT NULL,
         region TEXT NOT NULL,
         at INTEGER NOT NULL,
         state TEXT NOT NULL,
         seen TEXT,
         PRIMARY KEY (site, region)
     );
     INSERT INTO region_state (site, region, at, state)
         SELECT a.site, 'default', COALESCE(l.at, 0), a.state
         FROM alert_state a LEFT JOIN latest l ON l.site = a.site
         WHERE substr(a.site, 1, 1) <> '@';
     CREATE TABLE schedule (
         site TEXT NOT NULL,
         region TEXT NOT NULL,
         every_ms INTEGER NOT NULL,
         next_due_ms INTEGER NOT NULL,
         holder TEXT,
         PRIMARY KEY (region, site)
     );
     CREATE TABLE probers (
         id TEXT PRIMARY KEY,
         region TEXT NOT NULL,
         started_at INTEGER NOT NULL,
         seen_at INTEGER NOT NULL
     );",
    // 6: a mail about an outage other sites may share carries its group, so the deliveries of
    // one group to one recipient go out as one mail, and every mail names the mail its thread
    // began with; incidents have a severity (a site's incidents of every severity share one
    // count) and name the group they belong to.
    "ALTER TABLE outbox ADD COLUMN grouping TEXT;
     ALTER TABLE outbox ADD COLUMN thread TEXT;
     ALTER TABLE incidents ADD COLUMN severity TEXT NOT NULL DEFAULT 'down';
     ALTER TABLE incidents ADD COLUMN group_key TEXT;",
    // 7: one count of incidents for the whole store (a shared incident's sites carry its one
    // number), taken up from the highest number so far; shared incidents are kept once, not
    // per recipient (the states of the per-recipient groups go: their mails went out alone);
    // the older incidents' groups are forgotten (each site counted its own numbers then: two of
    // them with one number were not one incident).
    "UPDATE incidents SET group_key = NULL;
     CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO counters (name, value) SELECT 'incident', COALESCE(MAX(number), 0) FROM incidents;
     INSERT INTO counters (name, value) VALUES ('identity', abs(random()));
     DELETE FROM alert_state WHERE substr(site, 1, 7) = '@group:';"
];

use super::{history_row, stamp_of as stamp, Decide, RegionView, RegionalRun};

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` for writing: refuses a file that is not a
    /// probe store before changing anything, takes the writer lock (waiting at most `LOCK_WAIT`
    /// for another process), and brings the schema up to date under it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_waiting(path, LOCK_WAIT)
    }

    /// `open`, waiting at most `wait` for the writer lock.
    pub fn open_waiting(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let sqlite = |source| StoreError::Sqlite {
            path: shown.clone(),
            source,
        };
        // Opening reads nothing and writes nothing yet; the check only reads.
        let conn = Connection::open(path).map_err(sqlite)?;
        check_ours(&conn, &shown)?;
        let lock = Arc::new(WriterLock::acquire(path, wait)?);
        let mut store = Self::configured(conn, shown, Some(lock))?;
        store.migrate()?;
        Ok(store)
    }

    /// Another connection to the same store for this process (the delivery task of `probe
    /// watch`), sharing its writer lock.
    pub fn reopen(&self) -> Result<Self, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let conn = Connection::open(&self.path).map_err(sqlite)?;
        Self::configured(conn, self.path.clone(), self.lock.clone())
    }

    /// A read-only look at a store another process may be writing (tests, inspection): no lock,
    /// no migration.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| StoreError::Sqlite {
                path: shown.clone(),
                source,
            })?;
        check_ours(&conn, &shown)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(|source| StoreError::Sqlite {
                path: shown.clone(),
                source,
            })?;
        Ok(Self {
            conn,
            path: shown,
            lock: None,
        })
    }

    fn configured(
        conn: Connection,
        path: String,
        lock: Option<Arc<WriterLock>>,
    ) -> Result<Self, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        // WAL: readers (the feed server) never block the writer; synchronous=FULL makes each
        // committed transaction survive a kill -9 or power loss.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
        Ok(Self { conn, path, lock })
    }

    pub(super) fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| self.sqlite(e))?;
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                supported,
            });
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
                path: self.path.clone(),
                source: e,
            })?;
            tx.execute_batch(sql)
                .and_then(|_| tx.pragma_update(None, "user_version", (index + 1) as i64))
                .and_then(|_| tx.commit())
                .map_err(|e| StoreError::Sqlite {
                    path: self.path.clone(),
                    source: e,
                })?;
        }
        Ok(())
    }

    /// `PRAGMA integrity_check`: "ok" for a sound file.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.conn
            .pragma_query_value(None, "integrity_check", |row| row.get(0))
            .map_err(|e| self.sqlite(e))
    }

    /// Number of stored results for a site.
    pub fn result_count(&self, site: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM results WHERE site = ?1",
                [site],
                |row| row.get(0),
            )
            .map_err(|e| self.sqlite(e))
    }
}

impl Store for SqliteStore {
    fn another_connection(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(self.reopen()?))
    }

    fn alert_state(&self, site: &str) -> Result<AlertState, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM alert_state WHERE site = ?1",
                [site],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        match text {
            None => Ok(AlertState::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: "alert state",
                reason: e.to_string(),
            }),
        }
    }

    fn region_state(&self, site: &str, region: &str) -> Result<AlertState, StoreError> {
        let text: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM region_state WHERE site = ?1 AND region = ?2")
            .and_then(|mut s| s.query_row([site, region], |row| row.get(0)).optional())
            .map_err(|e| self.sqlite(e))?;
        match text {
            None => Ok(AlertState::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| self.corrupt("region state", e)),
        }
    }

    fn record_regional(
        &mut self,
        region: &str,
        runs: &[RegionalRun<'_>],
        decide: &mut Decide<'_>,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let corrupt = |what: &'static str, e: serde_json::Error| StoreError::Corrupt {
            path: path.clone(),
            what,
            reason: e.to_string(),
        };
        // One writer at a time (the writer lock): what is read here is what is decided on.
        let tx = self.conn.transaction().map_err(sqlite)?;
        for run in runs {
            write_result(&tx, region, run).map_err(sqlite)?;
        }
        for (index, run) in runs.iter().enumerate() {
            let stored: Option<String> = tx
                .prepare_cached("SELECT state FROM alert_state WHERE site = ?1")
                .and_then(|mut s| s.query_row([run.site], |row| row.get(0)).optional())
                .map_err(sqlite)?;
            let site_state = match stored {
                Some(text) => serde_json::from_str(&text).map_err(|e| corrupt("alert state", e))?,
                None => AlertState::default(),
            };
            let mut views = Vec::new();
            {
                let mut statement = tx
                    .prepare_cached(
                        "SELECT region, at, state, seen FROM region_state WHERE site = ?1 ORDER BY region",
                    )
                    .map_err(sqlite)?;
                let rows = statement
                    .query_map([run.site], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, Option<String>>(3)?,
                        ))
                    })
                    .map_err(sqlite)?;
                for row in rows {
                    let (region, at, state, seen) = row.map_err(sqlite)?;
                    views.push(RegionView {
                        region,
                        at: OffsetDateTime::from_unix_timestamp(at).map_err(|e| {
                            StoreError::Corrupt {
                                path: path.clone(),
                                what: "timestamp",
                                reason: e.to_string(),
                            }
                        })?,
                        state: serde_json::from_str(&state)
                            .map_err(|e| corrupt("region state", e))?,
                        seen: seen.and_then(|s| serde_json::from_str(&s).ok()),
                    });
                }
            }
            let mut ledger = Ledger {
                tx: &tx,
                path: &path,
            };
            if let Some((state, messages)) = decide(index, &site_state, &views, &mut ledger)? {
                write_decision(&tx, run, &state, &messages).map_err(sqlite)?;
            }
        }
        tx.commit().map_err(sqlite)
    }

    fn defer_message(&mut self, id: i64, until: OffsetDateTime) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET next_attempt_at = ?1 WHERE id = ?2",
                params![stamp(until), id],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    fn record_state(
        &mut self,
        key: &str,
        at: OffsetDateTime,
        state: &AlertState,
        messages: &[NewMessage],
    ) -> Result<(), StoreError> {
        let state = serde_json::to_string(state).expect("an alert state serialises");
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        save_state(&tx, key, &state)
            .and_then(|()| queue(&tx, stamp(at), messages))
            .and_then(|()| tx.commit())
            .map_err(sqlite)
    }

    fn shared_states(&self) -> Result<Vec<GroupState>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT state FROM alert_state WHERE substr(site, 1, 8) = '@shared:' ORDER BY site",
            )
            .map_err(|e| self.sqlite(e))?;
        let texts = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for text in texts {
            let text = text.map_err(|e| self.sqlite(e))?;
            out.push(serde_json::from_str(&text).map_err(|e| self.corrupt("shared incident", e))?);
        }
        Ok(out)
    }

    fn record_shared(
        &mut self,
        at: OffsetDateTime,
        expected: &GroupState,
        state: &GroupState,
        messages: &[NewMessage],
    ) -> Result<bool, StoreError> {
        let key = store_key(&state.key);
        let text = serde_json::to_string(state).expect("a shared incident serialises");
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| StoreError::Sqlite {
            path: path.clone(),
            source: e,
        })?;
        // One writer at a time holds this store: what is read here stays until the write.
        let current = Ledger {
            tx: &tx,
            path: &path,
        }
        .read_shared(&key)?;
        if current.as_ref() != Some(expected) {
            return Ok(false);
        }
        save_state(&tx, &key, &text)
            .and_then(|()| queue(&tx, stamp(at), messages))
            .and_then(|()| tx.commit())
            .map_err(|source| StoreError::Sqlite { path, source })?;
        Ok(true)
    }

    fn identity(&self) -> Result<String, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'identity'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| format!("{n:x}"))
            .map_err(|e| self.sqlite(e))
    }

    fn region_views(&self, site: &str) -> Result<Vec<RegionView>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT region, at, state, seen FROM region_state WHERE site = ?1 ORDER BY region",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([site], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (region, at, state, seen) = row.map_err(|e| self.sqlite(e))?;
            out.push(RegionView {
                region,
                at: self.time(at)?,
                state: serde_json::from_str(&state).map_err(|e| self.corrupt("region state", e))?,
                seen: seen.and_then(|s| serde_json::from_str(&s).ok()),
            });
        }
        Ok(out)
    }

    fn due_messages(&self, now: OffsetDateTime) -> Result<Vec<OutboxMessage>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT id, key, recipients, subject, body_text, body_html, attempts, channel, notification, created_at, thread
                 FROM outbox
                 WHERE sent_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= ?1 ORDER BY id",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([stamp(now)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                    row.get::<_, String>(5)?,
                    row.get::<_, u32>(6)?,
                    row.get::<_, String>(7)?,
                    row.get::<_, String>(8)?,
                    row.get::<_, i64>(9)?,
                    row.get::<_, Option<String>>(10)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                key,
                recipients,
                subject,
                body_text,
                body_html,
                attempts,
                channel,
                notification,
                created_at,
                thread,
            ) = row.map_err(|e| self.sqlite(e))?;
            let channel =
                Channel::parse(&channel).ok_or_else(|| self.corrupt("outbox channel", &channel))?;
            let recipients =
                serde_json::from_str(&recipients).map_err(|e| StoreError::Corrupt {
                    path: self.path.clone(),
                    what: "outbox recipients",
                    reason: e.to_string(),
                })?;
            out.push(OutboxMessage {
                id,
                channel,
                key,
                notification,
                recipients,
                subject,
                body_text,
                body_html,
                attempts,
                created_at: super::time_of(created_at),
                thread,
            });
        }
        Ok(out)
    }

    fn undelivered(&self) -> Result<Vec<UndeliveredMessage>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT channel, key, recipients, subject, attempts, created_at, next_attempt_at,
                        given_up_at, last_error
                 FROM outbox WHERE sent_at IS NULL ORDER BY id",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, u32>(4)?,
                    row.get::<_, i64>(5)?,
                    row.get::<_, i64>(6)?,
                    row.get::<_, Option<i64>>(7)?,
                    row.get::<_, Option<String>>(8)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let time = |unix: i64| {
            OffsetDateTime::from_unix_timestamp(unix).map_err(|e| self.corrupt("outbox time", e))
        };
        let mut out = Vec::new();
        for row in rows {
            let (channel, key, recipients, subject, attempts, created, next, given_up, error) =
                row.map_err(|e| self.sqlite(e))?;
            let channel =
                Channel::parse(&channel).ok_or_else(|| self.corrupt("outbox channel", &channel))?;
            let recipients: Vec<String> = serde_json::from_str(&recipients)
                .map_err(|e| self.corrupt("outbox recipients", e))?;
            out.push(UndeliveredMessage {
                channel,
                key,
                destination: recipients.join(", "),
                subject,
                attempts,
                created_at: time(created)?,
                next_attempt_at: if given_up.is_some() {
                    None
                } else {
                    Some(time(next)?)
                },
                given_up_at: given_up.map(time).transpose()?,
                last_error: error,
            });
        }
        Ok(out)
    }

    fn mark_sent(&mut self, id: i64, at: OffsetDateTime) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET sent_at = ?1, attempts = attempts + 1 WHERE id = ?2",
                params![stamp(at), id],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    fn mark_failed(
        &mut self,
        id: i64,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2 WHERE id = ?3",
                params![error, stamp(retry_at), id],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    fn mark_given_up(
        &mut self,
        id: i64,
        error: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, given_up_at = ?2 WHERE id = ?3",
                params![error, stamp(at), id],
            )
            .map(|_| ())
            .map_err(|e| self.sqlite(e))
    }

    fn prune_results(&mut self, before: OffsetDateTime) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM results WHERE at < ?1", [stamp(before)])
            .map_err(|e| self.sqlite(e))
    }

    fn prune_uptime(&mut self, before: OffsetDateTime) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM uptime_hourly WHERE hour < ?1", [stamp(before)])
            .map_err(|e| self.sqlite(e))
    }

    fn each_latest(&self, each: &mut dyn FnMut(LatestResult)) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT site, at, report FROM latest ORDER BY site")
            .map_err(|e| self.sqlite(e))?;
        let mut rows = statement.query([]).map_err(|e| self.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let read = || -> rusqlite::Result<(String, i64, String)> {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            };
            let (site, at, report) = read().map_err(|e| self.sqlite(e))?;
            each(LatestResult {
                site,
                at: self.time(at)?,
                report: serde_json::from_str(&report).map_err(|e| self.corrupt("report", e))?,
            });
        }
        Ok(())
    }

    fn each_region_view(&self, each: &mut dyn FnMut(&str, RegionView)) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare("SELECT site, region, at, state, seen FROM region_state ORDER BY site, region")
            .map_err(|e| self.sqlite(e))?;
        let mut rows = statement.query([]).map_err(|e| self.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let read = || -> rusqlite::Result<(String, String, i64, String, Option<String>)> {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            };
            let (site, region, at, state, seen) = read().map_err(|e| self.sqlite(e))?;
            let view = RegionView {
                region,
                at: self.time(at)?,
                state: serde_json::from_str(&state).map_err(|e| self.corrupt("region state", e))?,
                seen: seen.and_then(|s| serde_json::from_str(&s).ok()),
            };
            each(&site, view);
        }
        Ok(())
    }

    fn incidents(&self, since: OffsetDateTime) -> Result<Vec<IncidentRecord>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT i.id, i.site, i.number, i.opened_at, i.closed_at, c.at, c.cause, c.summary, c.evidence, i.severity, i.group_key
                 FROM incidents i LEFT JOIN incident_causes c ON c.incident_id = i.id
                 WHERE i.closed_at IS NULL OR i.closed_at >= ?1
                 ORDER BY i.opened_at DESC, i.id DESC, c.rowid",
            )
            .map_err(|e| self.sqlite(e))?;
        type Row = (
            i64,
            String,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
            Option<String>,
            Option<String>,
            Option<String>,
            String,
            Option<String>,
        );
        let rows = statement
            .query_map([stamp(since)], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                    row.get(8)?,
                    row.get(9)?,
                    row.get(10)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        let mut out: Vec<IncidentRecord> = Vec::new();
        let mut last_id = None;
        for row in rows {
            let (id, site, number, opened, closed, at, cause, summary, evidence, severity, group): Row =
                row.map_err(|e| self.sqlite(e))?;
            if last_id != Some(id) {
                last_id = Some(id);
                out.push(IncidentRecord {
                    site,
                    also: Vec::new(),
                    number: number as u64,
                    severity: crate::alert::Severity::parse(&severity)
                        .ok_or_else(|| self.corrupt("incident severity", &severity))?,
                    group,
                    opened_at: self.time(opened)?,
                    closed_at: closed.map(|t| self.time(t)).transpose()?,
                    causes: Vec::new(),
                });
            }
            if let (Some(at), Some(cause)) = (at, cause) {
                let evidence = evidence.unwrap_or_else(|| "[]".into());
                let record = CauseRecord {
                    at: self.time(at)?,
                    cause,
                    summary: summary.unwrap_or_default(),
                    evidence: serde_json::from_str(&evidence)
                        .map_err(|e| self.corrupt("incident evidence", e))?,
                };
                out.last_mut().expect("pushed above").causes.push(record);
            }
        }
        Ok(out)
    }

    fn each_uptime_hour(
        &self,
        since: OffsetDateTime,
        each: &mut dyn FnMut(&str, UptimeHour),
    ) -> Result<(), StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT site, hour, total, down FROM uptime_hourly WHERE hour >= ?1
                 ORDER BY site, hour",
            )
            .map_err(|e| self.sqlite(e))?;
        let mut rows = statement
            .query([stamp(since) - stamp(since).rem_euclid(3600)])
            .map_err(|e| self.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            let read = || -> rusqlite::Result<(String, UptimeHour)> {
                Ok((
                    row.get(0)?,
                    UptimeHour {
                        hour: row.get(1)?,
                        total: row.get(2)?,
                        down: row.get(3)?,
                    },
                ))
            };
            let (site, hour) = read().map_err(|e| self.sqlite(e))?;
            each(&site, hour);
        }
        Ok(())
    }
}

impl SqliteStore {
    fn time(&self, unix: i64) -> Result<OffsetDateTime, StoreError> {
        OffsetDateTime::from_unix_timestamp(unix).map_err(|e| self.corrupt("timestamp", e))
    }

    fn corrupt(&self, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
            reason: e.to_string(),
        }
    }
}

/// Runs one statement, kept prepared on the connection: a pass runs the same few statements for
/// every site.
fn execute_cached<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

fn save_state(tx: &rusqlite::Transaction<'_>, key: &str, state: &str) -> rusqlite::Result<()> {
    execute_cached(
        tx,
        "INSERT INTO alert_state (site, state) VALUES (?1, ?2)
         ON CONFLICT (site) DO UPDATE SET state = excluded.state",
        params![key, state],
    )
    .map(|_| ())
}

/// Queues messages; one whose key is already queued or sent is not queued again.
fn queue(tx: &rusqlite::Transaction<'_>, at: i64, messages: &[NewMessage]) -> rusqlite::Result<()> {
    for message in messages {
        let recipients = serde_json::to_string(&message.recipients).expect("strings serialise");
        execute_cached(
            tx,
            "INSERT INTO outbox (key, created_at, recipients, subject, body_text, body_html, next_attempt_at, channel, notification, thread)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?2, ?7, ?8, ?9)
             ON CONFLICT (key) DO NOTHING",
            params![message.key, at, recipients, message.subject, message.body_text, message.body_html, message.channel.as_str(), message.notification, message.thread],
        )?;
    }
    Ok(())
}

/// The incident count and the shared incidents, inside a decision's transaction.
struct Ledger<'t, 'c> {
    tx: &'t rusqlite::Transaction<'c>,
    path: &'t str,
}

impl Ledger<'_, '_> {
    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.to_string(),
            source,
        }
    }

    fn read_shared(&self, key: &str) -> Result<Option<GroupState>, StoreError> {
        let text: Option<String> = self
            .tx
            .prepare_cached("SELECT state FROM alert_state WHERE site = ?1")
            .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
            .map_err(|e| self.sqlite(e))?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                path: self.path.to_string(),
                what: "shared incident",
                reason: e.to_string(),
            })
        })
        .transpose()
    }
}

impl super::Ledger for Ledger<'_, '_> {
    fn next_incident(&mut self) -> Result<u64, StoreError> {
        self.tx
            .query_row(
                "UPDATE counters SET value = value + 1 WHERE name = 'incident' RETURNING value",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.sqlite(e))
    }

    fn shared(&mut self, key: &str) -> Result<Option<GroupState>, StoreError> {
        self.read_shared(&store_key(key))
    }

    fn put_shared(&mut self, state: &GroupState) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).expect("a shared incident serialises");
        save_state(self.tx, &store_key(&state.key), &text).map_err(|e| self.sqlite(e))
    }
}

/// Writes one region's result (the history row, the latest report, the uptime count and the
/// region's own state) inside the caller's transaction.
fn write_result(
    tx: &rusqlite::Transaction<'_>,
    region: &str,
    run: &RegionalRun<'_>,
) -> rusqlite::Result<()> {
    let report = serde_json::to_string(run.report).expect("a report serialises");
    let seen = serde_json::to_string(&RegionSeen::of(run.report)).expect("a view serialises");
    let at = stamp(run.at);
    let d = &run.report.diagnosis;
    tx.prepare_cached(
        "INSERT INTO results (site, at, status, hop, cause, report, region) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        run.site,
        at,
        d.status.as_str(),
        d.hop.as_str(),
        d.cause.as_str(),
        history_row(run.report, &report),
        region
    ])?;
    if let Some(state) = run.state {
        let state = serde_json::to_string(state).expect("an alert state serialises");
        execute_cached(
            tx,
            "INSERT INTO region_state (site, region, at, state, seen) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (site, region) DO UPDATE SET at = excluded.at, state = excluded.state, seen = excluded.seen",
            params![run.site, region, at, state, seen],
        )?;
    }
    execute_cached(
        tx,
        "INSERT INTO latest (site, at, report) VALUES (?1, ?2, ?3)
         ON CONFLICT (site) DO UPDATE SET at = excluded.at, report = excluded.report",
        params![run.site, at, report],
    )?;
    execute_cached(
        tx,
        "INSERT INTO uptime_hourly (site, hour, total, down) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (site, hour) DO UPDATE SET total = total + 1, down = down + excluded.down",
        params![
            run.site,
            at - at.rem_euclid(3600),
            i64::from(d.status == crate::observe::Status::Down)
        ],
    )?;
    Ok(())
}

/// Writes a site's decided incident state, its incident and cause history, and the messages it
/// queued, inside the caller's transaction.
fn write_decision(
    tx: &rusqlite::Transaction<'_>,
    run: &RegionalRun<'_>,
    state: &AlertState,
    messages: &[NewMessage],
) -> rusqlite::Result<()> {
    let at = stamp(run.at);
    let text = serde_json::to_string(state).expect("an alert state serialises");
    save_state(tx, run.site, &text)?;
    // The incidents this state speaks of, and their cause histories.
    for row in super::incident_rows(state, run.report, at) {
        let open = row.cause.is_some();
        execute_cached(
            tx,
            "INSERT INTO incidents (site, number, opened_at, severity, group_key) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (site, number) DO NOTHING",
            params![run.site, row.number, row.opened_at, row.severity.as_str(), row.group],
        )?;
        let incident_id: i64 = tx.query_row(
            "SELECT id FROM incidents WHERE site = ?1 AND number = ?2",
            params![run.site, row.number],
            |row| row.get(0),
        )?;
        if let Some(cause) = row.cause {
            let last: Option<String> = tx
                .query_row(
                    "SELECT cause FROM incident_causes WHERE incident_id = ?1 ORDER BY rowid DESC LIMIT 1",
                    [incident_id],
                    |row| row.get(0),
                )
                .optional()?;
            if last.as_deref() != Some(cause.as_str()) {
                execute_cached(
                    tx,
                    "INSERT INTO incident_causes (incident_id, at, cause, summary, evidence) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![incident_id, at, cause.as_str(), row.summary, row.evidence],
                )?;
            }
        }
        if !open {
            execute_cached(
                tx,
                "UPDATE incidents SET closed_at = ?1 WHERE id = ?2 AND closed_at IS NULL",
                params![at, incident_id],
            )?;
        } else {
            // Open again: the site failed again inside the shared incident it was in.
            execute_cached(
                tx,
                "UPDATE incidents SET closed_at = NULL WHERE id = ?1 AND closed_at IS NOT NULL",
                params![incident_id],
            )?;
        }
    }
    queue(tx, at, messages)
}
