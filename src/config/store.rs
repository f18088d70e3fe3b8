//! `store:` — where results, incidents and alert state are kept, and for how long.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::problems::Checker;
use super::Text;

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

/// The store file and the results' retention.
pub fn check(checker: &mut Checker, raw: &StoreConfig, base: &Path) -> (PathBuf, Duration) {
    let path = raw
        .path
        .as_ref()
        .map_or_else(|| base.join("probe.sqlite"), |p| base.join(p.value.trim()));
    let retention = checker.duration(
        raw.retention.as_ref(),
        "store.retention",
        Duration::from_secs(30 * 86_400),
        None,
    );
    (path, retention)
}
