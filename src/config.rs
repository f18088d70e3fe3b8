//! probes.yaml: the sites `probe run` / `probe watch` look at, and how they alert.
//!
//! Two steps, as in `cli`: serde reads the file as written (`ConfigFile`, every value that needs
//! checking kept with its line and column), then `check` turns it into the `Config` the scheduler
//! uses, reporting every problem at once with file:line:column and the field's path. Secrets are
//! never in the file: the SMTP password is named by an environment variable.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::engine::plan::{parse_ip_port, Target};

/// A scalar kept with where it was written.
pub type Text = Spanned<String>;

/// probes.yaml as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Settings every site inherits unless it sets its own.
    #[serde(default)]
    pub defaults: SiteDefaults,
    /// The sites to probe.
    pub sites: Vec<SiteConfig>,
    /// When and to whom alerts go.
    #[serde(default)]
    pub alerts: AlertConfig,
    /// The mail server alerts go through.
    pub smtp: Option<SmtpConfig>,
    /// Where results, incidents and alert state are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Periods during which alerts are silenced.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceConfig>,
    /// The status feeds (status.json, incidents.atom, metrics, the HTML page, badges).
    #[serde(default)]
    pub feeds: FeedsConfig,
    /// URLs that receive every incident transition as a JSON POST (status-page providers, chat).
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Well-known URLs probed alongside the sites: if every site fails *and* these fail too, the
    /// prober lost its own connectivity and sends one notice instead of one alert per site.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub control_checks: Vec<Text>,
}

/// Per-site settings with a default.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteDefaults {
    /// How often each site is probed (e.g. `1m`). Default 1m.
    #[schemars(with = "Option<String>")]
    pub interval: Option<Text>,
    /// Deadline per request, all phases included (e.g. `10s`). Default 10s.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
    /// A certificate this many days from expiry degrades the site. Default 14.
    pub cert_warning_days: Option<u32>,
    /// Statuses the page may answer with while healthy. Default: any 2xx or 3xx.
    pub expect_status: Option<Vec<u16>>,
    /// Extra trusted CA certificates (PEM) for every site, on both routes (a private CA).
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Text>,
    /// Redirects followed per request, same scheme, host and port only (0-5). Default 0.
    pub follow_redirects: Option<u32>,
    /// Other hosts a followed redirect may go to (e.g. `www.example.com`).
    pub redirect_hosts: Option<Vec<String>>,
    /// The edge is Cloudflare although its address is outside Cloudflare's published ranges (a
    /// Cloudflare Tunnel, a private edge address): its headers count as proof. Default false.
    pub cloudflare_edge: Option<bool>,
}

/// One site.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Name used in alerts and feeds; defaults to the URL's host name. Unique.
    #[schemars(with = "Option<String>")]
    pub name: Option<Text>,
    /// The page to probe (`example.com` means `https://example.com/`).
    #[schemars(with = "String")]
    pub url: Text,
    /// Origin addresses (`IP` or `IP:PORT`), probed directly with the site's Host and SNI.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub origins: Vec<Text>,
    /// Dial this address for the edge route instead of what DNS answers.
    #[schemars(with = "Option<String>")]
    pub edge: Option<Text>,
    /// A file the web server serves without PHP, e.g. `/wp-includes/css/dashicons.min.css`.
    #[schemars(with = "Option<String>")]
    pub static_path: Option<Text>,
    #[schemars(with = "Option<String>")]
    pub interval: Option<Text>,
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
    pub cert_warning_days: Option<u32>,
    pub expect_status: Option<Vec<u16>>,
    pub follow_redirects: Option<u32>,
    pub redirect_hosts: Option<Vec<String>>,
    pub cloudflare_edge: Option<bool>,
    /// Addresses this site's alerts go to, instead of `alerts.to`.
    #[schemars(with = "Option<Vec<String>>")]
    pub alert_to: Option<Vec<Text>>,
}

/// Alert confirmation and routing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Where alerts go.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub to: Vec<Text>,
    /// Retries inside one run before a failure counts (default 2).
    pub confirm_retries: Option<u32>,
    /// Time between those retries (default `5s`).
    #[schemars(with = "Option<String>")]
    pub retry_spacing: Option<Text>,
    /// Consecutive failing runs before an incident opens (default 1).
    pub confirm_runs: Option<u32>,
    /// Consecutive healthy runs before an incident closes (default 2).
    pub recover_runs: Option<u32>,
    /// Repeat an open incident's alert this often (default `4h`).
    #[schemars(with = "Option<String>")]
    pub remind_every: Option<Text>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587). The default.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only when the config says so (port 25).
    Plain,
}

