//! The PostgreSQL store: the shared store of several probers (regions, pools) on one database.
//! The same tables as the SQLite store, in a schema of their own (`probe`), so a database shared
//! with other programs keeps its tables apart from ours.
//!
//! tokio-postgres drives each connection on a thread of its own (a small current-thread runtime
//! that only runs the connection), and the `Store` calls wait for their answers on the caller's
//! thread, as the SQLite calls do. Statements of one batch are sent together (pipelined), so a
//! batch costs a few round trips to the database however many sites it holds: a database 50 ms
//! away does not slow a pass by 50 ms a site.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use futures_util::{pin_mut, StreamExt};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::settings::database::{parse_url, shown_url};

use super::copy::{Column, Copied, CopyWork, Kind, Table, TABLES};
use super::{
    CauseRecord, Channel, Decide, IncidentRecord, LatestResult, NewMessage, OutboxMessage,
    RegionView, RegionalRun, Store, StoreError, UndeliveredMessage, UptimeHour,
};
use crate::alert::group::{store_key, GroupState};
use crate::alert::{AlertState, RegionSeen};

/// The schema (namespace) probe's tables live in.
const SCHEMA: &str = "probe";
/// The advisory lock key held while migrating ("prob"): two probers starting together never
/// race the migrations.
const MIGRATION_LOCK: i64 = 0x7072_6f62;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Migrations, in step with the SQLite store's: the same number means the same tables and
/// columns. The first creates everything SQLite's first four built up to.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE results (
         id BIGSERIAL PRIMARY KEY,
         site TEXT COLLATE \"C\" NOT NULL,
         at BIGINT NOT NULL,
         status TEXT NOT NULL,
         hop TEXT NOT NULL,
         cause TEXT NOT NULL,
         report TEXT NOT NULL
     );
     CREATE INDEX results_site_at ON results (site, at);
     CREATE INDEX results_at ON results (at);
     CREATE TABLE incidents (
         id BIGSERIAL PRIMARY KEY,
         site TEXT COLLATE \"C\" NOT NULL,
         number BIGINT NOT NULL,
         opened_at BIGINT NOT NULL,
         closed_at BIGINT,
         UNIQUE (site, number)
     );
     CREATE TABLE incident_causes (
         id BIGSERIAL PRIMARY KEY,
         incident_id BIGINT NOT NULL REFERENCES incidents (id),
         at BIGINT NOT NULL,
         cause TEXT NOT NULL,
         summary TEXT NOT NULL,
         evidence TEXT NOT NULL DEFAULT '[]'
     );
     CREATE INDEX incident_causes_incident ON incident_causes (incident_id, id);
     CREATE TABLE alert_state (
         site TEXT COLLATE \"C\" PRIMARY KEY,
         state TEXT NOT NULL
     );
     CREATE TABLE latest (
         site TEXT COLLATE \"C\" PRIMARY KEY,
         at BIGINT NOT NULL,
         report TEXT NOT NULL
     );
     CREATE TABLE uptime_hourly (
         site TEXT COLLATE \"C\" NOT NULL,
         hour BIGINT NOT NULL,
         total BIGINT NOT NULL,
         down BIGINT NOT NULL,
         PRIMARY KEY (site, hour)
     );
     CREATE TABLE outbox (
         id BIGSERIAL PRIMARY KEY,
         key TEXT NOT NULL UNIQUE,
         created_at BIGINT NOT NULL,
         recipients TEXT NOT NULL,
         subject TEXT NOT NULL,
         body_text TEXT NOT NULL,
         body_html TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         next_attempt_at BIGINT NOT NULL,
         last_error TEXT,
         sent_at BIGINT,
         channel TEXT NOT NULL DEFAULT 'mail',
         notification TEXT NOT NULL DEFAULT '',
         given_up_at BIGINT
     );
     CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE sent_at IS NULL AND given_up_at IS NULL;",
    // 2–4 built the above in SQLite, step by step.
    "",
    "",
    "",
    // 5: regions (as SQLite's 5).
    "ALTER TABLE results ADD COLUMN region TEXT NOT NULL DEFAULT 'default';
     CREATE TABLE region_state (
         site TEXT COLLATE \"C\" NOT NULL,
         region TEXT COLLATE \"C\" NOT NULL,
         at BIGINT NOT NULL,
         state TEXT NOT NULL,
         seen TEXT,
         PRIMARY KEY (site, region)
     );
     INSERT INTO region_state (site, region, at, state)
         SELECT a.site, 'default', COALESCE(l.at, 0), a.state
         FROM alert_state a LEFT JOIN latest l ON l.site = a.site
         WHERE left(a.site, 1) <> '@';
     CREATE TABLE schedule (
         site TEXT COLLATE \"C\" NOT NULL,
         region TEXT COLLATE \"C\" NOT NULL,
         every_ms BIGINT NOT NULL,
         next_due_ms BIGINT NOT NULL,
         holder TEXT,
         PRIMARY KEY (region, site)
     );
     CREATE INDEX schedule_due ON schedule (region, next_due_ms);
     CREATE TABLE probers (
         id TEXT PRIMARY KEY,
         region TEXT NOT NULL,
         started_at BIGINT NOT NULL,
         seen_at BIGINT NOT NULL
     );",
    // 6: as SQLite's 6.
    "ALTER TABLE outbox ADD COLUMN grouping TEXT;
     ALTER TABLE outbox ADD COLUMN thread TEXT;
     ALTER TABLE incidents ADD COLUMN severity TEXT NOT NULL DEFAULT 'down';
     ALTER TABLE incidents ADD COLUMN group_key TEXT;",
    // 7: one count of incidents for the whole store (as SQLite's), and shared incidents kept
    // once, not per recipient; the older incidents' groups are forgotten (each site counted
    // its own numbers then: two of them with one number were not one incident).
    "UPDATE incidents SET group_key = NULL;
     CREATE TABLE store_identity (id TEXT NOT NULL);
     INSERT INTO store_identity SELECT md5(random()::text || clock_timestamp()::text);
     CREATE SEQUENCE incident_number;
     SELECT setval('incident_number', GREATEST((SELECT MAX(number) FROM incidents), 1),
                   (SELECT COUNT(*) > 0 FROM incidents));
     DELETE FROM alert_state WHERE substr(site, 1, 7) = '@group:';"
];

/// Where the database is: the parsed URL, its TLS setup, and how it is shown (never with its
/// password).
struct Database {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    shown: String,
}

/// The PostgreSQL store: one connection, reopened when it breaks.
pub struct PostgresStore {
    database: Arc<Database>,
    client: Option<Client>,
    /// Statements prepared on the current connection.
    prepared: HashMap<&'static str, Statement>,
}

