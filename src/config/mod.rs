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
mod explain;
mod feeds;
mod lists;
mod maintenance;
mod notify;
mod problems;
mod read;
mod sites;
mod smtp;
mod store;
mod syntax;
mod webhooks;

use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

pub use alerts::{AlertConfig, Alerts, IntermittentPolicy, WarningPolicy, MAX_WINDOW_RUNS};
pub use explain::{explain, summary_json};
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
use read::SkippedSites;

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
    #[serde(default, deserialize_with = "lists::one_or_many")]
    #[schemars(with = "lists::OneOrMany<String>")]
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

/// Reads and checks a config file for use on this machine: beyond the file, the SQLite store's
/// directory must exist and be writable here (`probe run`, `watch` and `check-config`).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    read_file(path, true)
}

/// Reads and checks a config file to read its store only (`probe outbox`, beside a running
/// watch, perhaps as another user): the store's directory is not checked.
pub fn load_to_read(path: &Path) -> Result<Loaded, ConfigError> {
    read_file(path, false)
}

fn read_file(path: &Path, store_here: bool) -> Result<Loaded, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse_within(&file, &text, base, MAX_CONFIG_NODES, store_here)
}

/// Largest config file read: 100,000 sites take about 10 MiB.
const MAX_CONFIG_BYTES: usize = 128 << 20;
/// The parser's limits, raised from its defaults (250,000 nodes: about 19,000 sites) so that
/// large site lists load, still bounded so a hostile file cannot exhaust memory. Nodes are the
/// file's values, lists and maps.
const MAX_CONFIG_NODES: usize = 20_000_000;

/// Parses and checks config text; `file` names it in messages, `base` anchors relative paths.
/// The store's place is not checked: the text may be meant for another machine (a Kubernetes
/// ConfigMap checked in CI).
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Loaded, ConfigError> {
    parse_within(file, text, base, MAX_CONFIG_NODES, false)
}

/// `store_here`: the SQLite store's directory must exist and be writable on this machine.
fn parse_within(
    file: &str,
    text: &str,
    base: &Path,
    max_nodes: usize,
    store_here: bool,
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
    let mut reading = read::Reading::new(text, max_nodes);
    let raw = reading.sections();
    let mut checker = Checker::default();
    let mut config = None;
    if !reading.stopped {
        let alerts = alerts::check(&mut checker, &raw.alerts);
        let extra_roots = ca_file(&mut checker, &raw.defaults, base);
        let mut site_checker =
            sites::SiteChecker::new(&mut checker, &raw.defaults, &alerts.to, extra_roots.clone());
        let list_read = reading.sites(&mut checker, &mut site_checker);
        // After a syntax error the sites and names past it are unknown: nothing is judged on
        // what could not be read.
        if !reading.stopped {
            let (sites, names) = site_checker.finish(&mut checker, list_read);
            let store_path = raw.store.path.clone();
            let checked = check(&mut checker, raw, alerts, extra_roots, sites, &names, base);
            if let (true, StoreLocation::Sqlite(file)) = (store_here, &checked.store) {
                store::check_here(&mut checker, file, store_path.as_ref());
            }
            config = Some(checked);
        }
    }
    // A problem of a value read in the place of one left out is no problem of the file's.
    checker.problems.retain(|p| !reading.hides(&p.path));
    let mut problems = reading.problems;
    problems.append(&mut checker.problems);
    match config {
        Some(config) if problems.is_empty() => Ok(Loaded {
            config,
            warnings: checker.warnings,
        }),
        _ => {
            problems.sort_by_key(|p| (p.line, p.column));
            // A default's problem is found with each site that inherits it: told once.
            let mut told = std::collections::HashSet::new();
            problems.retain(|p| told.insert(p.clone()));
            problems.extend(reading.cut_short);
            Err(ConfigError::Invalid {
                file: file.to_string(),
                problems,
            })
        }
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
        let e = parse_within("probes.yaml", &text, Path::new("."), 100, false).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("the file is too large to read: probe reads at most 100 values, lists and maps (5 sites"),
            "{message}"
        );
        assert!(!message.contains("budget"), "{message}");
        assert!(parse_within("probes.yaml", &text, Path::new("."), 1000, false).is_ok());
    }
}
