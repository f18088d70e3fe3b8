//! Reading probes.yaml so that one mistake hides no other.
//!
//! serde stops at the first error, so after one the file is read again, leaving out what did
//! not read: the key of a section or a site that was wrong (`alerts.confirm_runs: two` leaves
//! `confirm_runs` out of `alerts`), or the whole section or site when it cannot be read without
//! it. A file without mistakes is read twice, as always: the sections with the site list
//! skipped, then the site list alone, each site checked as soon as it is read (100,000 sites are
//! never held as written). Each mistake costs one more reading, at most `MAX_READINGS` in all
//! (fewer for a very large file). A syntax error ends the reading: after it, nothing in the file
//! can be placed.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Error, Spanned};

mod parts;

use parts::{NameOnly, OrEmpty, Part};

use super::problems::{Checker, ConfigProblem};
use super::sites::{SiteChecker, SiteConfig, SiteDefaults};
use super::{lists, syntax};
use super::{
    AlertConfig, ConfigFile, FeedsConfig, MaintenanceConfig, NotifyConfig, SmtpConfig, StoreConfig,
    WebhookConfig,
};

/// Readings of the file at most, however many mistakes it holds (each costs one).
const MAX_READINGS: usize = 32;
/// Bytes read at most in all the readings: a file of 100,000 sites (10 MiB) is read up to
/// `MAX_READINGS` times, one of a million fewer times (each reading takes a while).
const MAX_BYTES_READ: usize = 512 << 20;

/// The site list on the first reading of the file: read past, not kept.
#[derive(Debug)]
pub struct SkippedSites;

impl<'de> Deserialize<'de> for SkippedSites {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(de).map(|_| SkippedSites)
    }
}

/// The readings of one file, and what they found wrong with how it is written.
pub struct Reading<'t> {
    text: &'t str,
    max_nodes: usize,
    /// Keys left out of a section or a site that did not read with them (`alerts` →
    /// `confirm_runs`, `sites[3]` → `orgins`).
    left_out: HashMap<Where, Vec<String>>,
    /// Sections and sites (`smtp`, `sites[3]`, `sites`) not read at all.
    given_up: HashSet<Where>,
    /// A repeated key was reported: the readings after it keep the first and go on.
    first_of_repeated_keys: bool,
    readings: usize,
    /// What is wrong with how the file is written, each once.
    pub problems: Vec<ConfigProblem>,
    /// The reading stopped (a syntax error, or too many readings): what comes after cannot be
    /// checked.
    pub stopped: bool,
    /// Said after every problem when the readings ran out.
    pub cut_short: Option<ConfigProblem>,
}

/// A part of the file read on its own: a section, the site list, a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Where {
    Section(&'static str),
    Sites,
    Site(usize),
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Where::Section(name) => f.write_str(name),
            Where::Sites => f.write_str("sites"),
            Where::Site(i) => write!(f, "sites[{i}]"),
        }
    }
}

/// Where a reading was when an error came.
#[derive(Default)]
struct Spot {
    /// The part being read; `None` while reading the file's structure, or reading past a part
    /// given up.
    at: Option<Where>,
    /// The field's path within it, from the deserializer.
    path: Option<String>,
}

/// The sections as the first readings find them: `None` until read (or given up), then the
/// section, itself `None` when written empty.
#[derive(Default)]
struct Sections {
    defaults: Option<Option<SiteDefaults>>,
    alerts: Option<Option<AlertConfig>>,
    smtp: Option<Option<SmtpConfig>>,
    store: Option<Option<StoreConfig>>,
    maintenance: Option<Option<Vec<MaintenanceConfig>>>,
    feeds: Option<Option<FeedsConfig>>,
    webhooks: Option<Option<Vec<WebhookConfig>>>,
    notify: Option<Option<Vec<NotifyConfig>>>,
    control_checks: Option<Option<lists::Texts>>,
    /// Every top-level key, by where it is written.
    keys: BTreeMap<(u64, u64), String>,
}

impl<'t> Reading<'t> {
    pub fn new(text: &'t str, max_nodes: usize) -> Self {
        Self {
            text,
            max_nodes,
            left_out: HashMap::new(),
            given_up: HashSet::new(),
            first_of_repeated_keys: false,
            readings: 0,
            problems: Vec::new(),
            stopped: false,
            cut_short: None,
        }
    }