/// The mail server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    #[schemars(with = "String")]
    pub host: Text,
    /// Default: 587 for starttls, 465 for tls, 25 for plain.
    pub port: Option<u16>,
    pub security: Option<SmtpSecurity>,
    #[schemars(with = "Option<String>")]
    pub username: Option<Text>,
    /// The environment variable holding the password (never the password itself).
    #[schemars(with = "Option<String>")]
    pub password_env: Option<Text>,
    /// Send the password even over an unencrypted connection (`security: plain`). Default false:
    /// such a config is refused, since anyone on the path reads the password.
    pub allow_plaintext_auth: Option<bool>,
    /// The sender, e.g. `probe <probe@example.com>`.
    #[schemars(with = "String")]
    pub from: Text,
    /// A PEM file of CA certificates to trust for the SMTP server.
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Text>,
    /// Bound on one delivery (default `30s`).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
}

/// The store.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite file (default `probe.sqlite` beside the config).
    #[schemars(with = "Option<String>")]
    pub path: Option<Text>,
    /// How long raw results are kept (default `30d`).
    #[schemars(with = "Option<String>")]
    pub retention: Option<Text>,
}

/// How the status feeds present the sites.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedsConfig {
    /// The status page's title (default `Status`).
    #[schemars(with = "Option<String>")]
    pub title: Option<Text>,
    /// Where the page is published (e.g. `https://status.example.com/`), for links in the feeds.
    #[schemars(with = "Option<String>")]
    pub url: Option<Text>,
}

/// A webhook: every incident transition POSTed as JSON, retried through the outbox like mail.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (http or https).
    #[schemars(with = "String")]
    pub url: Text,
    /// The environment variable holding a shared secret: each body's HMAC-SHA256 is sent in
    /// `X-Probe-Signature: sha256=HEX`.
    #[schemars(with = "Option<String>")]
    pub secret_env: Option<Text>,
    /// Site names; all sites when absent.
    #[schemars(with = "Option<Vec<String>>")]
    pub sites: Option<Vec<Text>>,
}

/// A period without alerts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Site names; all sites when absent.
    #[schemars(with = "Option<Vec<String>>")]
    pub sites: Option<Vec<Text>>,
    /// RFC 3339, e.g. `2026-12-01T02:00:00Z`.
    #[schemars(with = "String")]
    pub start: Text,
    #[schemars(with = "String")]
    pub end: Text,
    #[schemars(with = "Option<String>")]
    pub reason: Option<Text>,
}

// ---- the checked configuration ----------------------------------------------------------------

/// A site ready to probe.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub target: Target,
    pub origins: Vec<SocketAddr>,
    pub edge: Option<SocketAddr>,
    pub static_path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub cert_warning_days: u32,
    /// Empty: any 2xx or 3xx.
    pub expect_status: Vec<u16>,
    /// Redirects followed per request (same scheme, host and port, or `redirect_hosts`).
    pub follow_redirects: u32,
    /// Other hosts a followed redirect may go to.
    pub redirect_hosts: Vec<String>,
    /// The user declared the edge to be Cloudflare.
    pub cloudflare_edge: bool,
    pub alert_to: Vec<String>,
}

/// Alert settings with defaults applied.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub to: Vec<String>,
    pub confirm_retries: u32,
    pub retry_spacing: Duration,
    pub confirm_runs: u32,
    pub recover_runs: u32,
    pub remind_every: Duration,
}

/// SMTP settings with defaults applied; the password is read from the environment when mail is
/// sent, never kept here.
#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// The password may go over an unencrypted connection (only with `security: plain`).
    pub allow_plaintext_auth: bool,
    pub from: String,
    pub ca_file: Option<PathBuf>,
    /// Bound on one delivery, the whole SMTP conversation.
    pub timeout: Duration,
}

/// A maintenance window.
#[derive(Debug, Clone)]
pub struct MaintenanceWindow {
    /// Empty: every site.
    pub sites: Vec<String>,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub reason: Option<String>,
}

/// A webhook, checked; the secret is read from the environment when a delivery is signed.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret_env: Option<String>,
    /// Empty: every site.
    pub sites: Vec<String>,
}

/// The feeds' presentation, with defaults applied.
#[derive(Debug, Clone)]
pub struct Feeds {
    pub title: String,
    /// The published page's URL, ending in `/`.
    pub url: Option<String>,
}

