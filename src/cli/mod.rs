//! Command-line arguments: clap parses them raw (`Cli`), `Cli::settings` checks them into the
//! `ProbeSettings` the library uses. Every rejection names the argument and what was expected.

use std::net::SocketAddr;
use std::path::PathBuf;

pub mod commands;

use clap::Parser;

use crate::diagnose::BudgetPhase;
use crate::settings::{self, Place, ProbeSettings, Problem, SiteInput, Written};

/// Most --samples accepted for one ad-hoc run.
const MAX_SAMPLES: u32 = 100;

/// Look at a site along the edge route and the origin route, and show what each one saw.
#[derive(Debug, Parser)]
#[command(
    name = "probe",
    version,
    about,
    long_about = None,
    after_help = "Other commands:\n  probe run [-c probes.yaml]           one pass over every configured site: probe, confirm, alert, store\n  probe watch [-c probes.yaml]         the same, each site on its interval, until SIGTERM (SIGHUP reloads)\n  probe check-config [-c probes.yaml]  validate and explain a config (--schema prints its JSON Schema)\n  probe outbox [-c probes.yaml]        notifications waiting to be delivered, and those refused for good\n  probe diagnose FILE.json             diagnose a saved --json report again, offline"
)]
pub struct Cli {
    /// The site: a host name or URL (`example.com` means `https://example.com/`).
    pub target: String,

    /// An origin address to probe directly with the site's Host and SNI (like curl --resolve).
    /// Repeat for several origins. PORT defaults to the URL's port.
    #[arg(long = "origin", value_name = "ADDR[:PORT]")]
    pub origins: Vec<String>,

    /// Dial this address for the edge route instead of what DNS answers (like curl --connect-to).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub edge: Option<String>,

    /// A file the web server serves without PHP, probed on every route next to the page,
    /// e.g. /wp-includes/css/dashicons.min.css.
    #[arg(long, value_name = "PATH")]
    pub static_path: Option<String>,

    /// PHP-FPM's status page on the origin (its pm.status_path, e.g. /fpm-status), read with
    /// ?json&full on the origin route: the pool's own account of busy workers and its queue.
    #[arg(long, value_name = "PATH")]
    pub fpm_status: Option<String>,

    /// nginx's stub_status page on the origin (e.g. /nginx_status), read on the origin route.
    #[arg(long, value_name = "PATH")]
    pub nginx_status: Option<String>,

    /// A header the status requests carry, its value read from the environment variable VAR
    /// (never written on the command line), e.g. X-Status-Token=FPM_STATUS_TOKEN.
    #[arg(long, value_name = "NAME=VAR")]
    pub status_header: Option<String>,

    /// Send our DNS queries to this server instead of the system's (PORT defaults to 53).
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub resolver: Option<String>,

    /// Extra trusted CA certificates (PEM), on both routes. Repeatable.
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,

    /// Deadline for each request, all phases included (e.g. 10s, 2500ms).
    #[arg(long, value_name = "DUR", default_value = "10s")]
    pub timeout: String,

    /// Repeat each request N times, one after the other on each route.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub samples: u32,

    /// Statuses the page may answer with while healthy, e.g. 200,401 for a site behind a login
    /// (default: any status below 400).
    #[arg(long, value_name = "CODE,…", value_delimiter = ',')]
    pub expect_status: Vec<u16>,

    /// How long a phase may take before a working site is slow, e.g. ttfb=2s (the default),
    /// dns=1s, connect=1s, tls=1s, total=5s. Repeatable, or comma-separated; a phase without
    /// one is not judged (budget: in probes.yaml).
    #[arg(long, value_name = "PHASE=DUR", value_delimiter = ',')]
    pub budget: Vec<String>,

    /// Requests made at once to one origin address (default 2): probe takes turns, so it
    /// never becomes the load it diagnoses on a small PHP-FPM pool (a status page read takes
    /// every turn).
    #[arg(long, value_name = "N")]
    pub per_origin: Option<u32>,