    /// Every section but the site list, as far as it reads; an unknown top-level key is a
    /// problem (said to be a section's key written without its indentation when it is one).
    pub fn sections(&mut self) -> ConfigFile<SkippedSites> {
        let mut sections = Sections::default();
        while self.another_reading() {
            let mut spot = Spot::default();
            let seed = SectionsSeed {
                reading: self,
                sections: &mut sections,
                spot: &mut spot,
            };
            match self.read(seed) {
                Ok(()) => break,
                Err(e) => self.recover(&e, spot),
            }
        }
        self.top_level_keys(&sections.keys);
        ConfigFile {
            defaults: sections.defaults.flatten().unwrap_or_default(),
            sites: SkippedSites,
            alerts: sections.alerts.flatten().unwrap_or_default(),
            smtp: sections.smtp.flatten(),
            store: sections.store.flatten().unwrap_or_default(),
            maintenance: sections.maintenance.flatten().unwrap_or_default(),
            feeds: sections.feeds.flatten().unwrap_or_default(),
            webhooks: sections.webhooks.flatten().unwrap_or_default(),
            notify: sections.notify.flatten().unwrap_or_default(),
            control_checks: sections
                .control_checks
                .flatten()
                .map_or(Vec::new(), |t| t.0),
        }
    }

    /// The site list, each site handed to `sites` as soon as it is read. Returns whether the
    /// list itself was read (not when it is no list at all).
    pub fn sites(&mut self, checker: &mut Checker, sites: &mut SiteChecker<'_>) -> bool {
        // Sites before this one were checked (or given up) by an earlier reading.
        let mut done = 0;
        while self.another_reading() {
            let mut spot = Spot::default();
            let seed = SitesSeed {
                reading: self,
                checker: &mut *checker,
                sites: &mut *sites,
                done: &mut done,
                spot: &mut spot,
            };
            match self.read(seed) {
                Ok(()) => break,
                Err(e) => self.recover(&e, spot),
            }
        }
        !self.given_up.contains(&Where::Sites)
    }

    /// Whether to read the file once more: not after a stop, and not past the last reading
    /// (said once).
    fn another_reading(&mut self) -> bool {
        if self.stopped {
            return false;
        }
        let most = (MAX_BYTES_READ / self.text.len().max(1)).clamp(2, MAX_READINGS);
        if self.readings == most {
            self.stopped = true;
            self.cut_short = Some(ConfigProblem {
                line: 1,
                column: 1,
                path: "(top)".into(),
                message: format!("stopped after reading the file {most} times, once for each of the problems above: fix them and check again for the rest"),
            });
            return false;
        }
        self.readings += 1;
        true
    }

    fn read<S: for<'de> DeserializeSeed<'de, Value = ()>>(&self, seed: S) -> Result<(), Error> {
        let mut options = super::parse_options(self.max_nodes);
        if self.first_of_repeated_keys {
            options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::FirstWins;
        }
        serde_saphyr::with_deserializer_from_str_with_options(self.text, options, |de| {
            seed.deserialize(de)
        })
    }

    /// Keeps the problem an error is, and decides what the next reading leaves out: the key of
    /// the part it was reading, or the whole part; a syntax error stops the reading.
    fn recover(&mut self, e: &Error, mut spot: Spot) {
        // A syntax error between two sites is met reading the next one: it is the list's.
        if let (Some(Where::Site(_)), false) = (spot.at, syntax::is_about_a_value(e)) {
            spot.at = Some(Where::Sites);
            spot.path = None;
        }
        let relative = spot.path.as_deref().unwrap_or_default();
        let path = match &spot.at {
            Some(at) if relative.is_empty() || relative == "." => Some(at.to_string()),
            Some(at) if relative.starts_with('[') => Some(format!("{at}{relative}")),
            Some(at) => Some(format!("{at}.{relative}")),
            None => None,
        };
        let plain = e.without_snippet();
        // A key left out that the part cannot do without: its problem is already told.
        let consequence = match (plain, spot.at) {
            (Error::SerdeMissingField { field, .. }, Some(at)) => {
                self.left_out(at).iter().any(|k| k == field)
            }
            _ => false,
        };
        if !consequence {
            let problem = syntax::problem(e, path.as_deref(), self.text, self.max_nodes);
            if !self.problems.contains(&problem) {
                self.problems.push(problem);
            }
        }
        if matches!(plain, Error::DuplicateMappingKey { .. }) && !self.first_of_repeated_keys {
            self.first_of_repeated_keys = true;
            return;
        }
        let Some(at) = spot.at.filter(|_| syntax::is_about_a_value(e)) else {
            self.stopped = true;
            return;
        };
        let key = relative
            .split(['.', '['])
            .next()
            .filter(|k| !k.is_empty() && *k != "?");
        let keys = self.left_out.entry(at).or_default();
        match key {
            Some(key) if !consequence && !keys.iter().any(|k| k == key) => {
                keys.push(key.to_string())
            }
            _ => {
                self.given_up.insert(at);
            }
        }
    }