/// The roots a TLS connection to the database trusts: the `sslrootcert` file's, or the public
/// WebPKI roots.
fn tls_for(root_file: Option<&str>) -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    match root_file {
        Some(file) => {
            let certificates = crate::settings::load_ca_file(std::path::Path::new(file))
                .map_err(|e| format!("sslrootcert: {e}"))?;
            for der in certificates {
                roots
                    .add(der)
                    .map_err(|e| format!("sslrootcert {file}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Waits for a database answer on this thread. The connection itself runs on its own thread,
/// so this needs no runtime here and works inside one (as the SQLite calls do, briefly).
fn wait<F: Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// Whether a database error may pass if tried again (a lost connection, a restart, a deadlock,
/// too many connections) rather than being a mistake of ours or of the setup.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            matches!(class, "08" | "40" | "53" | "57" | "58")
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    }
}

/// A database error in words: the server's message and detail, or the client's chain of causes.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{}: {}", db.code().code(), db.message());
        if let Some(detail) = db.detail() {
            text.push_str(&format!(" ({detail})"));
        }
        return text;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

impl PostgresStore {
    /// Connects to the database at `url`, refuses a `probe` schema that is not ours, and brings
    /// the schema up to date (under an advisory lock: probers starting together migrate once).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let (mut config, root_file) = parse_url(url).map_err(|reason| StoreError::Url {
            store: "the PostgreSQL store".into(),
            reason,
        })?;
        let shown = shown_url(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives_idle(Duration::from_secs(30));
        if config.get_application_name().is_none() {
            config.application_name("probe");
        }
        let tls = tls_for(root_file.as_deref()).map_err(|reason| StoreError::Url {
            store: shown.clone(),
            reason,
        })?;
        let mut store = Self {
            database: Arc::new(Database { config, tls, shown }),
            client: None,
            prepared: HashMap::new(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Another connection to the same database (the delivery task of `probe watch`).
    pub fn reopen(&self) -> Result<Self, StoreError> {
        let mut store = Self {
            database: self.database.clone(),
            client: None,
            prepared: HashMap::new(),
        };
        store.client()?;
        Ok(store)
    }

    /// How the database is named in messages (no password).
    pub fn shown(&self) -> &str {
        &self.database.shown
    }

    fn error(&self, e: tokio_postgres::Error) -> StoreError {
        postgres_error(&self.database.shown, &e)
    }

    fn corrupt(&self, what: &'static str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.database.shown.clone(),
            what,
            reason: e.to_string(),
        }
    }

    fn time(&self, unix: i64) -> Result<OffsetDateTime, StoreError> {
        OffsetDateTime::from_unix_timestamp(unix).map_err(|e| self.corrupt("timestamp", e))
    }

    /// The open connection, made (again) when there is none or it broke.
    fn client(&mut self) -> Result<&Client, StoreError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
            self.prepared.clear();
        }
        if self.client.is_none() {
            let client = connect(&self.database)?;
            wait(client.batch_execute(&format!(
                "SET search_path TO {SCHEMA}; SET statement_timeout = '60s'"
            )))
            .map_err(|e| self.error(e))?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("connected above"))
    }

    /// The statement for `sql`, prepared once per connection.
    fn statement(&mut self, sql: &'static str) -> Result<Statement, StoreError> {
        // Connected (again) first: a new connection forgets what the old one had prepared.
        self.client()?;
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let client = self.client()?;
        let statement = wait(client.prepare(sql));
        let statement = statement.map_err(|e| self.error(e))?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }

    /// The statements for `sqls`, prepared together (one round trip for all that are new).
    fn statements<const N: usize>(
        &mut self,
        sqls: [&'static str; N],
    ) -> Result<[Statement; N], StoreError> {
        self.client()?;
        let missing: Vec<&'static str> = sqls
            .iter()
            .copied()
            .filter(|sql| !self.prepared.contains_key(sql))
            .collect();
        if !missing.is_empty() {
            let client = self.client()?;
            let prepared = wait(try_join_all(missing.iter().map(|sql| client.prepare(sql))));
            let prepared = prepared.map_err(|e| self.error(e))?;
            for (sql, statement) in missing.into_iter().zip(prepared) {
                self.prepared.insert(sql, statement);
            }
        }
        Ok(sqls.map(|sql| self.prepared[sql].clone()))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let shown = self.database.shown.clone();
        let client = self.client()?;
        let result = wait(async {
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK});
                     CREATE SCHEMA IF NOT EXISTS {SCHEMA}"
                ))
                .await?;
            let rows = client
                .query(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = $1 ORDER BY table_name",
                    &[&SCHEMA],
                )
                .await?;
            let tables: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let version = if tables.iter().any(|t| t == "probe_schema") {
                client
                    .query_one("SELECT version FROM probe_schema", &[])
                    .await?
                    .get::<_, i32>(0)
            } else if tables.is_empty() {
                client
                    .batch_execute(
                        "CREATE TABLE probe_schema (version INTEGER NOT NULL);
                         INSERT INTO probe_schema VALUES (0)",
                    )
                    .await?;
                0
            } else {
                client.batch_execute("ROLLBACK").await?;
                return Ok(Err(StoreError::Foreign {
                    path: shown.clone(),
                    what: format!(
                        "its schema {SCHEMA} holds tables {} and no probe_schema",
                        tables.join(", ")
                    ),
                }));
            };
            let supported = MIGRATIONS.len() as i32;
            if version > supported {
                client.batch_execute("ROLLBACK").await?;
                return Ok(Err(StoreError::TooNew {
                    path: shown.clone(),
                    found: i64::from(version),
                    supported: i64::from(supported),
                }));
            }
            for sql in &MIGRATIONS[version as usize..] {
                if !sql.is_empty() {
                    client.batch_execute(sql).await?;
                }
            }
            client
                .execute("UPDATE probe_schema SET version = $1", &[&supported])
                .await?;
            client.batch_execute("COMMIT").await?;
            Ok(Ok(()))
        });
        match result {
            Ok(outcome) => outcome,
            Err(e) => {
                // The connection may be inside the failed transaction: start again next time.
                let error = self.error(e);
                self.client = None;
                self.prepared.clear();
                Err(error)
            }
        }
    }

    /// Runs `work` inside a transaction, committing when it succeeds. A deadlock or
    /// serialisation failure between probers writing together is tried again (at most 3 times).
    fn transaction(
        &mut self,
        work: &mut dyn FnMut(&mut Self) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let begun = wait(self.client()?.batch_execute("BEGIN"));
            begun.map_err(|e| self.error(e))?;
            let outcome = work(self).and_then(|()| {
                let committed = wait(self.client()?.batch_execute("COMMIT"));
                committed.map_err(|e| self.error(e))
            });
            match outcome {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let Some(client) = self.client.as_ref() {
                        if wait(client.batch_execute("ROLLBACK")).is_err() {
                            self.client = None;
                            self.prepared.clear();
                        }
                    }
                    let retry = matches!(&e, StoreError::Postgres { message, .. }
                        if message.starts_with("40P01") || message.starts_with("40001"));
                    if !retry || tries >= 3 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Number of stored results for a site.
    pub fn result_count(&mut self, site: &str) -> Result<i64, StoreError> {
        let statement = self.statement("SELECT COUNT(*) FROM results WHERE site = $1")?;
        let row = wait(self.client()?.query_one(&statement, &[&site]));
        Ok(row.map_err(|e| self.error(e))?.get(0))
    }

    /// Runs a read-only query on `&self`, on a connection of its own when this one is busy or
    /// broken (the trait's readers take `&self`).
    fn read(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
        match self.client.as_ref().filter(|c| !c.is_closed()) {
            Some(client) => wait(client.query(sql, params)).map_err(|e| self.error(e)),
            None => {
                let mut fresh = self.reopen()?;
                let client = fresh.client()?;
                wait(client.query(sql, params)).map_err(|e| self.error(e))
            }
        }
    }

    /// Streams a read-only query's rows to `each` (for reads that may be large).
    fn read_each(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        each: &mut dyn FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let fresh;
        let client = match self.client.as_ref().filter(|c| !c.is_closed()) {
            Some(client) => client,
            None => {
                fresh = self.reopen()?;
                fresh.client.as_ref().expect("reopen connects")
            }
        };
        let rows =
            wait(client.query_raw(sql, params.iter().copied())).map_err(|e| self.error(e))?;
        pin_mut!(rows);
        while let Some(row) = wait(rows.next()) {
            each(&row.map_err(|e| self.error(e))?)?;
        }
        Ok(())
    }

    fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let done = wait(self.client()?.execute(&statement, params));
        done.map_err(|e| self.error(e))
    }

    /// Writes a region's batch inside the caller's transaction, in three round trips: the
    /// results, the region's states, latest reports and uptime counts of every run (each one
    /// statement over arrays, sent together), with a row made for each new site's incident
    /// state; then those rows locked (in site order, so probers writing together cannot
    /// deadlock) and every region's view read; then, once `decide` has settled each site, the
    /// changed incident states and their messages. Incidents (rare) a run at a time.
    fn write_regional(
        &mut self,
        region: &str,
        runs: &[RegionalRun<'_>],
        decide: &mut Decide<'_>,
    ) -> Result<(), StoreError> {
        let [results, regional, latest, uptime, ensure, lock, views] = self.statements([
            "INSERT INTO results (site, at, status, hop, cause, report, region)
             SELECT s, a, st, h, c, r, $7::text
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])
                  AS x (s, a, st, h, c, r)",
            "INSERT INTO region_state (site, region, at, state, seen)
             SELECT s, $2::text, a, st, sn
             FROM unnest($1::text[], $3::bigint[], $4::text[], $5::text[], $6::bool[])
                  AS x (s, a, st, sn, counts)
             WHERE counts
             ON CONFLICT (site, region) DO UPDATE SET at = excluded.at, state = excluded.state,
                                                      seen = excluded.seen",
            "INSERT INTO latest (site, at, report)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])
             ON CONFLICT (site) DO UPDATE SET at = excluded.at, report = excluded.report",
            "INSERT INTO uptime_hourly (site, hour, total, down)
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[])
             ON CONFLICT (site, hour) DO UPDATE SET total = uptime_hourly.total + excluded.total,
                                                    down = uptime_hourly.down + excluded.down",
            "INSERT INTO alert_state (site, state) SELECT unnest($1::text[]), $2::text
             ON CONFLICT (site) DO NOTHING",
            "SELECT site, state FROM alert_state WHERE site = ANY($1::text[]) ORDER BY site FOR UPDATE",
            "SELECT site, region, at, state, seen FROM region_state WHERE site = ANY($1::text[])
             ORDER BY site, region",
        ])?;
        let rows = BatchRows::of(runs);
        let fresh = serde_json::to_string(&AlertState::default()).expect("a state serialises");
        {
            let client = self.client()?;
            let done = wait(futures_util::future::try_join3(
                futures_util::future::try_join(
                    client.execute(
                        &results,
                        &[
                            &rows.sites,
                            &rows.ats,
                            &rows.statuses,
                            &rows.hops,
                            &rows.causes,
                            &rows.history,
                            &region,
                        ],
                    ),
                    client.execute(
                        &regional,
                        &[
                            &rows.last.sites,
                            &region,
                            &rows.last.ats,
                            &rows.last.states,
                            &rows.last.seen,
                            &rows.last.counts,
                        ],
                    ),
                ),
                futures_util::future::try_join(
                    client.execute(
                        &latest,
                        &[&rows.last.sites, &rows.last.ats, &rows.last.reports],
                    ),
                    client.execute(
                        &uptime,
                        &[
                            &rows.hours.sites,
                            &rows.hours.hours,
                            &rows.hours.totals,
                            &rows.hours.downs,
                        ],
                    ),
                ),
                client.execute(&ensure, &[&rows.last.sites, &fresh]),
            ));
            done.map_err(|e| self.error(e))?;
        }
        let (held, seen) = {
            let client = self.client()?;
            let read = wait(futures_util::future::try_join(
                client.query(&lock, &[&rows.last.sites]),
                client.query(&views, &[&rows.last.sites]),
            ));
            read.map_err(|e| self.error(e))?
        };
        let mut states: HashMap<String, AlertState> = HashMap::with_capacity(held.len());
        for row in &held {
            let state = serde_json::from_str(row.get::<_, &str>(1))
                .map_err(|e| self.corrupt("alert state", e))?;
            states.insert(row.get(0), state);
        }
        let mut regions: HashMap<&str, Vec<RegionView>> = HashMap::new();
        for row in &seen {
            regions
                .entry(row.get(0))
                .or_default()
                .push(self.region_view(row)?);
        }
        let mut decided: Vec<(usize, AlertState, Vec<NewMessage>)> = Vec::new();
        for (index, run) in runs.iter().enumerate() {
            let current = states.get(run.site).cloned().unwrap_or_default();
            let views = regions.get(run.site).map_or(&[][..], Vec::as_slice);
            if let Some((state, messages)) = decide(index, &current, views, &mut *self)? {
                states.insert(run.site.to_string(), state.clone());
                decided.push((index, state, messages));
            }
        }
        if decided.is_empty() {
            return Ok(());
        }
        let [upsert, outbox] = self.statements([STATE_UPSERT, OUTBOX_INSERT])?;
        let mut last: std::collections::BTreeMap<&str, String> = Default::default();
        for (index, state, _) in &decided {
            let text = serde_json::to_string(state).expect("an alert state serialises");
            last.insert(runs[*index].site, text);
        }
        let (sites, texts): (Vec<&str>, Vec<String>) = last.into_iter().unzip();
        let queued =
            QueuedRows::of(decided.iter().map(|(index, _, messages)| {
                (super::stamp_of(runs[*index].at), messages.as_slice())
            }));
        {
            let client = self.client()?;
            let done = wait(futures_util::future::try_join(
                client.execute(&upsert, &[&sites, &texts]),
                queued.insert(client, &outbox),
            ));
            done.map_err(|e| self.error(e))?;
        }
        for (index, state, _) in decided.iter().filter(|(_, s, _)| s.incident > 0) {
            self.write_incident(&runs[*index], state)?;
        }
        Ok(())
    }

    /// The incident a decided state belongs to, and its cause history (as the SQLite store
    /// does).
    fn write_incident(
        &mut self,
        run: &RegionalRun<'_>,
        state: &AlertState,
    ) -> Result<(), StoreError> {
        let at = super::stamp_of(run.at);
        for row in super::incident_rows(state, run.report, at) {
            let id: i64 = {
                let statement = self.statement(
                    "WITH made AS (
                         INSERT INTO incidents (site, number, opened_at, severity, group_key)
                         VALUES ($1::text, $2::bigint, $3::bigint, $4::text, $5::text)
                         ON CONFLICT (site, number) DO NOTHING RETURNING id)
                     SELECT id FROM made
                     UNION ALL SELECT id FROM incidents WHERE site = $1 AND number = $2",
                )?;
                let severity = row.severity.as_str();
                let found = wait(self.client()?.query_one(
                    &statement,
                    &[
                        &run.site,
                        &row.number,
                        &row.opened_at,
                        &severity,
                        &row.group,
                    ],
                ));
                found.map_err(|e| self.error(e))?.get(0)
            };
            if let Some(cause) = row.cause {
                self.execute(
                    "INSERT INTO incident_causes (incident_id, at, cause, summary, evidence)
                     SELECT $1::bigint, $2::bigint, $3::text, $4::text, $5::text
                     WHERE (SELECT cause FROM incident_causes WHERE incident_id = $1
                            ORDER BY id DESC LIMIT 1) IS DISTINCT FROM $3",
                    &[&id, &at, &cause.as_str(), &row.summary, &row.evidence],
                )?;
                // Open again: the site failed again inside the shared incident it was in.
                self.execute(
                    "UPDATE incidents SET closed_at = NULL WHERE id = $1 AND closed_at IS NOT NULL",
                    &[&id],
                )?;
            } else {
                self.execute(
                    "UPDATE incidents SET closed_at = $1 WHERE id = $2 AND closed_at IS NULL",
                    &[&at, &id],
                )?;
            }
        }
        Ok(())
    }

    /// Runs a whole copy into this store in one transaction (`copy::sqlite_to_postgres`): the
    /// store must hold no probe data yet; `work` writes each table's chunks through the sink it
    /// is given. The id sequences continue after the copied ids.
    pub(super) fn import(&mut self, work: &mut CopyWork<'_>) -> Result<Copied, StoreError> {
        let begun = wait(self.client()?.batch_execute("BEGIN"));
        begun.map_err(|e| self.error(e))?;
        let outcome = self.import_within(work).and_then(|copied| {
            let committed = wait(self.client()?.batch_execute("COMMIT"));
            committed.map_err(|e| self.error(e)).map(|()| copied)
        });
        if outcome.is_err() {
            if let Some(client) = self.client.as_ref() {
                let _ = wait(client.batch_execute("ROLLBACK"));
            }
        }
        outcome
    }

    fn import_within(&mut self, work: &mut CopyWork<'_>) -> Result<Copied, StoreError> {
        let held: i64 = {
            let client = self.client()?;
            let row = wait(client.query_one(
                "SELECT (SELECT COUNT(*) FROM results) + (SELECT COUNT(*) FROM alert_state)
                      + (SELECT COUNT(*) FROM incidents) + (SELECT COUNT(*) FROM outbox)",
                &[],
            ));
            row.map_err(|e| self.error(e))?.get(0)
        };
        if held > 0 {
            return Err(StoreError::Postgres {
                store: self.database.shown.clone(),
                message: "holds probe data already: migrate into a new database (or drop its \
                          schema probe first)"
                    .into(),
                transient: false,
            });
        }
        let copied = {
            let shown = self.database.shown.clone();
            let client: &Client = self.client()?;
            let mut sink = |table: &Table, chunk: &[Column], _rows: usize| {
                let names: Vec<&str> = table.columns.iter().map(|c| c.1).collect();
                let arrays: Vec<String> = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match c.2 {
                        Kind::Integer => format!("${}::bigint[]", i + 1),
                        Kind::Text => format!("${}::text[]", i + 1),
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO {} ({}) SELECT * FROM unnest({})",
                    table.name,
                    names.join(", "),
                    arrays.join(", ")
                );
                let params: Vec<&(dyn ToSql + Sync)> = chunk
                    .iter()
                    .map(|column| match column {
                        Column::Integers(v) => v as &(dyn ToSql + Sync),
                        Column::Texts(v) => v as &(dyn ToSql + Sync),
                    })
                    .collect();
                wait(client.execute(sql.as_str(), &params))
                    .map(|_| ())
                    .map_err(|e| postgres_error(&shown, &e))
            };
            work(&mut sink)?
        };
        for table in TABLES {
            if let Some(serial) = table.serial {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{SCHEMA}.{name}', '{serial}'),
                                   COALESCE((SELECT MAX({serial}) FROM {name}), 0) + 1, false)",
                    name = table.name
                );
                let done = wait(self.client()?.batch_execute(&sql));
                done.map_err(|e| self.error(e))?;
            }
        }
        // The incident count goes on from the highest number copied.
        let count =
            "SELECT setval('incident_number', GREATEST((SELECT MAX(number) FROM incidents), 1),
                                   (SELECT COUNT(*) > 0 FROM incidents))";
        let done = wait(self.client()?.batch_execute(count));
        done.map_err(|e| self.error(e))?;
        Ok(copied)
    }

    /// A region's view from a row of (site, region, at, state, seen).
    fn region_view(&self, row: &Row) -> Result<RegionView, StoreError> {
        Ok(RegionView {
            region: row.get(1),
            at: self.time(row.get(2))?,
            state: serde_json::from_str(row.get::<_, &str>(3))
                .map_err(|e| self.corrupt("region state", e))?,
            seen: row
                .get::<_, Option<&str>>(4)
                .and_then(|s| serde_json::from_str(s).ok()),
        })
    }

    fn outbox_row(&self, row: &Row) -> Result<OutboxMessage, StoreError> {
        let channel: String = row.get(7);
        let recipients: String = row.get(2);
        Ok(OutboxMessage {
            id: row.get(0),
            channel: Channel::parse(&channel)
                .ok_or_else(|| self.corrupt("outbox channel", &channel))?,
            key: row.get(1),
            notification: row.get(8),
            recipients: serde_json::from_str(&recipients)
                .map_err(|e| self.corrupt("outbox recipients", e))?,
            subject: row.get(3),
            body_text: row.get(4),
            body_html: row.get(5),
            attempts: row.get::<_, i32>(6) as u32,
            created_at: super::time_of(row.get(9)),
            thread: row.get(10),
        })
    }
}

