//! The commands behind the command line: each reads its arguments' settings, runs the library
//! and writes what it found. Errors are one value each, turned into words by `main`.

use std::io::Write;

use crate::cli::{
    CheckConfigCli, Cli, DiagnoseCli, OutboxCli, OutputFormat, RunCli, StoreCli, StoreCommand,
    UsageError, WatchCli,
};
use crate::engine::{probe_site, ProbeError};
use crate::engine::{ProbeReport, SCHEMA_VERSION};
use crate::feeds::server as serve;
use crate::observe::{self, Observation, Status};
use crate::schedule::{run, watch};
use crate::{config, diagnose, feeds, report, store, text};

/// Why `run` could not produce a report: bad arguments or a machine that cannot probe.
/// Both mean UNKNOWN (exit 3).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// The config file cannot be used.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A scheduled pass failed (the store, or the probe itself).
    #[error(transparent)]
    Schedule(#[from] run::ScheduleError),
    /// The watch could not start.
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// The feed server cannot listen.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The feeds could not be written.
    #[error("cannot write the feeds to {dir}: {source}")]
    Feeds { dir: String, source: std::io::Error },
    /// A saved report could not be read.
    #[error("{path}: {reason}")]
    Report { path: String, reason: String },
}

/// Runs one ad-hoc probe as the command line asked and writes the result to `out`.
/// Returns the site's status (the exit code follows it).
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<Status, RunError> {
    let settings = cli.settings()?;
    let report = probe_site(&settings).await?;
    let text = match cli.output() {
        OutputFormat::Json => report::render_json(&report),
        OutputFormat::Table => report::render_table(&report),
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(report.status)
}

/// A saved `--json` report, as much of it as a new diagnosis needs. Fields this version does
/// not know are ignored, so reports from newer versions of schema 1 still replay.
#[derive(Debug, serde::Deserialize)]
struct RecordedRun {
    schema: u32,
    target: String,
    host: String,
    #[serde(default)]
    origin_given: bool,
    #[serde(default)]
    resolution: Option<observe::Resolution>,
    observations: Vec<Observation>,
    #[serde(default)]
    cloudflare_edge_declared: bool,
}

/// Diagnoses the text of a saved `--json` report again; the error says why it cannot be read.
pub fn rediagnose(text: &str) -> Result<ProbeReport, String> {
    let recorded: RecordedRun =
        serde_json::from_str(text).map_err(|e| format!("not a `probe --json` report: {e}"))?;
    if recorded.schema != SCHEMA_VERSION {
        return Err(format!(
            "schema {} is not supported (this probe reads schema {})",
            recorded.schema, SCHEMA_VERSION
        ));
    }
    let diagnosis = diagnose::diagnose(
        &recorded.host,
        &recorded.observations,
        &diagnose::DiagnoseSettings {
            cloudflare_edge_declared: recorded.cloudflare_edge_declared,
            ..diagnose::DiagnoseSettings::default()
        },
    );
    Ok(ProbeReport {
        schema: SCHEMA_VERSION,
        target: recorded.target,
        host: recorded.host,
        status: diagnosis.status,
        diagnosis,
        origin_given: recorded.origin_given,
        resolution: recorded.resolution,
        observations: recorded.observations,
        cloudflare_edge_declared: recorded.cloudflare_edge_declared,
        hidden_failure: None,
    })
}

/// Diagnoses a saved report again and writes the result like a live probe would.
pub fn run_diagnose(cli: &DiagnoseCli, out: &mut dyn Write) -> Result<Status, RunError> {
    let path = cli.file.display().to_string();
    let bad = |reason: String| RunError::Report {
        path: path.clone(),
        reason,
    };
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| bad(e.to_string()))?
    } else {
        std::fs::read_to_string(&cli.file)
            .map_err(|e| bad(format!("cannot read it ({})", crate::words::io_error(&e))))?
    };
    let report = rediagnose(&text).map_err(bad)?;
    let text = if cli.json {
        report::render_json(&report)
    } else {
        report::render_table(&report)
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(report.status)
}