/// probes.yaml, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub sites: Vec<Site>,
    /// Extra trusted roots for every site (`defaults.ca_file`).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub alerts: Alerts,
    pub smtp: Option<Smtp>,
    pub store_path: PathBuf,
    pub retention: Duration,
    pub maintenance: Vec<MaintenanceWindow>,
    pub control_checks: Vec<Target>,
    pub feeds: Feeds,
    pub webhooks: Vec<Webhook>,
}

/// One problem in the file, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: u64,
    pub column: u64,
    /// The field's path, e.g. `sites[2].origins[0]`.
    pub path: String,
    pub message: String,
}

/// Why a config cannot be used. Displays one line per problem: `file:line:column: path: message`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read it ({source})")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<ConfigProblem>,
    },
}

fn render_problems(file: &str, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}:{}:{}: {}: {}", p.line, p.column, p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A checked config and the warnings about it (things that work but look wrong).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&file, &text, base)
}

/// Parses and checks config text; `file` names it in messages, `base` anchors relative paths.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Loaded, ConfigError> {
    parse_within(file, text, base, MAX_CONFIG_NODES)
}

fn parse_within(
    file: &str,
    text: &str,
    base: &Path,
    max_nodes: usize,
) -> Result<Loaded, ConfigError> {
    let invalid = |problem| ConfigError::Invalid {
        file: file.to_string(),
        problems: vec![problem],
    };
    if text.len() > MAX_CONFIG_BYTES {
        return Err(invalid(ConfigProblem {
            line: 1,
            column: 1,
            path: "(top)".into(),
            message: format!(
                "the file is {} MiB; probe reads at most {} MiB of config (about a million sites)",
                text.len() >> 20,
                MAX_CONFIG_BYTES >> 20
            ),
        }));
    }
    let raw: ConfigFile = serde_saphyr::from_str_with_options(text, parse_options(max_nodes))
        .map_err(|e| invalid(syntax_problem(text, &e, max_nodes)))?;
    let mut checker = Checker::default();
    let config = checker.check(raw, base);
    if checker.problems.is_empty() {
        Ok(Loaded {
            config,
            warnings: checker.warnings,
        })
    } else {
        checker.problems.sort_by_key(|p| (p.line, p.column));
        Err(ConfigError::Invalid {
            file: file.to_string(),
            problems: checker.problems,
        })
    }
}

/// Largest config file read: 100,000 sites take about 10 MiB.
const MAX_CONFIG_BYTES: usize = 128 << 20;
/// The parser's limits, raised from its defaults (250,000 nodes: about 19,000 sites) so that
/// large site lists load, still bounded so a hostile file cannot exhaust memory. Nodes are the
/// file's values, lists and maps.
const MAX_CONFIG_NODES: usize = 20_000_000;

fn parse_options(max_nodes: usize) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    let mut budget = options.budget.clone().unwrap_or_default();
    budget.max_nodes = max_nodes;
    budget.max_events = 2 * max_nodes;
    budget.max_total_scalar_bytes = MAX_CONFIG_BYTES;
    options.budget = Some(budget);
    options
}

/// A serde-saphyr error as a problem: its position, the path of the key there, its message
/// without the source snippet.
fn syntax_problem(text: &str, e: &serde_saphyr::Error, max_nodes: usize) -> ConfigProblem {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let first = e.to_string().lines().next().unwrap_or_default().to_string();
    if first.contains("budget breached") {
        return ConfigProblem {
            line: line.max(1),
            column: column.max(1),
            path: "(top)".into(),
            message: format!(
                "the file is too large to read: probe reads at most {max_nodes} values, lists and maps ({} sites of a few settings each) and {} MiB of text",
                max_nodes / 20,
                MAX_CONFIG_BYTES >> 20
            ),
        };
    }
    let message = match first.split_once(&format!("column {column}: ")) {
        Some((_, rest)) => rest.to_string(),
        None => first.trim_start_matches("error: ").to_string(),
    };
    let message = message
        .trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable")
        .to_string();
    ConfigProblem {
        line,
        column,
        path: path_at(text, line),
        message,
    }
}

