//! probes.yaml: the sites `probe run` / `probe watch` look at, and how they alert.
//!
//! Two steps: serde reads the file as written (`ConfigFile`, every value kept with its line and
//! column), then each section's checker (one file per section, beside its types) turns it into the
//! `Config` the scheduler uses, reporting every problem at once with file:line:column and the
//! field's path. The site list is read on a second reading of the file and checked a site at a
//! time, so 100,000 sites are never held as written. Each site's probe settings are checked by
//! the settings core, as the command line's are. A parse error's position comes from serde-saphyr's own location, its field path from the
//! deserializer (serde_path_to_error). Secrets are never in the file: variables name them.

mod alerts;
mod feeds;
mod maintenance;
mod notify;
mod problems;
mod sites;
mod smtp;
mod store;
mod webhooks;

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use alerts::{AlertConfig, Alerts, IntermittentPolicy, WarningPolicy, MAX_WINDOW_RUNS};
pub use feeds::{Feeds, FeedsConfig};
pub use maintenance::{MaintenanceConfig, MaintenanceWindow};
pub use notify::{is_loopback as notify_is_loopback, Notifier, NotifyConfig, Provider};
pub use problems::{ConfigError, ConfigProblem};
pub use sites::{Site, SiteConfig, SiteDefaults};
pub use smtp::{Smtp, SmtpConfig, SmtpSecurity};
pub use store::{DatabaseUrl, StoreConfig, StoreLocation};
pub use webhooks::{Webhook, WebhookConfig};

use crate::settings::{self, Target};
use problems::{place, written, Checker};

/// A scalar kept with where it was written.
pub type Text = Spanned<String>;

// The file is read twice: first with the site list skipped (`ConfigFile<SkippedSites>`), then
// the site list alone, each site checked as it is read (`SitesOfFile`), so that a long list is
// never held as written. `Vec<SiteConfig>` is its shape for the JSON Schema.
/// probes.yaml as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile<Sites = Vec<SiteConfig>> {
    /// Settings every site inherits unless it sets its own.
    #[serde(default)]
    pub defaults: SiteDefaults,
    /// The sites to probe.
    pub sites: Sites,
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
    /// Chat and paging channels: Slack, Teams, Discord, Telegram, ntfy, PagerDuty, Opsgenie.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// Well-known URLs probed alongside the sites: if every site fails *and* these fail too, the
    /// prober lost its own connectivity and sends one notice instead of one alert per site.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub control_checks: Vec<Text>,
}

/// probes.yaml, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub sites: Vec<Site>,
    /// Extra trusted roots for every site (`defaults.ca_file`).
    pub extra_roots: std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>,
    pub alerts: Alerts,
    pub smtp: Option<Smtp>,
    pub store: store::StoreLocation,
    pub retention: Duration,
    pub maintenance: Vec<MaintenanceWindow>,
    pub control_checks: Vec<Target>,
    pub feeds: Feeds,
    pub webhooks: Vec<Webhook>,
    pub notify: Vec<Notifier>,
    /// The region this prober reports as (`--region`, `PROBE_REGION`; not in the file: every
    /// region runs the same probes.yaml).
    pub region: String,
    /// How many sites probe each origin address: sites on one origin may share a failure.
    pub sites_per_origin: std::collections::HashMap<std::net::IpAddr, u32>,
}

/// The region a prober belongs to when none is named.
pub const DEFAULT_REGION: &str = "default";

/// Why a region name is refused, if it is: 1 to 64 letters, digits, `.`, `_` or `-` (it goes
/// into keys, labels and file names as it is).
pub fn region_problem(name: &str) -> Option<String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(fine) {
        return Some(format!(
            "region {:?}: use 1 to 64 letters, digits, '.', '_' or '-' (e.g. eu-west)",
            crate::text::printable(name)
        ));
    }
    None
}

impl Config {
    /// Whether another site than one of its own probes the origin address `ip`.
    pub fn origin_shared(&self, ip: std::net::IpAddr) -> bool {
        self.sites_per_origin.get(&ip).is_some_and(|n| *n > 1)
    }

