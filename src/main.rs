//! The `probe` binary: parse arguments, run the library, map the outcome to a monitoring-plugins
//! exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

use probe::{Invocation, LogFormat, RunError, Status};
use tracing_subscriber::field::MakeExt;

fn main() -> ExitCode {
    let invocation = match probe::parse_invocation(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => {
            // --help and --version are not errors; every real usage error is UNKNOWN (3), not
            // clap's default 2, which would read as CRITICAL to a monitoring system.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(Status::Unknown.exit_code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (log_format, default_level) = match &invocation {
        Invocation::Watch(watch) => (watch.log.format, "info"),
        Invocation::Run(run) => (run.log.format, "warn"),
        _ => (LogFormat::Text, "warn"),
    };
    let asked = std::env::var("PROBE_LOG").unwrap_or_default();
    let filter = tracing_subscriber::EnvFilter::try_new(log_directives(&asked, default_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log_format {
        // JSON escapes C0 controls itself; the rest (C1, bidi overrides) is escaped on the way
        // out, each event being one write of one line.
        LogFormat::Json => logs.json().with_writer(|| EscapedJsonLines).init(),
        // Field values can hold what a server sent (a certificate's name, an error page's text):
        // every control character is shown escaped, so none can forge a line or drive the
        // terminal.
        LogFormat::Text => {
            let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
                let text = format!("{value:?}");
                let shown = probe::text::printable(&text);
                if field.name() == "message" {
                    write!(writer, "{shown}")
                } else {
                    write!(writer, "{field}={shown}")
                }
            })
            .delimited(" ");
            logs.with_ansi(std::io::stderr().is_terminal())
                .fmt_fields(fields)
                .init()
        }
    }
    let mut stdout = std::io::stdout().lock();
    let outcome = match invocation {
        Invocation::Probe(cli) => block_on(probe::run(&cli, &mut stdout)),
        Invocation::Run(run) => block_on(probe::run_pass(&run, &mut stdout)),
        Invocation::Watch(watch) => block_on(probe::run_watch(&watch)),
        Invocation::CheckConfig(check) => probe::run_check_config(&check, &mut stdout),
        Invocation::Diagnose(diagnose) => probe::run_diagnose(&diagnose, &mut stdout),
        Invocation::Outbox(outbox) => probe::run_outbox(&outbox, &mut stdout),
        Invocation::Store(store) => probe::run_store(&store, &mut stdout),
    };
    match outcome {
        Ok(status) => ExitCode::from(status.exit_code()),
        Err(RunError::Config(e)) => {
            // Every config problem on its own line, file:line:column first, as compilers do.
            for line in e.to_string().lines() {
                eprintln!("{}", probe::text::printable(line));
            }
            ExitCode::from(Status::Unknown.exit_code())
        }
        Err(e) => {
            eprintln!("probe: UNKNOWN: {}", probe::text::printable(&e.to_string()));
            ExitCode::from(Status::Unknown.exit_code())
        }
    }
}

/// Standard error for JSON log lines, with every character that could act on a terminal written
/// as a `\uXXXX` escape (the line stays valid JSON, with the same data).
struct EscapedJsonLines;

impl std::io::Write for EscapedJsonLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut stderr = std::io::stderr().lock();
        match std::str::from_utf8(buf) {
            Ok(text) => stderr.write_all(probe::text::json_escaped(text).as_bytes())?,
            Err(_) => stderr.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The log filter: a bare level in `PROBE_LOG` (`debug`) is ours, and other crates stay at
/// `warn` unless named (`PROBE_LOG=debug,h2=trace`): their debug lines (HTTP/2 frames with
/// their headers, paths and queries) would drown ours and could carry a URL's secrets.
fn log_directives(asked: &str, default_level: &str) -> String {
    let mut directives = vec!["warn".to_string(), format!("probe={default_level}")];
    for directive in asked.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if directive.contains('=') || directive.contains('[') {
            directives.push(directive.to_string());
        } else {
            directives.push(format!("probe={directive}"));
        }
    }
    directives.join(",")
}

/// Runs the library's async entry points on a multi-threaded runtime.
fn block_on(future: impl Future<Output = Result<Status, RunError>>) -> Result<Status, RunError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(future)
}
