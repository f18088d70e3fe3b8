//! probe: looks at a website along the edge route and the origin route and records, as evidence,
//! everything each route showed.
//!
//! The pipeline, one module per stage: `cli` (arguments → settings) → `plan` (which requests) →
//! `resolve` (DNS) → `connect` (TCP) → `tls` (handshake, certificate facts) → `http` (one exchange)
//! → `observe` (the evidence types) → `diagnose` → `report`. `engine` drives the stages.

pub mod alert;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod engine;
pub mod feeds;
#[doc(hidden)]
pub mod fuzzing;
pub mod notify;
pub mod observe;
pub mod report;
pub mod schedule;
pub mod settings;
pub mod store;
pub mod text;
pub mod words;

pub use cli::commands::{
    rediagnose, run, run_check_config, run_diagnose, run_outbox, run_pass, run_store, run_watch,
    RunError,
};
pub use cli::{
    parse_invocation, CheckConfigCli, Cli, DiagnoseCli, Invocation, LogFormat, OutboxCli,
    OutputFormat, RunCli, UsageError, WatchCli,
};
pub use engine::ProbeReport;
pub use engine::{probe_site, ProbeError};
pub use observe::{Observation, Status};
pub use settings::ProbeSettings;