    /// Whether a maintenance window covers `site` at `now`.
    pub fn in_maintenance(&self, site: &str, now: time::OffsetDateTime) -> bool {
        self.maintenance.iter().any(|w| w.covers(site, now))
    }
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

/// Largest config file read: 100,000 sites take about 10 MiB.
const MAX_CONFIG_BYTES: usize = 128 << 20;
/// The parser's limits, raised from its defaults (250,000 nodes: about 19,000 sites) so that
/// large site lists load, still bounded so a hostile file cannot exhaust memory. Nodes are the
/// file's values, lists and maps.
const MAX_CONFIG_NODES: usize = 20_000_000;

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
    let syntax = |e: serde_saphyr::Error, path: Option<String>| {
        invalid(syntax_problem(&e, path.as_deref(), max_nodes))
    };
    let mut path = None;
    let raw: ConfigFile<SkippedSites> = serde_saphyr::with_deserializer_from_str_with_options(
        text,
        parse_options(max_nodes),
        |de| {
            serde_path_to_error::deserialize(de).map_err(|e| {
                path = Some(e.path().to_string());
                e.into_inner()
            })
        },
    )
    .map_err(|e| syntax(e, path.take()))?;
    let mut checker = Checker::default();
    let alerts = alerts::check(&mut checker, &raw.alerts);
    let extra_roots = ca_file(&mut checker, &raw.defaults, base);
    let mut site_checker =
        sites::SiteChecker::new(&mut checker, &raw.defaults, &alerts.to, extra_roots.clone());
    serde_saphyr::with_deserializer_from_str_with_options(text, parse_options(max_nodes), |de| {
        let mut track = serde_path_to_error::Track::new();
        let seed = SitesOfFile {
            checker: &mut checker,
            sites: &mut site_checker,
        };
        serde::de::DeserializeSeed::deserialize(
            seed,
            serde_path_to_error::Deserializer::new(de, &mut track),
        )
        .inspect_err(|_| path = Some(track.path().to_string()))
    })
    .map_err(|e| syntax(e, path.take()))?;
    let (sites, names) = site_checker.finish(&mut checker);
    let config = check(&mut checker, raw, alerts, extra_roots, sites, &names, base);
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

/// The site list on the first reading of the file: read past, not kept.
#[derive(Debug)]
pub struct SkippedSites;

impl<'de> Deserialize<'de> for SkippedSites {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(de).map(|_| SkippedSites)
    }
}

/// The second reading of the file: only `sites`, each site handed to the checker as soon as it
/// is read (every other key was read, and checked for its shape, the first time).
struct SitesOfFile<'c, 'a> {
    checker: &'c mut Checker,
    sites: &'c mut sites::SiteChecker<'a>,
}

impl<'de> serde::de::DeserializeSeed<'de> for SitesOfFile<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SitesOfFile<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "sites" {
                map.next_value_seed(SiteList {
                    checker: &mut *self.checker,
                    sites: &mut *self.sites,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct SiteList<'c, 'a> {
    checker: &'c mut Checker,
    sites: &'c mut sites::SiteChecker<'a>,
}

impl<'de> serde::de::DeserializeSeed<'de> for SiteList<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SiteList<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of sites")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(site) = seq.next_element::<SiteConfig>()? {
            self.sites.check(self.checker, site);
        }
        Ok(())
    }
}

/// The extra trusted roots of `defaults.ca_file`, shared by every site.
fn ca_file(
    checker: &mut Checker,
    defaults: &SiteDefaults,
    base: &Path,
) -> std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]> {
    let roots = match &defaults.ca_file {
        Some(file) => {
            let path = base.join(file.value.trim());
            settings::ca_file(&path, &place(file, "defaults.ca_file")).unwrap_or_else(|problem| {
                checker.report(vec![problem]);
                Vec::new()
            })
        }
        None => Vec::new(),
    };
    roots.into()
}