const STATE_UPSERT: &str = "INSERT INTO alert_state (site, state)
     SELECT * FROM unnest($1::text[], $2::text[])
     ON CONFLICT (site) DO UPDATE SET state = excluded.state";

const OUTBOX_INSERT: &str = "INSERT INTO outbox (key, created_at, recipients, subject, body_text, body_html, next_attempt_at, channel, notification, thread)
     SELECT k, c, r, s, t, h, c, ch, n, th
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
          AS m (k, c, r, s, t, h, ch, n, th)
     ON CONFLICT (key) DO NOTHING";

/// Opens a connection, driven on a thread of its own until the client is dropped or the
/// connection breaks.
fn connect(database: &Arc<Database>) -> Result<Client, StoreError> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let shared = database.clone();
    let spawned = std::thread::Builder::new()
        .name("probe-postgres".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = sender.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                match shared.config.connect(shared.tls.clone()).await {
                    Ok((client, connection)) => {
                        if sender.send(Ok(Ok(client))).is_ok() {
                            let _ = connection.await;
                        }
                    }
                    Err(e) => {
                        let _ = sender.send(Ok(Err(e)));
                    }
                }
            });
        });
    let thread_failed = |reason: String| StoreError::Postgres {
        store: database.shown.clone(),
        message: format!("cannot start the connection's thread: {reason}"),
        transient: true,
    };
    if let Err(e) = spawned {
        return Err(thread_failed(e.to_string()));
    }
    match receiver.recv() {
        Ok(Ok(Ok(client))) => Ok(client),
        Ok(Ok(Err(e))) => Err(postgres_error(&database.shown, &e)),
        Ok(Err(reason)) => Err(thread_failed(reason)),
        Err(_) => Err(thread_failed("it ended early".into())),
    }
}