    /// Follow up to N redirects to the same scheme, host and port (at most 5; default: none,
    /// a redirect is recorded as it is). Other hosts only when named by --redirect-host.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub follow_redirects: u32,

    /// Another host a followed redirect may go to (e.g. www.example.com). Repeatable.
    #[arg(long = "redirect-host", value_name = "NAME")]
    pub redirect_hosts: Vec<String>,

    /// The edge is Cloudflare although its address is outside Cloudflare's published ranges (a
    /// Cloudflare Tunnel, a private edge address, a test stand-in): its Cloudflare headers and
    /// pages are then taken as proof, not as a claim.
    #[arg(long)]
    pub cloudflare_edge: bool,

    /// Print one JSON object (schema 1) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `probe diagnose FILE.json`: diagnose a saved `--json` report again, without a network.
#[derive(Debug, Parser)]
#[command(
    name = "probe diagnose",
    version,
    about = "Diagnose a saved `probe --json` report again (no network)."
)]
pub struct DiagnoseCli {
    /// A report written by `probe … --json` (`-` for standard input).
    pub file: PathBuf,

    /// Print one JSON object (schema 1) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `-c FILE`, shared by the commands that read probes.yaml.
#[derive(Debug, clap::Args)]
pub struct ConfigPath {
    /// The config file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "probes.yaml"
    )]
    pub path: PathBuf,
}

/// `--region`, shared by the scheduled commands.
#[derive(Debug, clap::Args)]
pub struct RegionArg {
    /// The region this prober reports as, when several share one PostgreSQL store (default:
    /// $PROBE_REGION, else `default`).
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
}

/// `probe check-config -c probes.yaml`: validate and explain a config file.
#[derive(Debug, Parser)]
#[command(
    name = "probe check-config",
    version,
    about = "Check probes.yaml and explain what it will do."
)]
pub struct CheckConfigCli {
    #[command(flatten)]
    pub config: ConfigPath,

    /// Print the JSON Schema of the config file (for editors) instead.
    #[arg(long)]
    pub schema: bool,

    /// Print the checked config, every effective setting, as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `--log-format`, shared by the scheduled commands.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Log lines as text or as JSON objects (levels via PROBE_LOG, e.g. PROBE_LOG=debug).
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "text")]
    pub format: LogFormat,
}

/// `probe run -c probes.yaml`: one pass over every site.
#[derive(Debug, Parser)]
#[command(
    name = "probe run",
    version,
    about = "Probe every site of probes.yaml once, alert, store the results."
)]
pub struct RunCli {
    #[command(flatten)]
    pub config: ConfigPath,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub region: RegionArg,
    /// After the pass, write the status feeds here (status.json, incidents.atom, metrics,
    /// index.html, badge/*.svg), each file replaced atomically.
    #[arg(long, value_name = "DIR")]
    pub feeds_dir: Option<PathBuf>,
}

/// `probe watch -c probes.yaml`: probe every site on its interval until stopped.
#[derive(Debug, Parser)]
#[command(
    name = "probe watch",
    version,
    about = "Probe every site of probes.yaml on its interval, alert, store; SIGHUP reloads the config, SIGTERM stops gracefully."
)]
pub struct WatchCli {
    #[command(flatten)]
    pub config: ConfigPath,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub region: RegionArg,
    /// Serve the status feeds over HTTP on this address: /, status.json, incidents.atom,
    /// metrics, badge/SITE.svg. IP:PORT (127.0.0.1:9115, [::1]:9115), localhost:PORT (the
    /// loopback address, 127.0.0.1), or :PORT for every interface (0.0.0.0, reachable from other
    /// machines).
    #[arg(long, value_name = "ADDR:PORT", value_parser = listen_address)]
    pub listen: Option<SocketAddr>,
    /// Also answer blackbox_exporter's /probe?target=SITE (configured sites only, each at most
    /// every 5 s, four at once): for a Prometheus scrape config written for blackbox. Off by
    /// default: a public status page needs no probe trigger.
    #[arg(long, requires = "listen")]
    pub probe_endpoint: bool,
}