/// The path of the key on `line` of block-style YAML (`sites[1].origins`), worked out from
/// indentation: good enough to name the field of a parse error.
fn path_at(text: &str, line: u64) -> String {
    #[derive(Clone)]
    enum Segment {
        Key(String),
        Item(usize),
    }
    let mut stack: Vec<(usize, Segment)> = Vec::new();
    let key_of = |s: &str| -> Option<String> {
        let (key, _) = s.split_once(':')?;
        let key = key.trim();
        (!key.is_empty() && !key.contains(' ') && !key.starts_with('[') && !key.starts_with('{'))
            .then(|| key.trim_matches(|c| c == '"' || c == '\'').to_string())
    };
    for (number, raw) in text.lines().enumerate().take(line as usize) {
        let content = raw.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = raw.len() - content.len();
        if let Some(rest) = content
            .strip_prefix("- ")
            .or((content == "-").then_some(""))
        {
            let mut index = 0;
            while let Some((top_indent, top)) = stack.last().cloned() {
                if top_indent > indent || (top_indent == indent && matches!(top, Segment::Item(_)))
                {
                    if top_indent == indent {
                        if let Segment::Item(i) = top {
                            index = i + 1;
                        }
                    }
                    stack.pop();
                } else {
                    break;
                }
            }
            stack.push((indent, Segment::Item(index)));
            if let Some(key) = key_of(rest) {
                stack.push((indent + 2, Segment::Key(key)));
            }
        } else if let Some(key) = key_of(content) {
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            stack.push((indent, Segment::Key(key)));
        }
        let _ = number;
    }
    let mut path = String::new();
    for (_, segment) in &stack {
        match segment {
            Segment::Key(k) if path.is_empty() => path.push_str(k),
            Segment::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Segment::Item(i) => path.push_str(&format!("[{i}]")),
        }
    }
    if path.is_empty() {
        "(top)".into()
    } else {
        path
    }
}

/// A target problem, naming the value once (as URLs are shown: never a password).
fn target_message(value: &str, e: &crate::engine::plan::TargetError) -> String {
    match e {
        crate::engine::plan::TargetError::NotQualified(_) => e.to_string(),
        _ => format!("{:?}: {e}", crate::text::url_for_display(value)),
    }
}

/// What a site name may hold, for the message that refuses one.
const SITE_NAME_RULE: &str = "a site name is 1 to 100 characters: letters, digits, spaces and punctuation, with no control or invisible formatting characters, not starting with '@' or a space";

/// Whether `name` is a usable site name: it appears in subjects, log lines, file names and
/// XML, so nothing in it may act on a terminal or break a format.
fn valid_site_name(name: &str) -> bool {
    let count = name.chars().count();
    (1..=100).contains(&count)
        && !name.starts_with(char::is_whitespace)
        && !name.ends_with(char::is_whitespace)
        && !name.chars().any(crate::text::is_unsafe)
}

/// An address problem: port 0 said as such, anything else as "not an address".
fn address_message(value: &str, example: bool) -> String {
    if crate::engine::plan::is_port_zero(value.trim()) {
        format!("{value:?}: port 0 is not a port a server can listen on")
    } else if example {
        format!("{value:?} is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)")
    } else {
        format!("{value:?} is not an IP address with an optional port")
    }
}

/// Why `value` is not one mail address the mailer can send to (`None` when it is).
fn mailbox_problem(value: &str) -> Option<String> {
    if value.chars().any(crate::text::is_unsafe) {
        return Some(format!(
            "{value:?} holds a control or invisible character; it would go into a mail header"
        ));
    }
    if value.contains(',') || value.contains(';') {
        return Some(format!(
            "{value:?} holds several addresses; give each its own list entry"
        ));
    }
    match value.parse::<lettre::message::Mailbox>() {
        Ok(mailbox) if mailbox.email.domain().contains('.') || mailbox.email.domain() == "localhost" => None,
        Ok(_) => Some(format!(
            "{value:?}: the domain has no dot (e.g. ops@example.com)"
        )),
        Err(e) => Some(format!(
            "{value:?} is not an email address ({e}); write e.g. ops@example.com or \"Ops <ops@example.com>\""
        )),
    }
}

