//! Moving up: a whole SQLite store copied into a new PostgreSQL store (`probe store migrate`).
//! Both are migrated to this probe's schema first, so their tables and columns are the same;
//! each table is then copied row for row, ids included (incident causes keep their incident,
//! outbox rows their ids), in chunks, all in one PostgreSQL transaction: the database ends with
//! the whole store or none of it. The SQLite file is held with its writer lock throughout and
//! is left as it was.

use std::path::Path;

use rusqlite::types::Value;

use super::{PostgresStore, SqliteStore, StoreError};

/// A column's type, the same on both sides.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Integer,
    Text,
}

/// One table: its name, the SQLite expression and name of each column, and its type.
pub(super) struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, &'static str, Kind)],
    /// The id column whose sequence must continue after the copied rows.
    pub serial: Option<&'static str>,
}

use Kind::{Integer as I, Text as T};

/// Every table of the store, parents before the rows that refer to them.
pub(super) const TABLES: &[Table] = &[
    Table {
        name: "results",
        columns: &[
            ("id", "id", I),
            ("site", "site", T),
            ("at", "at", I),
            ("status", "status", T),
            ("hop", "hop", T),
            ("cause", "cause", T),
            ("report", "report", T),
            ("region", "region", T),
        ],
        serial: Some("id"),
    },
    Table {
        name: "incidents",
        columns: &[
            ("id", "id", I),
            ("site", "site", T),
            ("number", "number", I),
            ("opened_at", "opened_at", I),
            ("closed_at", "closed_at", I),
            ("severity", "severity", T),
            ("group_key", "group_key", T),
        ],
        serial: Some("id"),
    },
    Table {
        name: "incident_causes",
        // SQLite orders a cause history by rowid; PostgreSQL by its id.
        columns: &[
            ("rowid", "id", I),
            ("incident_id", "incident_id", I),
            ("at", "at", I),
            ("cause", "cause", T),
            ("summary", "summary", T),
            ("evidence", "evidence", T),
        ],
        serial: Some("id"),
    },
    Table {
        name: "alert_state",
        columns: &[("site", "site", T), ("state", "state", T)],
        serial: None,
    },
    Table {
        name: "region_state",
        columns: &[
            ("site", "site", T),
            ("region", "region", T),
            ("at", "at", I),
            ("state", "state", T),
            ("seen", "seen", T),
        ],
        serial: None,
    },
    Table {
        name: "latest",
        columns: &[
            ("site", "site", T),
            ("at", "at", I),
            ("report", "report", T),
        ],
        serial: None,
    },
    Table {
        name: "uptime_hourly",
        columns: &[
            ("site", "site", T),
            ("hour", "hour", I),
            ("total", "total", I),
            ("down", "down", I),
        ],
        serial: None,
    },
    Table {
        name: "outbox",
        columns: &[
            ("id", "id", I),
            ("key", "key", T),
            ("created_at", "created_at", I),
            ("recipients", "recipients", T),
            ("subject", "subject", T),
            ("body_text", "body_text", T),
            ("body_html", "body_html", T),
            ("attempts", "attempts", I),
            ("next_attempt_at", "next_attempt_at", I),
            ("last_error", "last_error", T),
            ("sent_at", "sent_at", I),
            ("channel", "channel", T),
            ("notification", "notification", T),
            ("given_up_at", "given_up_at", I),
            ("thread", "thread", T),
        ],
        serial: Some("id"),
    },
];

/// Receives one chunk read from a table.
pub(super) type ReadChunk<'a> = dyn FnMut(&[Column], usize) -> Result<(), StoreError> + 'a;

/// Rows copied per statement: bounded memory however large the history.
pub(super) const CHUNK: usize = 2_000;

/// One chunk of a table, a column at a time (NULLs kept).
pub(super) enum Column {
    Integers(Vec<Option<i64>>),
    Texts(Vec<Option<String>>),
}

/// Receives one chunk of a table: its columns and how many rows they hold.
pub(super) type ChunkSink<'a> = dyn FnMut(&Table, &[Column], usize) -> Result<(), StoreError> + 'a;

/// Writes every table through the sink it is given.
pub(super) type CopyWork<'a> = dyn FnMut(&mut ChunkSink<'_>) -> Result<Copied, StoreError> + 'a;

/// How many rows of each table were copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    pub tables: Vec<(&'static str, u64)>,
}

/// Copies the SQLite store at `from` into the PostgreSQL store at `to`, which must hold no
/// probe data yet. `progress` hears each table's count as it is done.
pub fn sqlite_to_postgres(
    from: &Path,
    to: &str,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<Copied, StoreError> {
    let source = SqliteStore::open(from)?;
    let mut target = PostgresStore::open(to)?;
    target.import(&mut |sink| {
        let mut copied = Copied::default();
        for table in TABLES {
            let count = source.export(table, &mut |chunk, rows| sink(table, chunk, rows))?;
            progress(table.name, count);
            copied.tables.push((table.name, count));
        }
        Ok(copied)
    })
}

impl SqliteStore {
    /// Reads a table in chunks of `CHUNK` rows, in its key order, handing each to `each`;
    /// returns the number of rows.
    pub(super) fn export(
        &self,
        table: &Table,
        each: &mut ReadChunk<'_>,
    ) -> Result<u64, StoreError> {
        let list: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}",
            list.join(", "),
            table.name,
            list[0]
        );
        let mut statement = self.conn.prepare(&sql).map_err(|e| self.sqlite(e))?;
        let mut rows = statement.query([]).map_err(|e| self.sqlite(e))?;
        let fresh = |table: &Table| -> Vec<Column> {
            table
                .columns
                .iter()
                .map(|c| match c.2 {
                    Kind::Integer => Column::Integers(Vec::with_capacity(CHUNK)),
                    Kind::Text => Column::Texts(Vec::with_capacity(CHUNK)),
                })
                .collect()
        };
        let mut chunk = fresh(table);
        let (mut in_chunk, mut total) = (0usize, 0u64);
        while let Some(row) = rows.next().map_err(|e| self.sqlite(e))? {
            for (i, column) in chunk.iter_mut().enumerate() {
                let value: Value = row.get(i).map_err(|e| self.sqlite(e))?;
                match (column, value) {
                    (Column::Integers(v), Value::Integer(n)) => v.push(Some(n)),
                    (Column::Integers(v), Value::Null) => v.push(None),
                    (Column::Texts(v), Value::Text(s)) => v.push(Some(s)),
                    (Column::Texts(v), Value::Null) => v.push(None),
                    (_, other) => {
                        return Err(StoreError::Corrupt {
                            path: self.path.clone(),
                            what: "a value to copy",
                            reason: format!(
                                "{}.{} holds {:?}",
                                table.name,
                                table.columns[i].0,
                                other.data_type()
                            ),
                        })
                    }
                }
            }
            in_chunk += 1;
            total += 1;
            if in_chunk == CHUNK {
                each(&chunk, in_chunk)?;
                chunk = fresh(table);
                in_chunk = 0;
            }
        }
        if in_chunk > 0 {
            each(&chunk, in_chunk)?;
        }
        Ok(total)
    }
}
