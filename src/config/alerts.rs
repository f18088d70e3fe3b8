//! `alerts:` — when a failure counts, and to whom alerts go.

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use serde_saphyr::Spanned;

use super::problems::Checker;
use super::Text;

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
    /// Regions that must confirm a site down before an incident opens (default 1). Regions
    /// whose probers have not reported on the site for 3 intervals are not waited for.
    #[schemars(with = "Option<u32>", range(min = 1))]
    pub quorum: Option<Spanned<u32>>,
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
    /// Regions that must confirm a site down (at least 1).
    pub quorum: u32,
}

pub fn check(checker: &mut Checker, raw: &AlertConfig) -> Alerts {
    if let Some(quorum) = raw.quorum.as_ref().filter(|q| q.value == 0) {
        checker.problem(
            quorum,
            "alerts.quorum",
            "must be at least 1 (the number of regions that confirm a site down)",
        );
    }
    Alerts {
        quorum: raw.quorum.as_ref().map_or(1, |q| q.value.max(1)),
        to: checker.emails(&raw.to, "alerts.to"),
        confirm_retries: raw.confirm_retries.unwrap_or(2),
        retry_spacing: checker.duration(
            raw.retry_spacing.as_ref(),
            "alerts.retry_spacing",
            Duration::from_secs(5),
            None,
        ),
        confirm_runs: raw.confirm_runs.unwrap_or(1).max(1),
        recover_runs: raw.recover_runs.unwrap_or(2).max(1),
        remind_every: checker.duration(
            raw.remind_every.as_ref(),
            "alerts.remind_every",
            Duration::from_secs(4 * 3600),
            None,
        ),
    }
}
