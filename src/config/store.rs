//! `store:` — where results, incidents and alert state are kept, and for how long: an SQLite file
//! (the default, one machine) or a PostgreSQL database (several probers, regions, pools).

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::problems::Checker;
use super::Text;
use crate::settings::database;

/// The store.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file (default `probe.sqlite` beside the config).
    #[schemars(with = "Option<String>")]
    pub path: Option<Text>,
    /// PostgreSQL URL without a password (`postgresql://probe@db.internal/probe`,
    /// `?host=/run/postgresql` for a unix socket, `sslmode=require` for TLS).
    #[schemars(with = "Option<String>")]
    pub url: Option<Text>,
    /// The environment variable holding the PostgreSQL URL (it may hold a password).
    #[schemars(with = "Option<String>")]
    pub url_env: Option<Text>,
    /// How long raw results are kept (default `30d`).
    #[schemars(with = "Option<String>")]
    pub retention: Option<Text>,
}

/// Where the store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(DatabaseUrl),
}

/// A PostgreSQL URL: written in the config (without a password), or named by the environment
/// variable that holds it (read when the store is opened, never kept in the config).
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Written(String),
    FromEnv(String),
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Written(url) => write!(f, "{}", shown(url)),
            DatabaseUrl::FromEnv(var) => write!(f, "${var}"),
        }
    }
}

/// A URL as it may be shown (no password, no parameters).
fn shown(url: &str) -> String {
    database::parse_url(url).map_or_else(
        |_| "an unusable PostgreSQL URL".into(),
        |(config, _)| database::shown_url(&config),
    )
}

impl DatabaseUrl {
    /// The URL itself (from the environment for `url_env`).
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            DatabaseUrl::Written(url) => Ok(url.clone()),
            DatabaseUrl::FromEnv(var) => match std::env::var(var) {
                Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_string()),
                _ => Err(format!(
                    "store.url_env: {var} is not set in this environment (it holds the PostgreSQL URL)"
                )),
            },
        }
    }
}

impl StoreLocation {
    /// The SQLite file, when the store is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            StoreLocation::Sqlite(path) => Some(path),
            StoreLocation::Postgres(_) => None,
        }
    }

    /// The store as `check-config` and messages show it (never a password).
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite(path) => path.display().to_string(),
            StoreLocation::Postgres(DatabaseUrl::Written(url)) => shown(url),
            StoreLocation::Postgres(DatabaseUrl::FromEnv(var)) => match std::env::var(var) {
                Ok(url) => format!("{} (from ${var})", shown(&url)),
                Err(_) => format!("PostgreSQL from ${var} (not set here)"),
            },
        }
    }
}

/// Whether the SQLite store can be made and written at `file` on this machine: its directory
/// exists and this user may write there (SQLite writes the file and its `-wal` and `-shm`
/// files beside it). Nothing is created. `written` is `store.path` where the file gives it.
pub fn check_here(checker: &mut Checker, file: &Path, written: Option<&Text>) {
    let Some(why) = unusable_place(file) else {
        return;
    };
    match written {
        Some(path) => checker.problem(path, "store.path", why),
        None => checker.problems.push(super::ConfigProblem {
            line: 1,
            column: 1,
            path: "store.path".into(),
            message: format!("{why} (the store's default place, beside this file; set store.path to put it elsewhere)"),
        }),
    }
}

/// Why the store cannot be at `file` here, if it cannot.
fn unusable_place(file: &Path) -> Option<String> {
    let shown = |p: &Path| crate::text::printable(&p.display().to_string()).into_owned();
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!(
                "the directory {} does not exist: create it (probe makes the store's file, not its directory), or give a path in a directory that exists",
                shown(dir)
            ));
        }
        Err(e) => {
            return Some(format!(
                "the directory {} cannot be read ({})",
                shown(dir),
                crate::words::io_error(&e)
            ))
        }
        Ok(meta) if !meta.is_dir() => {
            return Some(format!("{} is not a directory", shown(dir)));
        }
        Ok(_) => {}
    }
    if std::fs::metadata(file).is_ok_and(|meta| meta.is_dir()) {
        return Some(format!(
            "{} is a directory: give the store's file, e.g. {}",
            shown(file),
            shown(&file.join("probe.sqlite"))
        ));
    }
    for place in [dir, file] {
        if place.exists() && !writable(place) {
            return Some(format!(
                "{} is not writable by this user ({}): SQLite writes the store and its -wal and -shm files there",
                shown(place),
                this_user()
            ));
        }
    }
    None
}

/// Whether this user may write `path` (asked of the system, nothing written).
#[cfg(unix)]
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) only reads the NUL-terminated path, which outlives the call.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(not(unix))]
fn writable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| !meta.permissions().readonly())
}

/// This user, as a message names it.
#[cfg(unix)]
fn this_user() -> String {
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    format!("uid {}", unsafe { libc::geteuid() })
}

#[cfg(not(unix))]
fn this_user() -> String {
    "the user running probe".into()
}

/// The store's place and the results' retention.
pub fn check(checker: &mut Checker, raw: &StoreConfig, base: &Path) -> (StoreLocation, Duration) {
    let retention = checker.duration(
        raw.retention.as_ref(),
        "store.retention",
        Duration::from_secs(30 * 86_400),
        None,
    );
    let written = [
        raw.path.as_ref().map(|v| (v, "store.path")),
        raw.url.as_ref().map(|v| (v, "store.url")),
        raw.url_env.as_ref().map(|v| (v, "store.url_env")),
    ];
    let mut given = written.iter().flatten();
    if let (Some(_), Some((second, field))) = (given.next(), given.next()) {
        checker.problem(
            second,
            field,
            "give the store once: path (SQLite), url or url_env (PostgreSQL)",
        );
    }
    let location = if let Some(url) = &raw.url {
        let value = url.value.trim();
        match database::parse_url(value) {
            Ok((config, _)) if database::has_password(&config) => {
                checker.problem(url, "store.url", "this URL holds a password: put the whole URL in an environment variable and name it with store.url_env (the password never goes in this file)");
            }
            Ok(_) => {}
            // The reason never repeats the URL.
            Err(reason) => checker.problem(url, "store.url", reason),
        }
        StoreLocation::Postgres(DatabaseUrl::Written(value.to_string()))
    } else if let Some(var) = &raw.url_env {
        checker.secret_variable(var, "store.url_env", "PROBE_DATABASE_URL", "database URL");
        if let Ok(url) = std::env::var(&var.value) {
            if let Err(reason) = database::parse_url(url.trim()) {
                checker.problem(var, "store.url_env", format!("${}: {reason}", var.value));
            }
        }
        StoreLocation::Postgres(DatabaseUrl::FromEnv(var.value.trim().to_string()))
    } else {
        StoreLocation::Sqlite(
            raw.path
                .as_ref()
                .map_or_else(|| base.join("probe.sqlite"), |p| base.join(p.value.trim())),
        )
    };
    (location, retention)
}
