//! `alerts:` — when a failure counts, and to whom alerts go.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use serde_saphyr::Spanned;

use super::lists::{one_or_many, OneOrMany};
use super::problems::Checker;
use super::Text;

/// Alert confirmation and routing.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Where alerts go: one address or a list of them.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "OneOrMany<String>")]
    pub to: Vec<Text>,
    /// Retries inside one run before a failure counts (default 2).
    pub confirm_retries: Option<u32>,
    /// Time between those retries (default `5s`).
    #[schemars(with = "Option<String>")]
    pub retry_spacing: Option<Text>,
    /// Consecutive failing runs before an incident opens (default 1).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub confirm_runs: Option<Spanned<u32>>,
    /// Consecutive healthy runs before an incident closes (default 2).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub recover_runs: Option<Spanned<u32>>,
    /// Repeat an open incident's alert this often (default `4h`).
    #[schemars(with = "Option<String>")]
    pub remind_every: Option<Text>,
    /// Regions that must confirm a site down before an incident opens (default 1). Regions
    /// whose probers have not reported on the site for 3 intervals are not waited for.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub quorum: Option<Spanned<u32>>,
    /// How warnings (a degraded site: slow, the origin failing behind an edge that still
    /// serves) are confirmed, closed and repeated.
    #[serde(default)]
    pub warning: WarningConfig,
    /// When a site that is not down counts as failing now and then.
    #[serde(default)]
    pub intermittent: IntermittentConfig,
    /// Tell the outages of sites failing on one origin address (or one edge) together: one mail
    /// per recipient listing them, instead of one per site (default true).
    pub group: Option<bool>,
    /// The IANA time zone mails show times in (e.g. `Europe/Berlin`; default UTC).
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Text>,
}

/// `alerts.warning:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WarningConfig {
    /// Consecutive degraded runs before a warning opens (default 3).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub confirm_runs: Option<Spanned<u32>>,
    /// Consecutive runs without it before a warning closes (default 3).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub recover_runs: Option<Spanned<u32>>,
    /// Repeat an open warning this often (default `24h`).
    #[schemars(with = "Option<String>")]
    pub remind_every: Option<Text>,
}

/// `alerts.intermittent:`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntermittentConfig {
    /// Off with `false` (default true).
    pub enabled: Option<bool>,
    /// The runs looked back over (2-100, default 20).
    #[schemars(with = "Option<u32>", range(min = 2, max = 100))]
    pub window_runs: Option<Spanned<u32>>,
    /// Failed runs within the window that open an intermittent incident (default 3).
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub min_failures: Option<Spanned<u32>>,
}

/// Warning settings with defaults applied.
#[derive(Debug, Clone)]
pub struct WarningPolicy {
    pub confirm_runs: u32,
    pub recover_runs: u32,
    pub remind_every: Duration,
}

/// Intermittency settings with defaults applied.
#[derive(Debug, Clone)]
pub struct IntermittentPolicy {
    pub enabled: bool,
    pub window_runs: u32,
    pub min_failures: u32,
}

/// Most runs a site's history keeps (and so the widest window).
pub const MAX_WINDOW_RUNS: u32 = 100;

/// Alert settings with defaults applied.
#[derive(Debug, Clone)]
pub struct Alerts {
    pub to: Vec<String>,
    pub confirm_retries: u32,
    pub retry_spacing: Duration,
    pub confirm_runs: u32,
    pub recover_runs: u32,
    pub remind_every: Duration,
    /// Regions that must confirm a site down (at least 1).
    pub quorum: u32,
    pub warning: WarningPolicy,
    pub intermittent: IntermittentPolicy,
    /// Outages sharing an origin address or an edge are told together.
    pub group: bool,
    /// Mails' times are in this zone.
    pub zone: crate::text::Zone,
}