fn parse_options(max_nodes: usize) -> serde_saphyr::Options {
    let mut options = serde_saphyr::Options::default();
    let mut budget = options.budget.clone().unwrap_or_default();
    budget.max_nodes = max_nodes;
    budget.max_events = 2 * max_nodes;
    budget.max_total_scalar_bytes = MAX_CONFIG_BYTES;
    options.budget = Some(budget);
    options
}

/// A serde-saphyr error as a problem: its own location, the field path the deserializer was at,
/// and its message, worded from the error's kind (never parsed out of its text).
fn syntax_problem(e: &serde_saphyr::Error, path: Option<&str>, max_nodes: usize) -> ConfigProblem {
    use serde_saphyr::MessageFormatter as _;
    let e = e.without_snippet();
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let message = match e {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => match closest(field, expected) {
            Some(near) => format!(
                "unknown field `{field}`: did you mean `{near}`? (expected one of {})",
                expected.join(", ")
            ),
            None => format!(
                "unknown field `{field}`, expected one of {}",
                expected.join(", ")
            ),
        },
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate mapping key: {key}")
        }
        serde_saphyr::Error::Budget { .. } => format!(
            "the file is too large to read: probe reads at most {max_nodes} values, lists and maps ({} sites of a few settings each) and {} MiB of text",
            max_nodes / 20,
            MAX_CONFIG_BYTES >> 20
        ),
        other => {
            let message = serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .into_owned();
            // The parser's words for a line out of place name no cause a person recognises.
            let misplaced = message.contains("mapping values are not allowed")
                || (message.contains("did not find expected")
                    && message.contains("while parsing a block"));
            if misplaced {
                format!("{message} — the indentation is likely off here: a list's entries start with `-` at one column, and the keys of one entry line up under its first key")
            } else {
                message
            }
        }
    };
    let budget = matches!(e, serde_saphyr::Error::Budget { .. });
    let mut path = match path {
        Some(p) if !p.is_empty() && p != "." && !budget => p.to_string(),
        _ => "(top)".to_string(),
    };
    // A value kept with its place is read through a wrapper whose one field is `value`: the
    // user wrote the key before it.
    if let Some(field) = path.strip_suffix(".value") {
        path = field.to_string();
    }
    // The deserializer names a key it has not matched to a field `?`: a repeated key is known.
    if let serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } = e {
        if let Some(parent) = path.strip_suffix('?') {
            path = format!("{parent}{key}");
        }
    }
    ConfigProblem {
        line: line.max(1),
        column: column.max(1),
        path,
        message,
    }
}