    /// Whether a problem at `path` may come from a key left out (its default used instead): a
    /// key left out of a site, or of `defaults` for every site.
    pub fn hides(&self, path: &str) -> bool {
        self.left_out.iter().any(|(at, keys)| {
            keys.iter().any(|key| {
                under_key(path, &format!("{at}.{key}"))
                    || (*at == Where::Section("defaults")
                        && path.starts_with("sites[")
                        && path
                            .split_once("].")
                            .is_some_and(|(_, rest)| under_key(rest, key)))
            })
        })
    }

    fn left_out(&self, at: Where) -> &[String] {
        self.left_out.get(&at).map_or(&[], Vec::as_slice)
    }

    /// A problem for each top-level key that is not a section.
    fn top_level_keys(&mut self, keys: &BTreeMap<(u64, u64), String>) {
        let sections: [(&str, &[&str], bool); 10] = [
            ("defaults", syntax::fields_of::<SiteDefaults>(), false),
            ("sites", syntax::fields_of::<SiteConfig>(), true),
            ("alerts", syntax::fields_of::<AlertConfig>(), false),
            ("smtp", syntax::fields_of::<SmtpConfig>(), false),
            ("store", syntax::fields_of::<StoreConfig>(), false),
            (
                "maintenance",
                syntax::fields_of::<MaintenanceConfig>(),
                true,
            ),
            ("feeds", syntax::fields_of::<FeedsConfig>(), false),
            ("webhooks", syntax::fields_of::<WebhookConfig>(), true),
            ("notify", syntax::fields_of::<NotifyConfig>(), true),
            ("control_checks", &[], true),
        ];
        for ((line, column), key) in keys {
            if !sections.iter().any(|(name, _, _)| name == key) {
                let problem = syntax::top_level_key(key, *line, *column, keys, &sections);
                self.problems.push(problem);
            }
        }
    }
}

/// Whether `path` is `key` or under it (`status_header.name` is under `status_header`).
fn under_key(path: &str, key: &str) -> bool {
    path.strip_prefix(key)
        .is_some_and(|after| after.is_empty() || after.starts_with(['.', '[']))
}

/// The first readings: every section but the site list.
struct SectionsSeed<'a, 't> {
    reading: &'a Reading<'t>,
    sections: &'a mut Sections,
    spot: &'a mut Spot,
}

impl<'de> DeserializeSeed<'de> for SectionsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SectionsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("`key: value` settings")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (reading, s) = (self.reading, self.sections);
        loop {
            self.spot.at = None;
            let Some(key) = map.next_key::<Spanned<String>>()? else {
                return Ok(());
            };
            let place = (key.referenced.line(), key.referenced.column());
            s.keys.insert(place, key.value.clone());
            let spot = &mut *self.spot;
            match key.value.as_str() {
                "defaults" => section(&mut map, &mut s.defaults, "defaults", reading, spot)?,
                "alerts" => section(&mut map, &mut s.alerts, "alerts", reading, spot)?,
                "smtp" => section(&mut map, &mut s.smtp, "smtp", reading, spot)?,
                "store" => section(&mut map, &mut s.store, "store", reading, spot)?,
                "maintenance" => {
                    section(&mut map, &mut s.maintenance, "maintenance", reading, spot)?
                }
                "feeds" => section(&mut map, &mut s.feeds, "feeds", reading, spot)?,
                "webhooks" => section(&mut map, &mut s.webhooks, "webhooks", reading, spot)?,
                "notify" => section(&mut map, &mut s.notify, "notify", reading, spot)?,
                "control_checks" => section(
                    &mut map,
                    &mut s.control_checks,
                    "control_checks",
                    reading,
                    spot,
                )?,
                // The site list is read on its own, and read past here a site at a time (a
                // repeated key in a site is found now, and named with its site).
                "sites" => {
                    spot.at = Some(Where::Sites);
                    map.next_value_seed(PastSites(spot))?;
                    spot.at = None;
                }
                // An unknown key is reported once all are known (it may be a section's key,
                // written without its indentation).
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
}

/// The site list read past, a site at a time, each site's place kept for an error.
struct PastSites<'a>(&'a mut Spot);