/// `probe outbox -c probes.yaml`: the notifications not delivered yet, and those given up.
#[derive(Debug, Parser)]
#[command(
    name = "probe outbox",
    version,
    about = "List the notifications waiting to be delivered and those refused for good, with why."
)]
pub struct OutboxCli {
    #[command(flatten)]
    pub config: ConfigPath,
}

/// `probe store migrate --from probe.sqlite --to URL`: move a store up to PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "probe store", version, about = "Work on a store as a whole.")]
pub struct StoreCli {
    #[command(subcommand)]
    pub command: StoreCommand,
}

/// What `probe store` does.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy a SQLite store (alert states, history, incidents, uptime, the outbox) into a new
    /// PostgreSQL store, in one transaction. The SQLite file is left as it was.
    Migrate {
        /// The SQLite store to copy (stop `probe watch` first: the copy takes its writer lock).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The PostgreSQL URL to copy into (its schema `probe` must hold no probe data yet).
        #[arg(
            long,
            value_name = "URL",
            required_unless_present = "to_env",
            conflicts_with = "to_env"
        )]
        to: Option<String>,
        /// The environment variable holding that URL (keeps a password off the command line).
        #[arg(long, value_name = "VAR")]
        to_env: Option<String>,
    },
}

/// `--listen`'s address: `IP:PORT`, `localhost:PORT` (the loopback address) or `:PORT` (every
/// interface). Nothing is looked up: a host name other than localhost is refused.
pub fn listen_address(value: &str) -> Result<SocketAddr, String> {
    use std::net::{IpAddr, Ipv4Addr};
    const FORMS: &str =
        "write IP:PORT (127.0.0.1:9115), localhost:PORT, or :PORT for every interface";
    let value = value.trim();
    let address = match value.parse::<SocketAddr>() {
        Ok(address) => address,
        Err(_) => {
            let Some((host, port)) = value.rsplit_once(':') else {
                return Err(format!("{value:?} has no port: {FORMS}"));
            };
            let port = port
                .parse::<u16>()
                .map_err(|_| format!("{port:?} is not a port (1 to 65535): {FORMS}"))?;
            let ip = if host.is_empty() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else if host.eq_ignore_ascii_case("localhost") {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else if host.parse::<IpAddr>().is_ok() {
                // An IPv6 address without its brackets: `::1:9115` is ambiguous.
                return Err(format!(
                    "{value:?}: an IPv6 address goes in brackets before its port ([::1]:9115)"
                ));
            } else {
                return Err(format!(
                    "{host:?} is not an IP address (host names other than localhost are not looked up): {FORMS}"
                ));
            };
            SocketAddr::new(ip, port)
        }
    };
    if address.port() == 0 {
        return Err(format!(
            "{value:?}: port 0 would pick a port at random; give the port to serve on, e.g. :9115"
        ));
    }
    Ok(address)
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// `probe <site> …`: probe a site now (boxed: it holds every flag).
    Probe(Box<Cli>),
    /// `probe diagnose FILE`: replay a saved report.
    Diagnose(DiagnoseCli),
    /// `probe check-config -c FILE`: validate a config.
    CheckConfig(CheckConfigCli),
    /// `probe run -c FILE`: one pass over every site.
    Run(RunCli),
    /// `probe watch -c FILE`: every site on its interval, until stopped.
    Watch(WatchCli),
    /// `probe outbox -c FILE`: undelivered notifications.
    Outbox(OutboxCli),
    /// `probe store migrate …`: a store moved to PostgreSQL.
    Store(StoreCli),
}

/// Parses the command line (`args` includes the program name). A first argument naming a
/// subcommand selects it; anything else is a site. No site is called `diagnose`: a bare name
/// needs a dot.
pub fn parse_invocation<I, T>(args: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    // A subcommand parses the rest of the line under its own name, for its own --help.
    fn rest<T: Parser>(name: &str, args: &[std::ffi::OsString]) -> Result<T, clap::Error> {
        let words = std::iter::once(std::ffi::OsString::from(format!("probe {name}")));
        T::try_parse_from(words.chain(args.iter().skip(2).cloned()))
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some("diagnose") => rest("diagnose", &args).map(Invocation::Diagnose),
        Some("run") => rest("run", &args).map(Invocation::Run),
        Some("watch") => rest("watch", &args).map(Invocation::Watch),
        Some("check-config") => rest("check-config", &args).map(Invocation::CheckConfig),
        Some("outbox") => rest("outbox", &args).map(Invocation::Outbox),
        Some("store") => rest("store", &args).map(Invocation::Store),
        _ => Cli::try_parse_from(args).map(|cli| Invocation::Probe(Box::new(cli))),
    }
}

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

/// A command-line argument that cannot be used. The message names the argument.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    /// An argument the settings core refused (the first of them).
    #[error("{}", .0.for_command_line())]
    Setting(Problem),
    /// The sample count is out of range.
    #[error("--samples {value}: must be between 1 and {MAX_SAMPLES}")]
    Samples { value: u32 },
    /// An argument (or the environment variable standing for it) is unusable.
    #[error("{argument}: {message}")]
    Argument {
        argument: &'static str,
        message: String,
    },
}