/// The expected name nearest to a mistyped one (at most two letters off, and not most of it).
fn closest<'a>(typed: &str, expected: &'a [&'static str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let above = row[j + 1];
                row[j + 1] = (diagonal + usize::from(ca != *cb))
                    .min(row[j] + 1)
                    .min(above + 1);
                diagonal = above;
            }
        }
        row[b.len()]
    };
    expected
        .iter()
        .map(|e| (distance(typed, e), *e))
        .filter(|(d, e)| *d <= 2 && *d * 3 <= e.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// Builds the checked config from the file as written and its checked sites, one section
/// after the other.
fn check(
    checker: &mut Checker,
    raw: ConfigFile<SkippedSites>,
    alerts: Alerts,
    extra_roots: std::sync::Arc<[rustls::pki_types::CertificateDer<'static>]>,
    sites: Vec<Site>,
    names: &sites::SiteNames,
    base: &Path,
) -> Config {
    let smtp = raw.smtp.as_ref().map(|s| smtp::check(checker, s, base));
    if smtp.is_none() && !alerts.to.is_empty() {
        checker
            .warnings
            .push("alerts.to is set but there is no `smtp` block: no mail can be sent".into());
    }
    let (store_location, retention) = store::check(checker, &raw.store, base);
    let known = |name: &str| names.contains(&sites, name);
    let maintenance = maintenance::check(checker, &raw.maintenance, &known);
    let control_checks = raw
        .control_checks
        .iter()
        .enumerate()
        .filter_map(|(i, url)| {
            settings::target(&written(url, format!("control_checks[{i}]")))
                .map_err(|problem| checker.report(vec![problem]))
                .ok()
        })
        .collect();
    let feeds = feeds::check(checker, &raw.feeds);
    let webhooks = webhooks::check(checker, &raw.webhooks, &known);
    let notify = notify::check(checker, &raw.notify, &known);
    let mut sites_per_origin = std::collections::HashMap::new();
    for site in &sites {
        let mut ips: Vec<std::net::IpAddr> = site.probe.origins.iter().map(|o| o.ip()).collect();
        ips.sort();
        ips.dedup();
        for ip in ips {
            *sites_per_origin.entry(ip).or_insert(0) += 1;
        }
    }
    Config {
        sites_per_origin,
        sites,
        extra_roots,
        alerts,
        smtp,
        store: store_location,
        retention,
        maintenance,
        control_checks,
        feeds,
        webhooks,
        notify,
        region: DEFAULT_REGION.to_string(),
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
        let probe = &site.probe;
        let origins: Vec<String> = probe.origins.iter().map(|o| o.to_string()).collect();
        let origins = if origins.is_empty() {
            "no origin".to_string()
        } else {
            format!("origin {}", origins.join(", "))
        };
        let static_path = probe
            .static_path
            .as_deref()
            .map(|s| format!(", static {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {}  {origins}{static_path}  every {}, timeout {}, budget {}",
            p(&site.name),
            p(probe.target.url()),
            d(site.interval),
            d(probe.shared.timeout),
            probe.shared.diagnose.budget.describe()
        );
        let more = site_details(site, &c.alerts.to);
        if !more.is_empty() {
            let _ = writeln!(out, "    {}", p(&more.join(" · ")));
        }
    }
    if !c.extra_roots.is_empty() {
        let _ = writeln!(
            out,
            "trusted in addition (defaults.ca_file): {} CA certificate(s), on both routes",
            c.extra_roots.len()
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
    let (w, i) = (&a.warning, &a.intermittent);
    let _ = writeln!(
        out,
        "warnings: after {} degraded run(s), closed after {} without, reminders every {}; intermittent: {}; shared failures: {}",
        w.confirm_runs,
        w.recover_runs,
        d(w.remind_every),
        if i.enabled {
            format!("{} failures in {} runs", i.min_failures, i.window_runs)
        } else {
            "off".to_string()
        },
        if a.group { "one mail per group" } else { "one mail per site" }
    );
    if a.quorum > 1 {
        let _ = writeln!(
            out,
            "quorum: an incident opens when {} regions confirm a site down (each prober names its region with --region or PROBE_REGION; a region silent for 3 intervals is not waited for)",
            a.quorum
        );
    }
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
        p(&c.store.describe()),
        d(c.retention)
    );
    if !c.maintenance.is_empty() {
        let _ = writeln!(out, "maintenance windows: {}", c.maintenance.len());
    }
    let _ = writeln!(
        out,
        "feeds: {:?}{}, {}",
        p(&c.feeds.title),
        c.feeds
            .url
            .as_deref()
            .map_or(String::new(), |u| format!(" at {}", p(u))),
        if c.feeds.public {
            "public (no server versions, addresses or commands on the page and status.json)"
        } else {
            "the operator's view (everything on the page and status.json)"
        }
    );
    for hook in &c.webhooks {
        let _ = writeln!(
            out,
            "webhook: {}{}{}",
            p(&crate::text::endpoint_for_display(&hook.url)),
            if hook.secret_env.is_some() {
                ", signed"
            } else {
                ""
            },
            if hook.sites.is_empty() {
                String::new()
            } else {
                format!(", for {}", p(&hook.sites.join(", ")))
            }
        );
    }
    for n in &c.notify {
        let mut parts = vec![format!("{} ({})", n.id, n.provider.as_str())];
        if let Some(var) = &n.secret_env {
            parts.push(format!("secret from ${var}"));
        }
        if let Some(url) = &n.url {
            parts.push(crate::text::endpoint_for_display(url));
        }
        if let Some(chat) = &n.chat_id {
            parts.push(format!("chat {chat}"));
        }
        if n.provider.pages() {
            parts.push("opens a page on trouble, resolves it on recovery".into());
        }
        if !n.severities.is_empty() {
            parts.push(format!("severity {}", n.severities.join(", ")));
        }
        if !n.sites.is_empty() {
            parts.push(format!("for {}", n.sites.join(", ")));
        }
        let _ = writeln!(out, "notify: {}", p(&parts.join(", ")));
    }
    if !c.control_checks.is_empty() {
        let urls: Vec<&str> = c.control_checks.iter().map(|t| t.url()).collect();
        let _ = writeln!(out, "control checks: {}", p(&urls.join(", ")));
    }
    for warning in &loaded.warnings {
        let _ = writeln!(out, "warning: {}", p(warning));
    }
    out
}

/// A site's settings beyond its URL, origins, interval and timeout that differ from the
/// defaults, in words.
fn site_details(site: &Site, default_to: &[String]) -> Vec<String> {
    let probe = &site.probe;
    let shared = &probe.shared;
    let diagnose = &shared.diagnose;
    let mut more = Vec::new();
    if let Some(edge) = probe.edge {
        more.push(format!("edge route dials {edge} (not DNS)"));
    }
    if !diagnose.expect_status.is_empty() {
        let list: Vec<String> = diagnose.expect_status.iter().map(u16::to_string).collect();
        more.push(format!("healthy page answers {}", list.join(" or ")));
    }
    if shared.follow_redirects > 0 {
        more.push(format!("follows {} redirect(s)", shared.follow_redirects));
    }
    if !shared.redirect_hosts.is_empty() {
        more.push(format!(
            "redirects may go to {}",
            shared.redirect_hosts.join(", ")
        ));
    }
    let days: Vec<String> = diagnose
        .cert_warning_days
        .iter()
        .map(i64::to_string)
        .collect();
    if days != ["14", "7", "3", "1"] {
        more.push(format!("certificate notices at {} days", days.join("/")));
    }
    if shared.samples > 1 {
        more.push(format!("each request {} times", shared.samples));
    }
    if shared.burst > 1 {
        more.push(format!("page {} times at once", shared.burst));
    }
    if diagnose.cloudflare_edge_declared {
        more.push("edge declared Cloudflare".to_string());
    }
    if let Some(w) = site.probe.witnesses.as_deref() {
        let mut pages = Vec::new();
        if let Some(p) = &w.fpm_status {
            pages.push(format!("PHP-FPM status {p}"));
        }
        if let Some(p) = &w.nginx_status {
            pages.push(format!("nginx stub_status {p}"));
        }
        let header = w.header.as_ref().map_or(String::new(), |h| {
            let set = if h.value.is_some() { "" } else { ", not set" };
            format!(" with {} from ${}{set}", h.name, h.value_env)
        });
        more.push(format!("reads {}{header}", pages.join(" and ")));
    }
    if *site.alert_to != *default_to {
        more.push(format!("alerts to {}", site.alert_to.join(", ")));
    }
    more
}

/// A site's time budgets in seconds, `null` for a phase that is not judged.
fn budget_json(budget: &crate::diagnose::Budget) -> serde_json::Value {
    crate::diagnose::BudgetPhase::ALL
        .into_iter()
        .map(|phase| {
            (
                format!("{}_s", phase.key()),
                serde_json::json!(budget.get(phase).map(|d| d.as_secs_f64())),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The checked config, every effective setting, as JSON (`probe check-config --json`); secrets
/// are named by their variables, never shown, and webhook URLs only by their endpoint.
pub fn summary_json(path: &Path, loaded: &Loaded) -> serde_json::Value {
    use serde_json::json;
    let c = &loaded.config;
    let secs = |d: Duration| d.as_secs_f64();
    let sites: Vec<serde_json::Value> = c
        .sites
        .iter()
        .map(|site| {
            let probe = &site.probe;
            let shared = &probe.shared;
            json!({
                "name": site.name,
                "url": probe.target.url(),
                "edge": probe.edge.map(|e| e.to_string()),
                "origins": probe.origins.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                "static_path": probe.static_path.as_deref(),
                "interval_s": secs(site.interval),
                "timeout_s": secs(shared.timeout),
                "budget": budget_json(&shared.diagnose.budget),
                "cert_warning_days": shared.diagnose.cert_warning_days,
                "expect_status": shared.diagnose.expect_status,
                "follow_redirects": shared.follow_redirects,
                "redirect_hosts": shared.redirect_hosts,
                "samples": shared.samples,
                "burst": shared.burst,
                "cloudflare_edge": shared.diagnose.cloudflare_edge_declared,
                "fpm_status": probe.witnesses.as_ref().and_then(|w| w.fpm_status.as_deref()),
                "nginx_status": probe.witnesses.as_ref().and_then(|w| w.nginx_status.as_deref()),
                "status_header": probe.witnesses.as_ref().and_then(|w| w.header.as_ref()).map(|h| json!({
                    "name": h.name.as_str(),
                    "value_env": h.value_env,
                    "set": h.value.is_some(),
                })),
                "alert_to": &*site.alert_to,
            })
        })
        .collect();
    let a = &c.alerts;
    json!({
        "file": path.display().to_string(),
        "sites": sites,
        "extra_trusted_cas": c.extra_roots.len(),
        "alerts": {
            "to": a.to,
            "confirm_retries": a.confirm_retries,
            "retry_spacing_s": secs(a.retry_spacing),
            "confirm_runs": a.confirm_runs,
            "recover_runs": a.recover_runs,
            "remind_every_s": secs(a.remind_every),
            "quorum": a.quorum,
            "warning": {
                "confirm_runs": a.warning.confirm_runs,
                "recover_runs": a.warning.recover_runs,
                "remind_every_s": secs(a.warning.remind_every),
            },
            "intermittent": {
                "enabled": a.intermittent.enabled,
                "window_runs": a.intermittent.window_runs,
                "min_failures": a.intermittent.min_failures,
            },
            "group": a.group,
        },
        "smtp": c.smtp.as_ref().map(|s| json!({
            "host": s.host,
            "port": s.port,
            "security": match s.security {
                SmtpSecurity::Starttls => "starttls",
                SmtpSecurity::Tls => "tls",
                SmtpSecurity::Plain => "plain",
            },
            "username": s.username,
            "password_env": s.password_env,
            "allow_plaintext_auth": s.allow_plaintext_auth,
            "from": s.from,
            "ca_file": s.ca_file.as_ref().map(|f| f.display().to_string()),
            "timeout_s": secs(s.timeout),
        })),
        "store": c.store.describe(),
        "retention_s": secs(c.retention),
        "feeds": { "title": c.feeds.title, "url": c.feeds.url, "public": c.feeds.public },
        "webhooks": c.webhooks.iter().map(|h| json!({
            "endpoint": crate::text::endpoint_for_display(&h.url),
            "signed": h.secret_env.is_some(),
            "secret_env": h.secret_env,
            "sites": h.sites,
        })).collect::<Vec<_>>(),
        "notify": c.notify.iter().map(|n| json!({
            "id": n.id,
            "type": n.provider.as_str(),
            "secret_env": n.secret_env,
            "url": n.url.as_deref().map(crate::text::endpoint_for_display),
            "chat_id": n.chat_id,
            "severity": n.severities,
            "sites": n.sites,
        })).collect::<Vec<_>>(),
        "maintenance": c.maintenance.iter().map(|w| json!({
            "sites": w.sites,
            "start": crate::text::rfc3339(w.start),
            "end": crate::text::rfc3339(w.end),
            "reason": w.reason,
        })).collect::<Vec<_>>(),
        "control_checks": c.control_checks.iter().map(|t| t.url()).collect::<Vec<_>>(),
        "warnings": loaded.warnings,
    })
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
}
