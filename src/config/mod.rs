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
    Config {
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