impl Alerts {
    /// The policy warnings are stepped with (the down machine's, with the warning's numbers).
    pub fn for_warnings(&self) -> Alerts {
        Alerts {
            confirm_runs: self.warning.confirm_runs,
            recover_runs: self.warning.recover_runs,
            remind_every: self.warning.remind_every,
            ..self.clone()
        }
    }
}

impl Default for WarningPolicy {
    fn default() -> Self {
        Self {
            confirm_runs: 3,
            recover_runs: 3,
            remind_every: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for IntermittentPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            window_runs: 20,
            min_failures: 3,
        }
    }
}

pub fn check(checker: &mut Checker, raw: &AlertConfig) -> Alerts {
    if let Some(quorum) = raw.quorum.as_ref().filter(|q| q.value == 0) {
        checker.problem(
            quorum,
            "alerts.quorum",
            "must be at least 1 (the number of regions that confirm a site down)",
        );
    }
    let defaults = WarningPolicy::default();
    let warning = WarningPolicy {
        confirm_runs: runs(
            checker,
            raw.warning.confirm_runs.as_ref(),
            "alerts.warning.confirm_runs",
            defaults.confirm_runs,
        ),
        recover_runs: runs(
            checker,
            raw.warning.recover_runs.as_ref(),
            "alerts.warning.recover_runs",
            defaults.recover_runs,
        ),
        remind_every: checker.duration(
            raw.warning.remind_every.as_ref(),
            "alerts.warning.remind_every",
            defaults.remind_every,
            None,
        ),
    };
    let raw_i = &raw.intermittent;
    let window_runs = raw_i.window_runs.as_ref().map_or(20, |w| w.value);
    if let Some(w) = raw_i.window_runs.as_ref() {
        if !(2..=MAX_WINDOW_RUNS).contains(&w.value) {
            checker.problem(
                w,
                "alerts.intermittent.window_runs",
                format!("must be 2 to {MAX_WINDOW_RUNS} runs"),
            );
        }
    }
    let window_runs = window_runs.clamp(2, MAX_WINDOW_RUNS);
    let min_failures = raw_i.min_failures.as_ref().map_or(3, |m| m.value);
    if let Some(m) = raw_i.min_failures.as_ref() {
        if m.value == 0 || m.value > window_runs {
            checker.problem(
                m,
                "alerts.intermittent.min_failures",
                format!("must be 1 to window_runs ({window_runs})"),
            );
        }
    }
    let intermittent = IntermittentPolicy {
        enabled: raw_i.enabled.unwrap_or(true),
        window_runs,
        min_failures: min_failures.clamp(1, window_runs),
    };
    Alerts {
        zone: checker.zone(raw.timezone.as_ref(), "alerts.timezone"),
        group: raw.group.unwrap_or(true),
        warning,
        intermittent,
        quorum: raw.quorum.as_ref().map_or(1, |q| q.value.max(1)),
        to: checker.emails(&raw.to, "alerts.to"),
        confirm_retries: raw.confirm_retries.unwrap_or(2),
        retry_spacing: checker.duration(
            raw.retry_spacing.as_ref(),
            "alerts.retry_spacing",
            Duration::from_secs(5),
            None,
        ),
        confirm_runs: runs(checker, raw.confirm_runs.as_ref(), "alerts.confirm_runs", 1),
        recover_runs: runs(checker, raw.recover_runs.as_ref(), "alerts.recover_runs", 2),
        remind_every: checker.duration(
            raw.remind_every.as_ref(),
            "alerts.remind_every",
            Duration::from_secs(4 * 3600),
            None,
        ),
    }
}

/// A count of runs: 0 would open (or close) on no evidence at all, so it is a mistake to
/// name, not a value to round up unsaid.
fn runs(checker: &mut Checker, raw: Option<&Spanned<u32>>, path: &str, default: u32) -> u32 {
    match raw {
        Some(r) if r.value == 0 => {
            checker.problem(r, path, "must be at least 1 run");
            default
        }
        Some(r) => r.value,
        None => default,
    }
}
