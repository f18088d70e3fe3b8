//! The `probe` binary: parse arguments, run the library, map the outcome to a monitoring-plugins
//! exit code (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::io::IsTerminal;
use std::process::ExitCode;

use probe::{Invocation, Status};

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PROBE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut stdout = std::io::stdout().lock();
    let cli = match invocation {
        Invocation::Probe(cli) => cli,
        Invocation::Run(run) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("probe: UNKNOWN: cannot start the runtime: {e}");
                    return ExitCode::from(Status::Unknown.exit_code());
                }
            };
            return match runtime.block_on(probe::run_pass(&run, &mut stdout)) {
                Ok(status) => ExitCode::from(status.exit_code()),
                Err(probe::RunError::Config(e)) => {
                    eprintln!("{e}");
                    ExitCode::from(Status::Unknown.exit_code())
                }
                Err(e) => {
                    eprintln!("probe: UNKNOWN: {e}");
                    ExitCode::from(Status::Unknown.exit_code())
                }
            };
        }
        Invocation::CheckConfig(check) => {
            return match probe::run_check_config(&check, &mut stdout) {
                Ok(status) => ExitCode::from(status.exit_code()),
                Err(probe::RunError::Config(e)) => {
                    // Every problem on its own line, file:line:column first, as compilers do.
                    eprintln!("{e}");
                    ExitCode::from(Status::Unknown.exit_code())
                }
                Err(e) => {
                    eprintln!("probe: UNKNOWN: {e}");
                    ExitCode::from(Status::Unknown.exit_code())
                }
            };
        }
        Invocation::Diagnose(diagnose) => {
            return match probe::run_diagnose(&diagnose, &mut stdout) {
                Ok(status) => ExitCode::from(status.exit_code()),
                Err(e) => {
                    eprintln!("probe: UNKNOWN: {e}");
                    ExitCode::from(Status::Unknown.exit_code())
                }
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("probe: UNKNOWN: cannot start the runtime: {e}");
            return ExitCode::from(Status::Unknown.exit_code());
        }
    };
    match runtime.block_on(probe::run(&cli, &mut stdout)) {
        Ok(status) => ExitCode::from(status.exit_code()),
        Err(e) => {
            eprintln!("probe: UNKNOWN: {e}");
            ExitCode::from(Status::Unknown.exit_code())
        }
    }
}