/// Checks a config file and explains what it will do; problems come back as
/// `RunError::Config`, every one of them with file:line:column and the field's path.
pub fn run_check_config(cli: &CheckConfigCli, out: &mut dyn Write) -> Result<Status, RunError> {
    if cli.schema {
        out.write_all(config::json_schema().as_bytes())?;
        return Ok(Status::Ok);
    }
    let loaded = config::load(&cli.config.path)?;
    if cli.json {
        let summary = config::summary_json(&cli.config.path, &loaded);
        out.write_all(text::json_pretty(&summary).as_bytes())?;
        out.write_all(b"\n")?;
    } else {
        out.write_all(config::explain(&cli.config.path, &loaded).as_bytes())?;
    }
    out.flush()?;
    Ok(Status::Ok)
}

/// `probe run`: one pass over every site of the config; prints one line per site and returns the
/// worst status.
pub async fn run_pass(cli: &RunCli, out: &mut dyn Write) -> Result<Status, RunError> {
    let region = cli.region.resolve()?;
    let mut loaded = config::load(&cli.config.path)?;
    loaded.config.region = region;
    let mut store = store::open(&loaded.config.store).map_err(|e| RunError::Schedule(e.into()))?;
    let now = run::whole_seconds(time::OffsetDateTime::now_utc());
    // One line per site as it is stored (in the order the sites finish); a failed write ends
    // the lines, and is reported once the pass is over.
    let mut written: std::io::Result<()> = Ok(());
    let mut line = |site: &str, report: &ProbeReport, progress: Option<&str>| {
        if written.is_ok() {
            let d = &report.diagnosis;
            // A healthy run while an incident is still open says so: "OK" alone would read as
            // over.
            let open = progress.map_or(String::new(), |p| format!("  [{p}]"));
            // A failure a retry hid counts in the site's history (an intermittent incident may
            // quote it): the line says it too.
            let hidden = report.hidden_failure.as_ref().map_or(String::new(), |f| {
                let what = f
                    .code
                    .map_or_else(|| f.cause.as_str().to_string(), |c| c.to_string());
                let wait = text::duration(std::time::Duration::from_secs_f64(
                    f.wait_ms.max(0.0) / 1000.0,
                ));
                format!("  (a first attempt failed: {what} after {wait}; a retry answered)")
            });
            written = writeln!(
                out,
                "{:<8} {}  {} · {} ({})  {}{hidden}{open}",
                d.status.as_str().to_uppercase(),
                text::printable(site),
                d.hop.as_str(),
                d.cause.as_str(),
                d.confidence.as_str(),
                text::printable(&d.summary)
            );
        }
    };
    let outcome = run::run_once_with(&loaded.config, store.as_mut(), now, &mut line).await?;
    written?;
    if let Some(dir) = &cli.feeds_dir {
        let snapshot = feeds::snapshot(&loaded.config, store.as_ref(), now)
            .map_err(|e| RunError::Schedule(e.into()))?;
        feeds::render_into_dir(&snapshot, dir).map_err(|source| RunError::Feeds {
            dir: dir.display().to_string(),
            source,
        })?;
    }
    if outcome.cut_off {
        writeln!(
            out,
            "every site and every control check failed: the prober itself looks cut off; site alerts held"
        )?;
    }
    if outcome.mails_sent + outcome.mails_waiting + outcome.mails_given_up > 0 {
        // Why they wait, when they do: a setting to fix is said, not left to `probe outbox`.
        let why = if outcome.waiting_why.is_empty() || outcome.mails_waiting == 0 {
            String::new()
        } else {
            format!(" ({})", text::printable(&outcome.waiting_why.join("; ")))
        };
        writeln!(
            out,
            "notifications: {} sent, {} waiting{why}, {} refused for good",
            outcome.mails_sent, outcome.mails_waiting, outcome.mails_given_up
        )?;
    }
    out.flush()?;
    Ok(outcome.worst())
}

/// `probe watch`: every site on its interval until SIGTERM/SIGINT; OK once stopped gracefully.
pub async fn run_watch(cli: &WatchCli) -> Result<Status, RunError> {
    let region = cli.region.resolve()?;
    let mut loaded = config::load(&cli.config.path)?;
    loaded.config.region = region;
    for warning in &loaded.warnings {
        tracing::warn!(warning = %warning, "config");
    }
    let mut store = store::open(&loaded.config.store).map_err(|e| RunError::Schedule(e.into()))?;
    // Bound before anything starts, so a port in use stops the watch before delivery begins.
    let listener = match cli.listen {
        Some(address) => Some((
            address,
            serve::bind(address)
                .await
                .map_err(|source| RunError::Listen { address, source })?,
        )),
        None => None,
    };
    let delivery_store = store
        .another_connection()
        .map_err(|e| RunError::Schedule(e.into()))?;
    let mut watch = watch::Watch::new(
        cli.config.path.clone(),
        loaded.config,
        store.as_mut(),
        delivery_store,
    );
    let server = listener.map(|(address, listener)| {
        tracing::info!(%address, "serving the feeds");
        let targets = cli.probe_endpoint.then(|| watch.probe_targets());
        tokio::spawn(serve::serve_with(listener, watch.publish_feeds(), targets))
    });
    watch.run().await?;
    if let Some(server) = server {
        server.abort();
    }
    Ok(Status::Ok)
}