impl RegionArg {
    /// The region: `--region`, else `PROBE_REGION`, else `default`; checked.
    pub fn resolve(&self) -> Result<String, UsageError> {
        let (name, argument) = match (&self.region, std::env::var("PROBE_REGION")) {
            (Some(name), _) => (name.clone(), "--region"),
            (None, Ok(name)) => (name, "PROBE_REGION"),
            (None, Err(_)) => return Ok(crate::config::DEFAULT_REGION.to_string()),
        };
        match crate::config::region_problem(&name) {
            Some(message) => Err(UsageError::Argument { argument, message }),
            None => Ok(name),
        }
    }
}

impl Cli {
    /// Checks every argument; the first problem found is returned.
    pub fn settings(&self) -> Result<ProbeSettings, UsageError> {
        let flag =
            |name: &'static str, value: &str| Written::new(value.to_string(), Place::Flag(name));
        let mut input = SiteInput::new(flag("target", &self.target));
        input.origins = self.origins.iter().map(|o| flag("--origin", o)).collect();
        input.edge = self.edge.as_deref().map(|e| flag("--edge", e));
        input.static_path = self
            .static_path
            .as_deref()
            .map(|p| flag("--static-path", p));
        input.timeout = Some(flag("--timeout", &self.timeout));
        input.resolver = self.resolver.as_deref().map(|r| flag("--resolver", r));
        input.expect_status = self
            .expect_status
            .iter()
            .map(|s| Written::new(*s, Place::Flag("--expect-status")))
            .collect();
        input.follow_redirects = Some(Written::new(
            self.follow_redirects,
            Place::Flag("--follow-redirects"),
        ));
        input.redirect_hosts = self
            .redirect_hosts
            .iter()
            .map(|h| flag("--redirect-host", h))
            .collect();
        input.cloudflare_edge = self.cloudflare_edge;
        input.per_origin = self
            .per_origin
            .map(|n| Written::new(n, Place::Flag("--per-origin")));
        for written in &self.budget {
            let (key, value) = written.split_once('=').unwrap_or((written, ""));
            let phase = BudgetPhase::from_key(key.trim()).ok_or_else(|| UsageError::Argument {
                argument: "--budget",
                message: format!(
                    "{written:?}: write PHASE=DURATION, PHASE one of dns, connect, tls, ttfb, total (e.g. ttfb=2s)"
                ),
            })?;
            input.budget.push((phase, flag("--budget", value)));
        }
        input.fpm_status = self.fpm_status.as_deref().map(|p| flag("--fpm-status", p));
        input.nginx_status = self
            .nginx_status
            .as_deref()
            .map(|p| flag("--nginx-status", p));
        if let Some(written) = &self.status_header {
            // What was written is never repeated: it may be the token itself.
            let usage = |message: &str| UsageError::Argument {
                argument: "--status-header",
                message: message.to_string(),
            };
            let (name, var) = written.split_once('=').ok_or_else(|| {
                usage("write NAME=VAR: the header's name, and the environment variable holding its value (never the value itself)")
            })?;
            let var = var.trim();
            let variable_name = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !variable_name {
                return Err(usage("after = comes the name of the environment variable holding the value (A-Z, 0-9 and _), never the value itself"));
            }
            let value = std::env::var(var).map_err(|_| {
                usage(&format!(
                    "{var} is not set in this environment (it holds the header's value)"
                ))
            })?;
            if self.fpm_status.is_none() && self.nginx_status.is_none() {
                return Err(usage(
                    "goes with --fpm-status or --nginx-status (only the status requests carry it)",
                ));
            }
            input.status_header = Some(settings::StatusHeaderInput {
                name: flag("--status-header", name),
                value_env: flag("--status-header", var),
                value: Some(value),
            });
        }
        let (settings, problems) = settings::check_site(&input, settings::DEFAULT_TIMEOUT);
        if let Some(first) = problems.into_iter().next() {
            return Err(UsageError::Setting(first));
        }
        let mut settings = settings.expect("no problem, so settings");
        if !(1..=MAX_SAMPLES).contains(&self.samples) {
            return Err(UsageError::Samples {
                value: self.samples,
            });
        }
        settings.shared_mut().samples = self.samples;
        let mut roots = Vec::new();
        for path in &self.ca_files {
            roots.extend(
                settings::ca_file(path, &Place::Flag("--ca-file")).map_err(UsageError::Setting)?,
            );
        }
        settings.shared_mut().extra_roots = roots.into();
        Ok(settings)
    }