fn postgres_error(shown: &str, e: &tokio_postgres::Error) -> StoreError {
    StoreError::Postgres {
        store: shown.to_string(),
        message: describe(e),
        transient: is_transient(e),
    }
}

/// One statement's columns for a batch of runs.
struct BatchRows<'a> {
    sites: Vec<&'a str>,
    ats: Vec<i64>,
    statuses: Vec<&'static str>,
    hops: Vec<&'static str>,
    causes: Vec<&'static str>,
    history: Vec<String>,
    /// Each site's last run of the batch: its state and latest report.
    last: LastRows<'a>,
    hours: HourRows<'a>,
}

struct LastRows<'a> {
    sites: Vec<&'a str>,
    ats: Vec<i64>,
    states: Vec<String>,
    reports: Vec<String>,
    /// What each showed, for the regions' side-by-side view.
    seen: Vec<String>,
    /// Whether the region's state is written (not while the prober is cut off).
    counts: Vec<bool>,
}

struct HourRows<'a> {
    sites: Vec<&'a str>,
    hours: Vec<i64>,
    totals: Vec<i64>,
    downs: Vec<i64>,
}

impl<'a> BatchRows<'a> {
    fn of(runs: &[RegionalRun<'a>]) -> Self {
        let mut rows = BatchRows {
            sites: Vec::with_capacity(runs.len()),
            ats: Vec::with_capacity(runs.len()),
            statuses: Vec::with_capacity(runs.len()),
            hops: Vec::with_capacity(runs.len()),
            causes: Vec::with_capacity(runs.len()),
            history: Vec::with_capacity(runs.len()),
            last: LastRows {
                sites: Vec::new(),
                ats: Vec::new(),
                states: Vec::new(),
                reports: Vec::new(),
                seen: Vec::new(),
                counts: Vec::new(),
            },
            hours: HourRows {
                sites: Vec::new(),
                hours: Vec::new(),
                totals: Vec::new(),
                downs: Vec::new(),
            },
        };
        // An upsert may touch a row once per statement: the last run of each site wins, and
        // each (site, hour) is counted once. Sorted by site, so probers writing together take
        // their row locks in one order (no deadlock between them).
        let mut last: std::collections::BTreeMap<&'a str, usize> = Default::default();
        let mut hours: std::collections::BTreeMap<(&'a str, i64), (i64, i64)> = Default::default();
        for (index, run) in runs.iter().enumerate() {
            let at = super::stamp_of(run.at);
            let d = &run.report.diagnosis;
            let full = serde_json::to_string(run.report).expect("a report serialises");
            rows.sites.push(run.site);
            rows.ats.push(at);
            rows.statuses.push(d.status.as_str());
            rows.hops.push(d.hop.as_str());
            rows.causes.push(d.cause.as_str());
            rows.history
                .push(super::history_row(run.report, &full).into_owned());
            last.insert(run.site, index);
            let count = hours
                .entry((run.site, at - at.rem_euclid(3600)))
                .or_default();
            count.0 += 1;
            count.1 += i64::from(d.status == crate::observe::Status::Down);
        }
        for (site, index) in last {
            let run = &runs[index];
            rows.last.sites.push(site);
            rows.last.ats.push(super::stamp_of(run.at));
            rows.last.states.push(
                run.state
                    .map(|s| serde_json::to_string(s).expect("an alert state serialises"))
                    .unwrap_or_default(),
            );
            rows.last.counts.push(run.state.is_some());
            rows.last
                .reports
                .push(serde_json::to_string(run.report).expect("a report serialises"));
            rows.last.seen.push(
                serde_json::to_string(&RegionSeen::of(run.report)).expect("a view serialises"),
            );
        }
        for ((site, hour), (total, down)) in hours {
            rows.hours.sites.push(site);
            rows.hours.hours.push(hour);
            rows.hours.totals.push(total);
            rows.hours.downs.push(down);
        }
        rows
    }
}

/// The outbox rows of queued messages, one column each.
struct QueuedRows<'a> {
    keys: Vec<&'a str>,
    created: Vec<i64>,
    recipients: Vec<String>,
    subjects: Vec<&'a str>,
    texts: Vec<&'a str>,
    htmls: Vec<&'a str>,
    channels: Vec<&'static str>,
    notifications: Vec<&'a str>,
    threads: Vec<Option<&'a str>>,
}

impl<'a> QueuedRows<'a> {
    fn of(batches: impl Iterator<Item = (i64, &'a [NewMessage])>) -> Self {
        let mut rows = QueuedRows {
            keys: Vec::new(),
            created: Vec::new(),
            recipients: Vec::new(),
            subjects: Vec::new(),
            texts: Vec::new(),
            htmls: Vec::new(),
            channels: Vec::new(),
            notifications: Vec::new(),
            threads: Vec::new(),
        };
        for (at, messages) in batches {
            for m in messages {
                rows.keys.push(&m.key);
                rows.created.push(at);
                rows.recipients
                    .push(serde_json::to_string(&m.recipients).expect("strings serialise"));
                rows.subjects.push(&m.subject);
                rows.texts.push(&m.body_text);
                rows.htmls.push(&m.body_html);
                rows.channels.push(m.channel.as_str());
                rows.notifications.push(&m.notification);
                rows.threads.push(m.thread.as_deref());
            }
        }
        rows
    }

    async fn insert(
        &self,
        client: &Client,
        statement: &Statement,
    ) -> Result<u64, tokio_postgres::Error> {
        if self.keys.is_empty() {
            return Ok(0);
        }
        client
            .execute(
                statement,
                &[
                    &self.keys,
                    &self.created,
                    &self.recipients,
                    &self.subjects,
                    &self.texts,
                    &self.htmls,
                    &self.channels,
                    &self.notifications,
                    &self.threads,
                ],
            )
            .await
    }
}

impl PostgresStore {
    /// A shared incident's state, its row held (an advisory lock: the row may not exist yet)
    /// until the transaction ends.
    fn read_shared(&mut self, key: &str) -> Result<Option<GroupState>, StoreError> {
        let [lock, read] = self.statements([
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            "SELECT state FROM alert_state WHERE site = $1",
        ])?;
        let row = {
            let client = self.client()?;
            wait(client.execute(&lock, &[&key]))
                .and_then(|_| wait(client.query_opt(&read, &[&key])))
        };
        let row = row.map_err(|e| self.error(e))?;
        row.map(|row| {
            serde_json::from_str(row.get::<_, &str>(0))
                .map_err(|e| self.corrupt("shared incident", e))
        })
        .transpose()
    }
}

/// Called inside the transaction that decides a batch.
impl super::Ledger for PostgresStore {
    fn next_incident(&mut self) -> Result<u64, StoreError> {
        let [next] = self.statements(["SELECT nextval('incident_number')"])?;
        let row = wait(self.client()?.query_one(&next, &[]));
        Ok(row.map_err(|e| self.error(e))?.get::<_, i64>(0) as u64)
    }