/// Collects every problem while building the checked config.
#[derive(Default)]
struct Checker {
    problems: Vec<ConfigProblem>,
    warnings: Vec<String>,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl Checker {
    fn problem(&mut self, at: &Text, path: impl fmt::Display, message: impl Into<String>) {
        self.problems.push(ConfigProblem {
            line: at.referenced.line(),
            column: at.referenced.column(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, value: Option<&Text>, path: &str, default: Duration) -> Duration {
        let Some(text) = value else {
            return default;
        };
        match humantime::parse_duration(text.value.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(text, path, "must be longer than zero");
                default
            }
            Err(e) => {
                self.problem(
                    text,
                    path,
                    format!(
                        "{:?} is not a duration ({e}); write e.g. 30s, 5m, 1h",
                        text.value
                    ),
                );
                default
            }
        }
    }

    /// Each address parsed by the mailer's own parser, so what passes here can be sent.
    fn emails(&mut self, list: &[Text], path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, address) in list.iter().enumerate() {
            let value = address.value.trim();
            match mailbox_problem(value) {
                None => out.push(value.to_string()),
                Some(why) => self.problem(address, format!("{path}[{i}]"), why),
            }
        }
        out
    }

    fn check(&mut self, raw: ConfigFile, base: &Path) -> Config {
        let defaults = &raw.defaults;
        let default_interval = self.duration(
            defaults.interval.as_ref(),
            "defaults.interval",
            DEFAULT_INTERVAL,
        );
        let default_timeout = self.duration(
            defaults.timeout.as_ref(),
            "defaults.timeout",
            DEFAULT_TIMEOUT,
        );
        let alerts = self.alerts(&raw.alerts);

        if raw.sites.is_empty() {
            self.problems.push(ConfigProblem {
                line: 1,
                column: 1,
                path: "sites".into(),
                message: "no site to probe: add at least one under `sites:`".into(),
            });
        }
        let mut names = HashSet::new();
        let mut sites = Vec::new();
        for (i, site) in raw.sites.iter().enumerate() {
            let at = format!("sites[{i}]");
            let target = match Target::parse(&site.url.value) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem(
                        &site.url,
                        format!("{at}.url"),
                        target_message(&site.url.value, &e),
                    );
                    None
                }
            };
            let port = target.as_ref().map_or(443, |t| t.port);
            let mut origins = Vec::new();
            for (j, origin) in site.origins.iter().enumerate() {
                match parse_ip_port(origin.value.trim(), port) {
                    Some(a) => origins.push(a),
                    None => self.problem(
                        origin,
                        format!("{at}.origins[{j}]"),
                        address_message(&origin.value, true),
                    ),
                }
            }
            let edge = site.edge.as_ref().and_then(|edge| {
                let parsed = parse_ip_port(edge.value.trim(), port);
                if parsed.is_none() {
                    self.problem(
                        edge,
                        format!("{at}.edge"),
                        address_message(&edge.value, false),
                    );
                }
                parsed
            });
            let static_path =
                site.static_path.as_ref().and_then(
                    |p| match crate::engine::plan::check_static_path(&p.value) {
                        Ok(path) => Some(path),
                        Err(e) => {
                            self.problem(
                                p,
                                format!("{at}.static_path"),
                                format!("{:?}: {e}", p.value),
                            );
                            None
                        }
                    },
                );
            let interval = self.duration(
                site.interval.as_ref(),
                &format!("{at}.interval"),
                default_interval,
            );
            let timeout = self.duration(
                site.timeout.as_ref(),
                &format!("{at}.timeout"),
                default_timeout,
            );
            if timeout >= interval {
                let spot = site
                    .timeout
                    .as_ref()
                    .or(site.interval.as_ref())
                    .unwrap_or(&site.url);
                self.problem(
                    spot,
                    format!("{at}.timeout"),
                    format!(
                        "the timeout ({}) must be shorter than the interval ({})",
                        humantime::format_duration(timeout),
                        humantime::format_duration(interval)
                    ),
                );
            }
            let expect_status = site
                .expect_status
                .clone()
                .or_else(|| defaults.expect_status.clone())
                .unwrap_or_default();
            for status in &expect_status {
                if !(100..=599).contains(status) {
                    self.problem(
                        &site.url,
                        format!("{at}.expect_status"),
                        format!("{status} is not an HTTP status"),
                    );
                }
            }
            let follow_redirects = site
                .follow_redirects
                .or(defaults.follow_redirects)
                .unwrap_or(0);
            if follow_redirects > crate::cli::MAX_REDIRECTS {
                self.problem(
                    &site.url,
                    format!("{at}.follow_redirects"),
                    format!(
                        "{follow_redirects}: at most {} redirects are followed",
                        crate::cli::MAX_REDIRECTS
                    ),
                );
            }
            let alert_to = match &site.alert_to {
                Some(list) => self.emails(list, &format!("{at}.alert_to")),
                None => alerts.to.clone(),
            };
            let name = match (&site.name, &target) {
                (Some(n), _) => n.value.trim().to_string(),
                (None, Some(t)) => t.host.clone(),
                (None, None) => String::new(),
            };
            if name.starts_with('@') {
                let spot = site.name.as_ref().unwrap_or(&site.url);
                self.problem(
                    spot,
                    format!("{at}.name"),
                    format!("{name:?}: names starting with '@' are reserved for the prober itself"),
                );
            } else if target.is_some() && !valid_site_name(&name) {
                let spot = site.name.as_ref().unwrap_or(&site.url);
                self.problem(
                    spot,
                    format!("{at}.name"),
                    format!("{name:?}: {SITE_NAME_RULE}"),
                );
            } else if !name.is_empty() && !names.insert(name.clone()) {
                let spot = site.name.as_ref().unwrap_or(&site.url);
                self.problem(
                    spot,
                    format!("{at}.name"),
                    format!(
                        "a site named {name:?} is already defined; give each site a unique `name`"
                    ),
                );
            }
            if let Some(target) = target {
                if site.origins.is_empty() {
                    self.warnings.push(format!("{at} ({name}): no origins: only the edge route is probed, so edge→origin failures cannot be told apart"));
                }
                sites.push(Site {
                    name,
                    target,
                    origins,
                    edge,
                    static_path,
                    interval,
                    timeout,
                    cert_warning_days: site
                        .cert_warning_days
                        .or(defaults.cert_warning_days)
                        .unwrap_or(14),
                    expect_status,
                    follow_redirects,
                    cloudflare_edge: site
                        .cloudflare_edge
                        .or(defaults.cloudflare_edge)
                        .unwrap_or(false),
                    redirect_hosts: site
                        .redirect_hosts
                        .clone()
                        .or_else(|| defaults.redirect_hosts.clone())
                        .unwrap_or_default()
                        .iter()
                        .map(|h| h.trim().trim_end_matches('.').to_lowercase())
                        .collect(),
                    alert_to,
                });
            }
        }

        let smtp = raw.smtp.as_ref().map(|s| self.smtp(s, base));
        if smtp.is_none() && !alerts.to.is_empty() {
            self.warnings
                .push("alerts.to is set but there is no `smtp` block: no mail can be sent".into());
        }
        let store_path = raw
            .store
            .path
            .as_ref()
            .map_or_else(|| base.join("probe.sqlite"), |p| base.join(p.value.trim()));
        let retention = self.duration(
            raw.store.retention.as_ref(),
            "store.retention",
            Duration::from_secs(30 * 86_400),
        );
        let maintenance = raw
            .maintenance
            .iter()
            .enumerate()
            .filter_map(|(i, m)| self.maintenance(m, i, &names))
            .collect();
        let control_checks = raw
            .control_checks
            .iter()
            .enumerate()
            .filter_map(|(i, url)| match Target::parse(&url.value) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.problem(
                        url,
                        format!("control_checks[{i}]"),
                        target_message(&url.value, &e),
                    );
                    None
                }
            })
            .collect();
        let extra_roots = match &raw.defaults.ca_file {
            Some(file) => match crate::engine::tls::load_ca_file(&base.join(file.value.trim())) {
                Ok(roots) => roots,
                Err(e) => {
                    self.problem(file, "defaults.ca_file", e.to_string());
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let feeds = self.feeds(&raw.feeds);
        let webhooks = self.webhooks(&raw.webhooks, &names);
        Config {
            sites,
            extra_roots,
            alerts,
            smtp,
            store_path,
            retention,
            maintenance,
            control_checks,
            feeds,
            webhooks,
        }
    }

    fn feeds(&mut self, raw: &FeedsConfig) -> Feeds {
        let title = raw
            .title
            .as_ref()
            .map_or("Status".to_string(), |t| t.value.trim().to_string());
        let url = raw.url.as_ref().and_then(|u| {
            let value = u.value.trim();
            match url::Url::parse(value) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                    let mut text = parsed.to_string();
                    if !text.ends_with('/') {
                        text.push('/');
                    }
                    Some(text)
                }
                _ => {
                    self.problem(
                        u,
                        "feeds.url",
                        format!(
                            "{value:?} is not an http(s) URL (e.g. https://status.example.com/)"
                        ),
                    );
                    None
                }
            }
        });
        Feeds { title, url }
    }

    fn alerts(&mut self, raw: &AlertConfig) -> Alerts {
        Alerts {
            to: self.emails(&raw.to, "alerts.to"),
            confirm_retries: raw.confirm_retries.unwrap_or(2),
            retry_spacing: self.duration(
                raw.retry_spacing.as_ref(),
                "alerts.retry_spacing",
                Duration::from_secs(5),
            ),
            confirm_runs: raw.confirm_runs.unwrap_or(1).max(1),
            recover_runs: raw.recover_runs.unwrap_or(2).max(1),
            remind_every: self.duration(
                raw.remind_every.as_ref(),
                "alerts.remind_every",
                Duration::from_secs(4 * 3600),
            ),
        }
    }

    /// Checks the name of the environment variable that holds a secret (never the secret).
    fn secret_variable(&mut self, var: &Text, path: &str, example: &str, what: &str) {
        let valid = !var.value.is_empty()
            && var
                .value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !var.value.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            // The value is never repeated: it may well be the secret itself.
            self.problem(var, path, format!("this looks like a secret, not a variable name: name the environment variable that holds the {what} (e.g. {example}: A-Z, 0-9 and _); the {what} itself never goes in this file"));
        } else if std::env::var_os(&var.value).is_none() {
            self.warnings.push(format!(
                "{path}: {} is not set in this environment",
                var.value
            ));
        }
    }

    fn webhooks(&mut self, raw: &[WebhookConfig], names: &HashSet<String>) -> Vec<Webhook> {
        let mut out = Vec::new();
        for (i, hook) in raw.iter().enumerate() {
            let at = format!("webhooks[{i}]");
            let value = hook.url.value.trim();
            let url = match url::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
                _ => {
                    // Not repeated: a webhook's URL often carries its token.
                    self.problem(
                        &hook.url,
                        format!("{at}.url"),
                        "not an http(s) URL with a host (the value is not repeated here: webhook URLs often hold a token)",
                    );
                    continue;
                }
            };
            if let Some(var) = &hook.secret_env {
                self.secret_variable(var, &format!("{at}.secret_env"), "WEBHOOK_SECRET", "secret");
            }
            let mut sites = Vec::new();
            for (j, site) in hook.sites.iter().flatten().enumerate() {
                let name = site.value.trim();
                if names.contains(name) {
                    sites.push(name.to_string());
                } else {
                    self.problem(
                        site,
                        format!("{at}.sites[{j}]"),
                        format!("no site is named {name:?}"),
                    );
                }
            }
            out.push(Webhook {
                url: url.to_string(),
                secret_env: hook.secret_env.as_ref().map(|v| v.value.clone()),
                sites,
            });
        }
        out
    }

    fn smtp(&mut self, raw: &SmtpConfig, base: &Path) -> Smtp {
        let security = raw.security.unwrap_or(SmtpSecurity::Starttls);
        if let Some(var) = &raw.password_env {
            self.secret_variable(var, "smtp.password_env", "SMTP_PASSWORD", "password");
        }
        if raw.username.is_some() && raw.password_env.is_none() {
            self.warnings.push(
                "smtp.username is set without smtp.password_env: AUTH will be skipped".into(),
            );
        }
        let allow_plaintext_auth = raw.allow_plaintext_auth.unwrap_or(false);
        let logs_in = raw.username.is_some() && raw.password_env.is_some();
        if security == SmtpSecurity::Plain && logs_in {
            if allow_plaintext_auth {
                self.warnings.push("smtp: security is plain and allow_plaintext_auth is true: the SMTP password crosses the network unencrypted, readable by anyone on the path".into());
            } else {
                let spot = raw.password_env.as_ref().unwrap_or(&raw.host);
                self.problem(spot, "smtp.password_env", "security: plain would send the password unencrypted: use security: starttls (587) or tls (465), or, on a network you trust, set allow_plaintext_auth: true");
            }
        }
        if let Some(file) = &raw.ca_file {
            if let Err(e) = crate::engine::tls::load_ca_file(&base.join(file.value.trim())) {
                self.problem(file, "smtp.ca_file", e.to_string());
            }
        }
        let from = raw.from.value.trim();
        if let Some(why) = mailbox_problem(from) {
            self.problem(&raw.from, "smtp.from", why);
        }
        Smtp {
            host: raw.host.value.trim().to_string(),
            port: raw.port.unwrap_or(match security {
                SmtpSecurity::Starttls => 587,
                SmtpSecurity::Tls => 465,
                SmtpSecurity::Plain => 25,
            }),
            security,
            username: raw.username.as_ref().map(|u| u.value.clone()),
            password_env: raw.password_env.as_ref().map(|p| p.value.clone()),
            allow_plaintext_auth,
            from: from.to_string(),
            ca_file: raw.ca_file.as_ref().map(|p| base.join(p.value.trim())),
            timeout: self.duration(
                raw.timeout.as_ref(),
                "smtp.timeout",
                Duration::from_secs(30),
            ),
        }
    }

    fn maintenance(
        &mut self,
        raw: &MaintenanceConfig,
        i: usize,
        names: &HashSet<String>,
    ) -> Option<MaintenanceWindow> {
        let at = format!("maintenance[{i}]");
        let mut time =
            |text: &Text, field: &str| match OffsetDateTime::parse(text.value.trim(), &Rfc3339) {
                Ok(t) => Some(t),
                Err(_) => {
                    self.problem(
                        text,
                        format!("{at}.{field}"),
                        format!(
                            "{:?} is not an RFC 3339 time (e.g. 2026-12-01T02:00:00Z)",
                            text.value
                        ),
                    );
                    None
                }
            };
        let start = time(&raw.start, "start");
        let end = time(&raw.end, "end");
        let sites: Vec<String> = raw
            .sites
            .iter()
            .flatten()
            .map(|s| s.value.trim().to_string())
            .collect();
        for (j, site) in raw.sites.iter().flatten().enumerate() {
            if !names.contains(site.value.trim()) {
                self.problem(
                    site,
                    format!("{at}.sites[{j}]"),
                    format!("no site is named {:?}", site.value),
                );
            }
        }
        let (start, end) = (start?, end?);
        if end <= start {
            self.problem(&raw.end, format!("{at}.end"), "must be after start");
            return None;
        }
        Some(MaintenanceWindow {
            sites,
            start,
            end,
            reason: raw.reason.as_ref().map(|r| r.value.clone()),
        })
    }
}