    /// How the result is printed.
    pub fn output(&self) -> OutputFormat {
        if self.json {
            OutputFormat::Json
        } else {
            OutputFormat::Table
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Nameserver;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("probe").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn every_bad_argument_is_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["not-a-url"], "target \"not-a-url\""),
            (&["ftp://example.com/"], "target \"ftp://example.com/\""),
            (
                &["example.com", "--origin", "db.internal"],
                "--origin \"db.internal\"",
            ),
            (&["example.com", "--edge", "x"], "--edge \"x\""),
            (&["example.com", "--resolver", "x"], "--resolver \"x\""),
            (&["example.com", "--timeout", "soon"], "--timeout \"soon\""),
            (&["example.com", "--timeout", "0s"], "--timeout \"0s\""),
            (&["example.com", "--samples", "0"], "--samples 0"),
            (
                &["example.com", "--expect-status", "200,999"],
                "--expect-status 999",
            ),
            (
                &["example.com", "--static-path", "style.css"],
                "--static-path \"style.css\"",
            ),
            (
                &["example.com", "--static-path", "/a\u{1b}[2Jb.css"],
                "--static-path \"/a\\u{1b}[2Jb.css\": holds a space or a control character",
            ),
            (
                &["example.com", "--static-path", "//evil.example/x.css"],
                "--static-path \"//evil.example/x.css\": starts with '//'",
            ),
            (
                &["example.com", "--fpm-status", "/fpm-status"],
                "--fpm-status: needs an origin address",
            ),
            (
                &[
                    "example.com",
                    "--origin",
                    "10.0.0.1",
                    "--nginx-status",
                    "ns",
                ],
                "--nginx-status \"ns\": must be a path starting with '/'",
            ),
            (
                &["example.com", "--status-header", "X-Token"],
                "--status-header: write NAME=VAR",
            ),
            (
                &["example.com", "--status-header", "X-Token=s3cr3t-value"],
                "--status-header: after = comes the name of the environment variable",
            ),
            (
                &[
                    "example.com",
                    "--status-header",
                    "X-Token=PROBE_TEST_NO_SUCH_VARIABLE",
                ],
                "--status-header: PROBE_TEST_NO_SUCH_VARIABLE is not set",
            ),
            (
                &["example.com", "--origin", "127.0.0.1:0"],
                "--origin \"127.0.0.1:0\": port 0 is not a port",
            ),
            (
                &["https://example.com:0/"],
                "target \"https://example.com:0/\": port 0",
            ),
            (
                &["https://admin:hunter2@example.com/"],
                "target \"https://example.com/\": carries a user name or password",
            ),
            (
                &["example.com", "--ca-file", "/nonexistent/ca.pem"],
                "--ca-file: cannot read CA file /nonexistent/ca.pem",
            ),
            (
                &["example.com", "--budget", "fast=1s"],
                "--budget: \"fast=1s\": write PHASE=DURATION",
            ),
            (
                &["example.com", "--budget", "ttfb=2s,tls=soon"],
                "--budget \"soon\" is not a duration",
            ),
            (
                &["example.com", "--budget", "ttfb=20m"],
                "--budget \"20m\": must be at most 10 minutes",
            ),
        ];
        for (args, expected) in cases {
            let err = cli(args).settings().unwrap_err().to_string();
            assert!(err.starts_with(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn listen_takes_an_ip_localhost_or_every_interface() {
        let ok = |s: &str| listen_address(s).unwrap().to_string();
        assert_eq!(ok("127.0.0.1:9115"), "127.0.0.1:9115");
        assert_eq!(ok("[::1]:9115"), "[::1]:9115");
        assert_eq!(ok("localhost:8080"), "127.0.0.1:8080");
        assert_eq!(ok("LocalHost:8080"), "127.0.0.1:8080");
        assert_eq!(ok(":8080"), "0.0.0.0:8080");
        assert_eq!(ok("0.0.0.0:8080"), "0.0.0.0:8080");
        let refused = |s: &str| listen_address(s).unwrap_err();
        assert_eq!(
            refused("8080"),
            "\"8080\" has no port: write IP:PORT (127.0.0.1:9115), localhost:PORT, or :PORT for every interface"
        );
        assert_eq!(
            refused("localhost:http"),
            "\"http\" is not a port (1 to 65535): write IP:PORT (127.0.0.1:9115), localhost:PORT, or :PORT for every interface"
        );
        assert_eq!(
            refused(":99999"),
            "\"99999\" is not a port (1 to 65535): write IP:PORT (127.0.0.1:9115), localhost:PORT, or :PORT for every interface"
        );
        assert_eq!(
            refused("status.example.com:80"),
            "\"status.example.com\" is not an IP address (host names other than localhost are not looked up): write IP:PORT (127.0.0.1:9115), localhost:PORT, or :PORT for every interface"
        );
        assert_eq!(
            refused("::1:9115"),
            "\"::1:9115\": an IPv6 address goes in brackets before its port ([::1]:9115)"
        );
        assert_eq!(
            refused("localhost:0"),
            "\"localhost:0\": port 0 would pick a port at random; give the port to serve on, e.g. :9115"
        );
    }

    #[test]
    fn defaults() {
        let settings = cli(&["example.com"]).settings().unwrap();
        assert_eq!(settings.target.url(), "https://example.com/");
        assert_eq!(settings.shared.timeout, std::time::Duration::from_secs(10));
        assert_eq!(settings.shared.samples, 1);
        assert!(settings.origins.is_empty());
        assert_eq!(settings.shared.nameserver, Nameserver::System);
        assert_eq!(cli(&["example.com"]).output(), OutputFormat::Table);
        assert_eq!(settings.shared.diagnose.budget.describe(), "ttfb 2 seconds");
        let budget = cli(&[
            "example.com",
            "--budget",
            "ttfb=3s,dns=1s",
            "--budget",
            "total=5s",
        ])
        .settings()
        .unwrap()
        .shared
        .diagnose
        .budget;
        assert_eq!(
            budget.describe(),
            "dns 1 second, ttfb 3 seconds, total 5 seconds"
        );
    }
}