impl<'de> DeserializeSeed<'de> for PastSites<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PastSites<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of sites")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // The only error a site read past can meet, besides a syntax error, is a repeated key:
        // named by the error itself (`?` stands for it in a path).
        self.0.path = Some("?".into());
        let mut i = 0;
        loop {
            self.0.at = Some(Where::Site(i));
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    // Anything else is read past here; the site list's own reading says what is wrong with it.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Reads one section into its slot, unless read (or given up) before.
fn section<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<Option<T>>,
    name: &'static str,
    reading: &Reading<'_>,
    spot: &mut Spot,
) -> Result<(), A::Error> {
    let at = Where::Section(name);
    if slot.is_some() || reading.given_up.contains(&at) {
        map.next_value::<IgnoredAny>()?;
        return Ok(());
    }
    spot.at = Some(at);
    spot.path = None;
    let part = Part::<T>::new(reading.left_out(at), &mut spot.path);
    *slot = Some(map.next_value_seed(OrEmpty(part))?);
    spot.at = None;
    Ok(())
}

/// The last readings: the site list alone.
struct SitesSeed<'a, 't, 'c> {
    reading: &'a Reading<'t>,
    checker: &'a mut Checker,
    sites: &'a mut SiteChecker<'c>,
    done: &'a mut usize,
    spot: &'a mut Spot,
}

impl<'de> DeserializeSeed<'de> for SitesSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SitesSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("`key: value` settings")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        loop {
            self.spot.at = None;
            let Some(key) = map.next_key::<String>()? else {
                return Ok(());
            };
            if key == "sites" && !self.reading.given_up.contains(&Where::Sites) {
                self.spot.at = Some(Where::Sites);
                self.spot.path = None;
                map.next_value_seed(SiteList(&mut self))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
}

/// `sites:` — a list, or nothing.
struct SiteList<'s, 'a, 't, 'c>(&'s mut SitesSeed<'a, 't, 'c>);

impl<'de> DeserializeSeed<'de> for SiteList<'_, '_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for SiteList<'_, '_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of sites")
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let s = self.0;
        let mut i = 0;
        loop {
            let at = Where::Site(i);
            s.spot.at = None;
            if i < *s.done {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
            } else if s.reading.given_up.contains(&at) {
                // Its problem is told; its name still counts (a second site of that name, a
                // maintenance window naming it).
                let Some(site) = seq.next_element::<NameOnly>()? else {
                    break;
                };
                s.sites.skip(site.name());
                *s.done = i + 1;
            } else {
                s.spot.at = Some(at);
                s.spot.path = None;
                let part = Part::<SiteConfig>::new(s.reading.left_out(at), &mut s.spot.path);
                let Some(site) = seq.next_element_seed(part)? else {
                    break;
                };
                s.sites.check(s.checker, site);
                *s.done = i + 1;
            }
            i += 1;
        }
        s.spot.at = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_read_again_without_the_key_that_did_not_read() {
        let text = "alerts:\n  confirm_runs: two\n  recover_runs: 3\n  colour: blue\nsites: []\n";
        let mut reading = Reading::new(text, 1000);
        let raw = reading.sections();
        assert!(!reading.stopped);
        assert_eq!(
            raw.alerts.recover_runs.map(|r| r.value),
            Some(3),
            "read without the two keys"
        );
        let paths: Vec<&str> = reading.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["alerts.confirm_runs", "alerts.colour"]);
        // A problem found later under a key left out is not the file's.
        assert!(reading.hides("alerts.confirm_runs"));
        assert!(!reading.hides("alerts.recover_runs"));
    }

    #[test]
    fn a_key_left_out_of_defaults_hides_what_each_site_inherits_of_it() {
        let text = "defaults:\n  timeout: [1]\nsites: []\n";
        let mut reading = Reading::new(text, 1000);
        reading.sections();
        assert!(reading.hides("defaults.timeout"));
        assert!(reading.hides("sites[12].timeout"));
        assert!(!reading.hides("sites[12].timeouts"));
        assert!(!reading.hides("sites[12].interval"));
    }

    #[test]
    fn a_syntax_error_stops_the_reading() {
        let mut reading = Reading::new("alerts:\n  to: \"ops@example.com\nsites: []\n", 1000);
        reading.sections();
        assert!(reading.stopped);
        assert_eq!(reading.problems.len(), 1);
    }
}
