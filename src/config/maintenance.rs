//! `maintenance:` — periods during which alerts are silenced.

use schemars::JsonSchema;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::lists::{maybe_one_or_many, OneOrMany};
use super::problems::Checker;
use super::sites::names_in;
use super::Text;

/// A period without alerts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// Site names (one or a list); all sites when absent.
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub sites: Option<Vec<Text>>,
    /// RFC 3339, e.g. `2026-12-01T02:00:00Z`.
    #[schemars(with = "String")]
    pub start: Text,
    #[schemars(with = "String")]
    pub end: Text,
    #[schemars(with = "Option<String>")]
    pub reason: Option<Text>,
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

impl MaintenanceWindow {
    /// Whether the window covers `site` at `now`.
    pub fn covers(&self, site: &str, now: OffsetDateTime) -> bool {
        self.start <= now
            && now < self.end
            && (self.sites.is_empty() || self.sites.iter().any(|s| s == site))
    }
}

pub fn check(
    checker: &mut Checker,
    raw: &[MaintenanceConfig],
    known: &dyn Fn(&str) -> bool,
) -> Vec<MaintenanceWindow> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, m)| window(checker, m, i, known))
        .collect()
}

fn window(
    checker: &mut Checker,
    raw: &MaintenanceConfig,
    i: usize,
    known: &dyn Fn(&str) -> bool,
) -> Option<MaintenanceWindow> {
    let at = format!("maintenance[{i}]");
    let mut time =
        |text: &Text, field: &str| match OffsetDateTime::parse(text.value.trim(), &Rfc3339) {
            Ok(t) => Some(t),
            Err(_) => {
                checker.problem(
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
    let sites = names_in(checker, raw.sites.as_ref(), &at, known);
    let (start, end) = (start?, end?);
    if end <= start {
        checker.problem(&raw.end, format!("{at}.end"), "must be after start");
        return None;
    }
    Some(MaintenanceWindow {
        sites,
        start,
        end,
        reason: raw.reason.as_ref().map(|r| r.value.clone()),
    })
}
