//! probe: looks at a website along the edge route and the origin route and records, as evidence,
//! everything each route showed.
//!
//! The pipeline, one module per stage: `cli` (arguments → settings) → `plan` (which requests) →
//! `resolve` (DNS) → `connect` (TCP) → `tls` (handshake, certificate facts) → `http` (one exchange)
//! → `observe` (the evidence types) → `status` → `report`. `engine` drives the stages.

pub mod cli;
pub mod cloudflare;
pub mod connect;
pub mod engine;
pub mod http;
pub mod observe;
pub mod plan;
pub mod report;
pub mod resolve;
pub mod status;
pub mod tls;

use std::io::Write;

pub use cli::{Cli, OutputFormat, ProbeSettings, UsageError};
pub use engine::{probe_site, ProbeError};
pub use observe::{Observation, ProbeReport, Status};

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
}

/// Runs one ad-hoc probe as the command line asked and writes the result to `out`.
/// Returns the site's status (the exit code follows it).
pub async fn run(cli: &Cli, out: &mut dyn Write) -> Result<Status, RunError> {
    let settings = cli.settings()?;
    let report = probe_site(&settings).await?;
    let text = match settings.output {
        OutputFormat::Json => report::render_json(&report),
        OutputFormat::Table => report::render_table(&report),
    };
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(report.status)
}