    fn shared(&mut self, key: &str) -> Result<Option<GroupState>, StoreError> {
        self.read_shared(&store_key(key))
    }

    fn put_shared(&mut self, state: &GroupState) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).expect("a shared incident serialises");
        let key = store_key(&state.key);
        let [upsert] = self.statements([STATE_UPSERT])?;
        let (keys, states) = ([key.as_str()], [text.as_str()]);
        let done = wait(
            self.client()?
                .execute(&upsert, &[&keys.as_slice(), &states.as_slice()]),
        );
        done.map(|_| ()).map_err(|e| self.error(e))
    }
}

impl Store for PostgresStore {
    fn another_connection(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(self.reopen()?))
    }

    fn alert_state(&self, site: &str) -> Result<AlertState, StoreError> {
        let rows = self.read("SELECT state FROM alert_state WHERE site = $1", &[&site])?;
        match rows.first() {
            None => Ok(AlertState::default()),
            Some(row) => serde_json::from_str(row.get::<_, &str>(0))
                .map_err(|e| self.corrupt("alert state", e)),
        }
    }

    fn region_state(&self, site: &str, region: &str) -> Result<AlertState, StoreError> {
        let rows = self.read(
            "SELECT state FROM region_state WHERE site = $1 AND region = $2",
            &[&site, &region],
        )?;
        match rows.first() {
            None => Ok(AlertState::default()),
            Some(row) => serde_json::from_str(row.get::<_, &str>(0))
                .map_err(|e| self.corrupt("region state", e)),
        }
    }

    fn region_states(&self, sites: &[&str], region: &str) -> Result<Vec<AlertState>, StoreError> {
        let rows = self.read(
            "SELECT site, state FROM region_state WHERE region = $2 AND site = ANY($1::text[])",
            &[&sites, &region],
        )?;
        let mut found: HashMap<&str, AlertState> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let state = serde_json::from_str(row.get::<_, &str>(1))
                .map_err(|e| self.corrupt("region state", e))?;
            found.insert(row.get(0), state);
        }
        Ok(sites
            .iter()
            .map(|s| found.get(s).cloned().unwrap_or_default())
            .collect())
    }

    fn record_regional(
        &mut self,
        region: &str,
        runs: &[RegionalRun<'_>],
        decide: &mut Decide<'_>,
    ) -> Result<(), StoreError> {
        self.transaction(&mut |store| store.write_regional(region, runs, &mut *decide))
    }

    fn defer_message(&mut self, id: i64, until: OffsetDateTime) -> Result<(), StoreError> {
        self.execute(
            "UPDATE outbox SET next_attempt_at = $1 WHERE id = $2",
            &[&super::stamp_of(until), &id],
        )
        .map(|_| ())
    }

    fn record_state(
        &mut self,
        key: &str,
        at: OffsetDateTime,
        state: &AlertState,
        messages: &[NewMessage],
    ) -> Result<(), StoreError> {
        let state = serde_json::to_string(state).expect("an alert state serialises");
        let queued = QueuedRows::of(std::iter::once((super::stamp_of(at), messages)));
        self.transaction(&mut |store| {
            let [upsert, outbox] = store.statements([STATE_UPSERT, OUTBOX_INSERT])?;
            let client = store.client()?;
            let (keys, states) = ([key], [state.as_str()]);
            let done = wait(futures_util::future::try_join(
                client.execute(&upsert, &[&keys.as_slice(), &states.as_slice()]),
                queued.insert(client, &outbox),
            ));
            done.map(|_| ()).map_err(|e| store.error(e))
        })
    }

    fn shared_states(&self) -> Result<Vec<GroupState>, StoreError> {
        let rows = self.read(
            "SELECT state FROM alert_state WHERE substr(site, 1, 8) = '@shared:'
             AND COALESCE(state::json->>'phase', 'idle') <> 'idle' ORDER BY site",
            &[],
        )?;
        rows.iter()
            .map(|row| {
                serde_json::from_str(row.get::<_, &str>(0))
                    .map_err(|e| self.corrupt("shared incident", e))
            })
            .collect()
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
        let queued = QueuedRows::of(std::iter::once((super::stamp_of(at), messages)));
        let mut saved = false;
        self.transaction(&mut |store| {
            saved = false;
            // Probers telling one incident at once take turns; the second finds it moved.
            if store.read_shared(&key)?.as_ref() != Some(expected) {
                return Ok(());
            }
            saved = true;
            let [upsert, outbox] = store.statements([STATE_UPSERT, OUTBOX_INSERT])?;
            let client = store.client()?;
            let (keys, states) = ([key.as_str()], [text.as_str()]);
            let done = wait(futures_util::future::try_join(
                client.execute(&upsert, &[&keys.as_slice(), &states.as_slice()]),
                queued.insert(client, &outbox),
            ));
            done.map(|_| ()).map_err(|e| store.error(e))
        })?;
        Ok(saved)
    }

    fn identity(&self) -> Result<String, StoreError> {
        let rows = self.read("SELECT id FROM store_identity", &[])?;
        rows.first()
            .map(|row| row.get::<_, String>(0))
            .ok_or_else(|| self.corrupt("store identity", "missing"))
    }

    fn region_views(&self, site: &str) -> Result<Vec<RegionView>, StoreError> {
        let rows = self.read(
            "SELECT site, region, at, state, seen FROM region_state WHERE site = $1 ORDER BY region",
            &[&site],
        )?;
        rows.iter().map(|row| self.region_view(row)).collect()
    }

    fn due_messages(&self, now: OffsetDateTime) -> Result<Vec<OutboxMessage>, StoreError> {
        let rows = self.read(
            "SELECT id, key, recipients, subject, body_text, body_html, attempts, channel, notification, created_at, thread
             FROM outbox
             WHERE sent_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1 ORDER BY id",
            &[&super::stamp_of(now)],
        )?;
        rows.iter().map(|row| self.outbox_row(row)).collect()
    }

    fn claim_due(
        &mut self,
        now: OffsetDateTime,
        lease: Duration,
        channels: &[Channel],
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        // Rows another prober is claiming right now are skipped, not waited for; deliveries
        // on a channel this prober cannot make are left to one that can.
        let statement = self.statement(
            "UPDATE outbox SET next_attempt_at = $1 + $2
             WHERE id IN (SELECT id FROM outbox
                          WHERE sent_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1
                            AND channel = ANY($3::text[])
                          ORDER BY id FOR UPDATE SKIP LOCKED)
             RETURNING id, key, recipients, subject, body_text, body_html, attempts, channel, notification, created_at, thread",
        )?;
        let lease = lease.as_secs() as i64;
        let channels: Vec<&str> = channels.iter().map(|c| c.as_str()).collect();
        let rows = wait(
            self.client()?
                .query(&statement, &[&super::stamp_of(now), &lease, &channels]),
        );
        let rows = rows.map_err(|e| self.error(e))?;
        let mut claimed: Vec<OutboxMessage> = rows
            .iter()
            .map(|row| self.outbox_row(row))
            .collect::<Result<_, _>>()?;
        claimed.sort_by_key(|m| m.id);
        Ok(claimed)
    }

    fn shares_work(&self) -> bool {
        true
    }

    fn sync_schedule(
        &mut self,
        region: &str,
        sites: &[(&str, i64, i64)],
    ) -> Result<(), StoreError> {
        let mut sorted: Vec<&(&str, i64, i64)> = sites.iter().collect();
        sorted.sort_by_key(|s| s.0);
        let names: Vec<&str> = sorted.iter().map(|s| s.0).collect();
        let every: Vec<i64> = sorted.iter().map(|s| s.1).collect();
        let first: Vec<i64> = sorted.iter().map(|s| s.2).collect();
        self.transaction(&mut |store| {
            let [upsert, remove] = store.statements([
                "INSERT INTO schedule (site, region, every_ms, next_due_ms)
                 SELECT s, $2::text, e, f FROM unnest($1::text[], $3::bigint[], $4::bigint[]) AS x (s, e, f)
                 ON CONFLICT (region, site) DO UPDATE SET every_ms = excluded.every_ms",
                "DELETE FROM schedule WHERE region = $2 AND NOT (site = ANY($1::text[]))",
            ])?;
            let client = store.client()?;
            let done = wait(futures_util::future::try_join(
                client.execute(&upsert, &[&names, &region, &every, &first]),
                client.execute(&remove, &[&names, &region]),
            ));
            done.map(|_| ()).map_err(|e| store.error(e))
        })
    }

    fn claim_sites(
        &mut self,
        region: &str,
        holder: &str,
        now_ms: i64,
        members_since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        // Each site's owner among the live members by rendezvous hashing (the highest hash of
        // site and member): shares stay put when a member comes or goes, except that member's.
        // Rows another prober is claiming are skipped, not waited for.
        let statement = self.statement(
            "UPDATE schedule s SET next_due_ms = $2 + s.every_ms, holder = $3
             FROM (SELECT c.site FROM schedule c
                   WHERE c.region = $1 AND c.next_due_ms <= $2
                     AND (c.next_due_ms <= $2 - c.every_ms / 2
                          OR $3 = (SELECT m.id FROM probers m
                                   WHERE m.region = $1 AND m.seen_at >= $5
                                   ORDER BY hashtext(c.site || '/' || m.id) DESC, m.id LIMIT 1))
                   ORDER BY c.next_due_ms LIMIT $4 FOR UPDATE SKIP LOCKED) d
             WHERE s.region = $1 AND s.site = d.site
             RETURNING s.site",
        )?;
        let limit = limit as i64;
        let since = super::stamp_of(members_since);
        let rows = wait(
            self.client()?
                .query(&statement, &[&region, &now_ms, &holder, &limit, &since]),
        );
        Ok(rows
            .map_err(|e| self.error(e))?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    fn heartbeat(
        &mut self,
        prober: &str,
        region: &str,
        started: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO probers (id, region, started_at, seen_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET region = excluded.region, seen_at = excluded.seen_at",
            &[
                &prober,
                &region,
                &super::stamp_of(started),
                &super::stamp_of(now),
            ],
        )
        .map(|_| ())
    }

    fn probers(&self) -> Result<Vec<(String, String, OffsetDateTime)>, StoreError> {
        let rows = self.read(
            "SELECT id, region, seen_at FROM probers ORDER BY seen_at, id",
            &[],
        )?;
        rows.iter()
            .map(|row| Ok((row.get(0), row.get(1), self.time(row.get(2))?)))
            .collect()
    }

    fn mark_sent(&mut self, id: i64, at: OffsetDateTime) -> Result<(), StoreError> {
        self.execute(
            "UPDATE outbox SET sent_at = $1, attempts = attempts + 1 WHERE id = $2",
            &[&super::stamp_of(at), &id],
        )
        .map(|_| ())
    }

    fn mark_failed(
        &mut self,
        id: i64,
        error: &str,
        retry_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2 WHERE id = $3",
            &[&error, &super::stamp_of(retry_at), &id],
        )
        .map(|_| ())
    }

    fn mark_given_up(
        &mut self,
        id: i64,
        error: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, given_up_at = $2 WHERE id = $3",
            &[&error, &super::stamp_of(at), &id],
        )
        .map(|_| ())
    }

    fn undelivered(&self) -> Result<Vec<UndeliveredMessage>, StoreError> {
        let rows = self.read(
            "SELECT channel, key, recipients, subject, attempts, created_at, next_attempt_at,
                    given_up_at, last_error
             FROM outbox WHERE sent_at IS NULL ORDER BY id",
            &[],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let channel: String = row.get(0);
            let recipients: Vec<String> = serde_json::from_str(row.get::<_, &str>(2))
                .map_err(|e| self.corrupt("outbox recipients", e))?;
            let given_up: Option<i64> = row.get(7);
            out.push(UndeliveredMessage {
                channel: Channel::parse(&channel)
                    .ok_or_else(|| self.corrupt("outbox channel", &channel))?,
                key: row.get(1),
                destination: recipients.join(", "),
                subject: row.get(3),
                attempts: row.get::<_, i32>(4) as u32,
                created_at: self.time(row.get(5))?,
                next_attempt_at: if given_up.is_some() {
                    None
                } else {
                    Some(self.time(row.get(6))?)
                },
                given_up_at: given_up.map(|t| self.time(t)).transpose()?,
                last_error: row.get(8),
            });
        }
        Ok(out)
    }

    fn prune_results(&mut self, before: OffsetDateTime) -> Result<usize, StoreError> {
        self.execute(
            "DELETE FROM results WHERE at < $1",
            &[&super::stamp_of(before)],
        )
        .map(|n| n as usize)
    }

    fn prune_uptime(&mut self, before: OffsetDateTime) -> Result<usize, StoreError> {
        self.execute(
            "DELETE FROM uptime_hourly WHERE hour < $1",
            &[&super::stamp_of(before)],
        )
        .map(|n| n as usize)
    }

    fn each_latest(&self, each: &mut dyn FnMut(LatestResult)) -> Result<(), StoreError> {
        self.read_each(
            "SELECT site, at, report FROM latest ORDER BY site",
            &[],
            &mut |row| {
                let report: &str = row.get(2);
                each(LatestResult {
                    site: row.get(0),
                    at: self.time(row.get(1))?,
                    report: serde_json::from_str(report).map_err(|e| self.corrupt("report", e))?,
                });
                Ok(())
            },
        )
    }

    fn each_region_view(&self, each: &mut dyn FnMut(&str, RegionView)) -> Result<(), StoreError> {
        self.read_each(
            "SELECT site, region, at, state, seen FROM region_state ORDER BY site, region",
            &[],
            &mut |row| {
                each(row.get::<_, &str>(0), self.region_view(row)?);
                Ok(())
            },
        )
    }

    fn incidents(&self, since: OffsetDateTime) -> Result<Vec<IncidentRecord>, StoreError> {
        let rows = self.read(
            "SELECT i.id, i.site, i.number, i.opened_at, i.closed_at, c.at, c.cause, c.summary, c.evidence, i.severity, i.group_key
             FROM incidents i LEFT JOIN incident_causes c ON c.incident_id = i.id
             WHERE i.closed_at IS NULL OR i.closed_at >= $1
             ORDER BY i.opened_at DESC, i.id DESC, c.id",
            &[&super::stamp_of(since)],
        )?;
        let mut out: Vec<IncidentRecord> = Vec::new();
        let mut last_id = None;
        for row in &rows {
            let id: i64 = row.get(0);
            if last_id != Some(id) {
                last_id = Some(id);
                let closed: Option<i64> = row.get(4);
                let severity: &str = row.get(9);
                out.push(IncidentRecord {
                    site: row.get(1),
                    also: Vec::new(),
                    number: row.get::<_, i64>(2) as u64,
                    severity: crate::alert::Severity::parse(severity)
                        .ok_or_else(|| self.corrupt("incident severity", severity))?,
                    group: row.get(10),
                    opened_at: self.time(row.get(3))?,
                    closed_at: closed.map(|t| self.time(t)).transpose()?,
                    causes: Vec::new(),
                });
            }
            let (at, cause): (Option<i64>, Option<String>) = (row.get(5), row.get(6));
            if let (Some(at), Some(cause)) = (at, cause) {
                let evidence: Option<String> = row.get(8);
                let record = CauseRecord {
                    at: self.time(at)?,
                    cause,
                    summary: row.get::<_, Option<String>>(7).unwrap_or_default(),
                    evidence: serde_json::from_str(evidence.as_deref().unwrap_or("[]"))
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
        let from = super::stamp_of(since) - super::stamp_of(since).rem_euclid(3600);
        self.read_each(
            "SELECT site, hour, total, down FROM uptime_hourly WHERE hour >= $1
             ORDER BY site, hour",
            &[&from],
            &mut |row| {
                let counted = |i: usize| u32::try_from(row.get::<_, i64>(i)).unwrap_or(u32::MAX);
                each(
                    row.get(0),
                    UptimeHour {
                        hour: row.get(1),
                        total: counted(2),
                        down: counted(3),
                    },
                );
                Ok(())
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_keep_in_step_with_the_sqlite_store() {
        assert_eq!(MIGRATIONS.len(), super::super::sqlite::MIGRATIONS.len());
    }
}