/// `probe outbox`: every notification not delivered, waiting or given up, one line each with
/// its destination (a webhook by its host only: its URL may hold a token) and the last error.
/// Reads the store without taking its writer lock, so it works beside a running `probe watch`.
/// Returns CRITICAL when something was given up, WARNING when something waits, OK when empty.
pub fn run_outbox(cli: &OutboxCli, out: &mut dyn Write) -> Result<Status, RunError> {
    let loaded = config::load_to_read(&cli.config.path)?;
    let messages = match &loaded.config.store {
        config::StoreLocation::Sqlite(path) => {
            if !path.exists() {
                writeln!(
                    out,
                    "no store yet at {}: nothing queued",
                    text::printable(&path.display().to_string())
                )?;
                return Ok(Status::Ok);
            }
            let store = store::SqliteStore::open_read_only(path)
                .map_err(|e| RunError::Schedule(e.into()))?;
            store::Store::undelivered(&store)
        }
        location => store::open(location).and_then(|store| store.undelivered()),
    }
    .map_err(|e| RunError::Schedule(e.into()))?;
    let (mut waiting, mut given_up) = (0, 0);
    for m in &messages {
        let destination = match m.channel {
            store::Channel::Mail => m.destination.clone(),
            store::Channel::Webhook => text::endpoint_for_display(&m.destination),
            store::Channel::Chat => m.destination.clone(),
        };
        let state = match (m.given_up_at, m.next_attempt_at) {
            (Some(at), _) => {
                given_up += 1;
                format!("FAILED  given up {}", text::rfc3339(at))
            }
            (None, Some(at)) => {
                waiting += 1;
                format!("QUEUED  next try {}", text::rfc3339(at))
            }
            (None, None) => "QUEUED".to_string(),
        };
        let error = m
            .last_error
            .as_deref()
            .map(|e| format!("  last error: {e}"))
            .unwrap_or_default();
        writeln!(
            out,
            "{state}  {} to {}  {}  attempts {}{}",
            m.channel.as_str(),
            text::printable(&destination),
            text::printable(&m.subject),
            m.attempts,
            text::printable(&error)
        )?;
    }
    writeln!(out, "{waiting} waiting, {given_up} given up")?;
    out.flush()?;
    Ok(if given_up > 0 {
        Status::Down
    } else if waiting > 0 {
        Status::Degraded
    } else {
        Status::Ok
    })
}

/// `probe store migrate`: copies a SQLite store into a new PostgreSQL store, printing each
/// table's count as it is done.
pub fn run_store(cli: &StoreCli, out: &mut dyn Write) -> Result<Status, RunError> {
    let StoreCommand::Migrate { from, to, to_env } = &cli.command;
    let url = match (to, to_env) {
        (Some(url), _) => url.clone(),
        (None, Some(name)) => std::env::var(name).map_err(|_| {
            RunError::Usage(UsageError::Argument {
                argument: "--to-env",
                message: format!("the environment variable {name} is not set"),
            })
        })?,
        (None, None) => unreachable!("clap requires --to or --to-env"),
    };
    let mut written: std::io::Result<()> = Ok(());
    let copied = store::copy::sqlite_to_postgres(from, &url, &mut |table, rows| {
        if written.is_ok() {
            written = writeln!(
                out,
                "{table:<16} {}",
                crate::words::plural(rows, "row", "rows")
            );
        }
    })
    .map_err(|e| RunError::Schedule(e.into()))?;
    written?;
    let rows: u64 = copied.tables.iter().map(|(_, n)| n).sum();
    let shown = crate::settings::database::parse_url(&url)
        .map(|(config, _)| crate::settings::database::shown_url(&config))
        .unwrap_or_else(|_| "the database".into());
    writeln!(
        out,
        "copied {} from {} into {shown}",
        crate::words::plural(rows, "row", "rows"),
        from.display()
    )?;
    Ok(Status::Ok)
}