/// What a checked config will do, in a few lines.
pub fn explain(path: &Path, loaded: &Loaded) -> String {
    use std::fmt::Write as _;
    // Every string here came from the file: shown escaped, never raw, on a terminal.
    use crate::text::printable as p;
    let c = &loaded.config;
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let mut out = String::new();
    let plural = if c.sites.len() == 1 { "" } else { "s" };
    let _ = writeln!(
        out,
        "{}: OK, {} site{plural}",
        p(&path.display().to_string()),
        c.sites.len()
    );
    for site in &c.sites {
        let origins: Vec<String> = site.origins.iter().map(|o| o.to_string()).collect();
        let origins = if origins.is_empty() {
            "no origin".to_string()
        } else {
            format!("origin {}", origins.join(", "))
        };
        let static_path = site
            .static_path
            .as_deref()
            .map(|p| format!(", static {p}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {}  {origins}{static_path}  every {}, timeout {}",
            p(&site.name),
            p(&site.target.url),
            d(site.interval),
            d(site.timeout)
        );
    }
    let a = &c.alerts;
    let to = if a.to.is_empty() {
        "nobody (set alerts.to)".to_string()
    } else {
        p(&a.to.join(", ")).into_owned()
    };
    let _ = writeln!(
        out,
        "alerts: to {to}; a failure counts after {} retries {} apart and {} failing run(s); recovery after {} healthy run(s); reminders every {}",
        a.confirm_retries, d(a.retry_spacing), a.confirm_runs, a.recover_runs, d(a.remind_every)
    );
    match &c.smtp {
        Some(s) => {
            let security = match s.security {
                SmtpSecurity::Starttls => "STARTTLS",
                SmtpSecurity::Tls => "TLS",
                SmtpSecurity::Plain => "no encryption",
            };
            let auth = match (&s.username, &s.password_env) {
                (Some(u), Some(var)) => {
                    format!(", as {} with the password from ${}", p(u), p(var))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "smtp: {}:{} with {security}{auth}, from {}",
                p(&s.host),
                s.port,
                p(&s.from)
            );
        }
        None => {
            let _ = writeln!(out, "smtp: none (no mail is sent)");
        }
    }
    let _ = writeln!(
        out,
        "store: {}, results kept {}",
        p(&c.store_path.display().to_string()),
        d(c.retention)
    );
    if !c.maintenance.is_empty() {
        let _ = writeln!(out, "maintenance windows: {}", c.maintenance.len());
    }
    for warning in &loaded.warnings {
        let _ = writeln!(out, "warning: {}", p(warning));
    }
    out
}

/// The JSON Schema of probes.yaml, for editors (committed as schema/probes.schema.json).
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ConfigFile);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_past_the_parser_limits_is_refused_in_plain_words() {
        let mut text = String::from("sites:\n");
        for i in 0..100 {
            text.push_str(&format!("  - url: site{i}.example\n"));
        }
        let e = parse_within("probes.yaml", &text, Path::new("."), 100).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("the file is too large to read: probe reads at most 100 values, lists and maps (5 sites"),
            "{message}"
        );
        assert!(!message.contains("budget"), "{message}");
        assert!(parse_within("probes.yaml", &text, Path::new("."), 1000).is_ok());
    }

    #[test]
    fn paths_from_indentation() {
        let text = "defaults:\n  timeout: 5s\nsites:\n  - url: a.com\n    origins:\n      - 1.2.3.4\n  - url: b.com\n    interval: x\n";
        assert_eq!(path_at(text, 2), "defaults.timeout");
        assert_eq!(path_at(text, 4), "sites[0].url");
        assert_eq!(path_at(text, 6), "sites[0].origins[0]");
        assert_eq!(path_at(text, 7), "sites[1].url");
        assert_eq!(path_at(text, 8), "sites[1].interval");
    }
}
