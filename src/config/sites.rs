//! `defaults:` and `sites:` — what each site is and how it is probed. The probe settings
//! themselves are checked by the settings core; this adds what only a scheduled site has: a
//! name, an interval, who hears about it.

use std::collections::HashSet;
use std::hash::BuildHasher as _;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::lists::{maybe_one_or_many, one_or_many, OneOrMany};
use super::problems::{written, Checker, ConfigProblem};
use super::Text;
use crate::diagnose::BudgetPhase;
use crate::settings::{self, ProbeSettings, SharedSettings, SiteInput, Target};

/// Per-site settings with a default.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteDefaults {
    /// How often each site is probed (e.g. `1m`). Default 1m.
    #[schemars(with = "Option<String>")]
    pub interval: Option<Text>,
    /// Deadline per request, all phases included (e.g. `10s`, at most 10m). Default 10s.
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
    /// The DNS server asked for each site's addresses instead of the system's (`ADDR[:PORT]`,
    /// port 53 by default), like `--resolver`.
    #[schemars(with = "Option<String>")]
    pub resolver: Option<Text>,
    /// Days before a certificate's expiry at which a notice goes out, each once per
    /// certificate (one number is one threshold); the largest also degrades the site.
    /// Default `[14, 7, 3, 1]`.
    #[schemars(with = "Option<CertDays>")]
    pub cert_warning_days: Option<Box<Spanned<CertDays>>>,
    /// Each request made this many times, one after the other (1-5). Default 1.
    #[schemars(with = "Option<u32>", range(min = 1, max = 5))]
    pub samples: Option<Box<Spanned<u32>>>,
    /// The page requested this many times at once on each route (1-5), to expose a listen
    /// backlog that overflows under load. Default 1 (off).
    #[schemars(with = "Option<u32>", range(min = 1, max = 5))]
    pub burst: Option<Box<Spanned<u32>>>,
    /// Requests probe makes at once to one origin address, over every site and route (1-64;
    /// a status page read takes all of them). Default 2: a small PHP-FPM pool keeps workers
    /// for its visitors while probe looks. Set here only: it is the origin's, not a site's.
    #[schemars(with = "Option<u32>", range(min = 1, max = 64))]
    pub per_origin: Option<Box<Spanned<u32>>>,
    /// Statuses the page may answer with while healthy (one or a list). Default: any 2xx or
    /// 3xx.
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<u16>>")]
    pub expect_status: Option<Vec<Text>>,
    /// Extra trusted CA certificates (PEM) for every site, on both routes (a private CA).
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Text>,
    /// Redirects followed per request, same scheme, host and port only (0-5). Default 0.
    #[schemars(with = "Option<u32>")]
    pub follow_redirects: Option<Box<Spanned<u32>>>,
    /// Other hosts a followed redirect may go to (e.g. `www.example.com`; one or a list).
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub redirect_hosts: Option<Vec<Text>>,
    /// The edge is Cloudflare although its address is outside Cloudflare's published ranges (a
    /// Cloudflare Tunnel, a private edge address): its headers count as proof. Default false.
    pub cloudflare_edge: Option<bool>,
    /// PHP-FPM's status page (`pm.status_path`, e.g. `/fpm-status`) of every site with origins,
    /// read as `?json&full` on the origin route.
    #[schemars(with = "Option<String>")]
    pub fpm_status: Option<Text>,
    /// nginx's `stub_status` page (e.g. `/nginx_status`) of every site with origins, read on
    /// the origin route.
    #[schemars(with = "Option<String>")]
    pub nginx_status: Option<Text>,
    /// A header the status requests carry (a token the origin checks), its value from the
    /// environment.
    pub status_header: Option<StatusHeaderConfig>,
    /// How long each phase may take before a working site is slow; a site's own budget
    /// overrides these phase by phase.
    pub budget: Option<BudgetConfig>,
}

/// `budget: {ttfb: 2s, total: 5s, dns: 1s, connect: 1s, tls: 1s}`: how long each phase of an
/// answer may take (durations like the timeout) before a working site is `slow` (or
/// `origin_slow`, when the page is slow and the static file is not). A phase without a budget
/// is not judged.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Our own DNS lookup of the site's name. Default: not judged.
    #[schemars(with = "Option<String>")]
    pub dns: Option<Text>,
    /// The TCP handshake. Default: not judged.
    #[schemars(with = "Option<String>")]
    pub connect: Option<Text>,
    /// The TLS handshake. Default: not judged.
    #[schemars(with = "Option<String>")]
    pub tls: Option<Text>,
    /// Request sent to the first byte of the answer. Default 2s.
    #[schemars(with = "Option<String>")]
    pub ttfb: Option<Text>,
    /// The whole request, every phase and the body included. Default: not judged.
    #[schemars(with = "Option<String>")]
    pub total: Option<Text>,
}

impl BudgetConfig {
    /// The value written for `phase`, if any.
    fn get(&self, phase: BudgetPhase) -> Option<&Text> {
        match phase {
            BudgetPhase::Dns => self.dns.as_ref(),
            BudgetPhase::Connect => self.connect.as_ref(),
            BudgetPhase::Tls => self.tls.as_ref(),
            BudgetPhase::Ttfb => self.ttfb.as_ref(),
            BudgetPhase::Total => self.total.as_ref(),
        }
    }
}

/// `status_header: {name: X-Status-Token, value_env: FPM_STATUS_TOKEN}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusHeaderConfig {
    /// The header's name, e.g. `X-Status-Token`.
    #[schemars(with = "String")]
    pub name: Text,
    /// The environment variable holding its value (never the value itself).
    #[schemars(with = "String")]
    pub value_env: Text,
}

/// `cert_warning_days`: one threshold, or several.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum CertDays {
    One(u32),
    Many(Vec<u32>),
}

impl<'de> Deserialize<'de> for CertDays {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Days;
        impl<'de> serde::de::Visitor<'de> for Days {
            type Value = CertDays;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of days or a list of them, e.g. [14, 7, 3, 1]")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<CertDays, E> {
                u32::try_from(v)
                    .map(CertDays::One)
                    .map_err(|_| E::custom(format!("{v}: too many days")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<CertDays, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v}: a number of days is not negative")))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<CertDays, A::Error> {
                let mut days = Vec::new();
                while let Some(d) = seq.next_element::<u32>()? {
                    days.push(d);
                }
                Ok(CertDays::Many(days))
            }
        }
        deserializer.deserialize_any(Days)
    }
}

impl CertDays {
    fn to_vec(&self) -> Vec<u32> {
        match self {
            CertDays::One(days) => vec![*days],
            CertDays::Many(days) => days.clone(),
        }
    }
}

// Settings a site seldom sets are boxed: a list of 100,000 sites is read whole before it is
// checked, and each inline field costs that many times its size.
/// One site.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Name used in alerts and feeds; defaults to the URL's host name. Unique.
    #[schemars(with = "Option<String>")]
    pub name: Option<Box<Text>>,
    /// The page to probe (`example.com` means `https://example.com/`).
    #[schemars(with = "String")]
    pub url: Text,
    /// Origin addresses (`IP` or `IP:PORT`, one or a list), probed directly with the site's
    /// Host and SNI.
    #[serde(default, deserialize_with = "one_or_many")]
    #[schemars(with = "OneOrMany<String>")]
    pub origins: Vec<Text>,
    /// Dial this address for the edge route instead of what DNS answers.
    #[schemars(with = "Option<String>")]
    pub edge: Option<Box<Text>>,
    /// A file the web server serves without PHP, e.g. `/wp-includes/css/dashicons.min.css`.
    #[schemars(with = "Option<String>")]
    pub static_path: Option<Box<Text>>,
    #[schemars(with = "Option<String>")]
    pub interval: Option<Box<Text>>,
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Box<Text>>,
    /// The DNS server asked for this site's addresses (`ADDR[:PORT]`), instead of
    /// `defaults.resolver` or the system's.
    #[schemars(with = "Option<String>")]
    pub resolver: Option<Box<Text>>,
    #[schemars(with = "Option<CertDays>")]
    pub cert_warning_days: Option<Box<Spanned<CertDays>>>,
    #[schemars(with = "Option<u32>", range(min = 1, max = 5))]
    pub samples: Option<Box<Spanned<u32>>>,
    #[schemars(with = "Option<u32>", range(min = 1, max = 5))]
    pub burst: Option<Box<Spanned<u32>>>,
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<u16>>")]
    pub expect_status: Option<Vec<Text>>,
    #[schemars(with = "Option<u32>")]
    pub follow_redirects: Option<Box<Spanned<u32>>>,
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub redirect_hosts: Option<Vec<Text>>,
    pub cloudflare_edge: Option<bool>,
    /// PHP-FPM's status page on the origin (its `pm.status_path`, e.g. `/fpm-status`), read
    /// as `?json&full` on the origin route. Needs `origins`.
    #[schemars(with = "Option<String>")]
    pub fpm_status: Option<Box<Text>>,
    /// nginx's `stub_status` page on the origin (e.g. `/nginx_status`). Needs `origins`.
    #[schemars(with = "Option<String>")]
    pub nginx_status: Option<Box<Text>>,
    pub status_header: Option<Box<StatusHeaderConfig>>,
    /// This site's time budgets, phase by phase over `defaults.budget`.
    pub budget: Option<Box<BudgetConfig>>,
    /// Addresses this site's alerts go to (one or a list), instead of `alerts.to`.
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub alert_to: Option<Vec<Text>>,
}

/// A site ready to probe on a schedule.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// What each probe of it does.
    pub probe: ProbeSettings,
    pub interval: Duration,
    /// Shared by every site that names no recipients of its own.
    pub alert_to: Arc<[String]>,
}

const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

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

/// A site's value, or else the default's, each with the path it was written under.
fn inherited<'a, T>(
    own: &'a Option<T>,
    default: &'a Option<T>,
    at: &str,
    field: &str,
) -> Option<(&'a T, String)> {
    match (own, default) {
        (Some(value), _) => Some((value, format!("{at}.{field}"))),
        (None, Some(value)) => Some((value, format!("defaults.{field}"))),
        (None, None) => None,
    }
}

/// Each value of a list with its place (`path[0]`, `path[1]`, …).
fn written_list<T: Clone>(list: &[Spanned<T>], path: &str) -> Vec<settings::Written<T>> {
    list.iter()
        .enumerate()
        .map(|(j, v)| written(v, format!("{path}[{j}]")))
        .collect()
}

/// The statuses of `expect_status` as numbers; what is not a number is a problem here (the
/// settings core checks the numbers' range).
fn statuses(checker: &mut Checker, list: &[Text], path: &str) -> Vec<settings::Written<u16>> {
    let mut out = Vec::new();
    for (j, status) in list.iter().enumerate() {
        let at = format!("{path}[{j}]");
        match status.value.trim().parse::<u16>() {
            Ok(code) => out.push(settings::Written::new(code, written(status, at).place)),
            Err(_) => checker.problem(
                status,
                at,
                format!("{:?} is not an HTTP status (100-599)", status.value),
            ),
        }
    }
    out
}

/// Sites without origins named one by one in the warnings; beyond that, a count.
const NAMED_WITHOUT_ORIGINS: usize = 3;

/// Checks the sites one at a time as the file is read (a list of 100,000 sites is never held
/// as written): each is checked, kept in its checked form, and what was read of it let go.
pub struct SiteChecker<'a> {
    defaults: &'a SiteDefaults,
    default_interval: Duration,
    default_timeout: Duration,
    alert_to: Arc<[String]>,
    extra_roots: Arc<[CertificateDer<'static>]>,
    /// How many sites were read, usable or not.
    read: usize,
    sites: Vec<Site>,
    names: SiteNames,
    /// Sites without origins: the first few names, and how many in all.
    without_origins: Vec<String>,
    without_origins_count: usize,
    /// The shared settings of the site checked last.
    last_shared: Option<Arc<SharedSettings>>,
}

impl<'a> SiteChecker<'a> {
    /// `alert_to` is `alerts.to`, the recipients of sites that name none; `extra_roots` the
    /// CA certificates of `defaults.ca_file`.
    pub fn new(
        checker: &mut Checker,
        defaults: &'a SiteDefaults,
        alert_to: &[String],
        extra_roots: Arc<[CertificateDer<'static>]>,
    ) -> Self {
        let default_interval = checker.duration(
            defaults.interval.as_ref(),
            "defaults.interval",
            DEFAULT_INTERVAL,
            None,
        );
        let default_timeout = checker.duration(
            defaults.timeout.as_ref(),
            "defaults.timeout",
            settings::DEFAULT_TIMEOUT,
            Some(settings::MAX_TIMEOUT),
        );
        Self {
            defaults,
            default_interval,
            default_timeout,
            alert_to: alert_to.into(),
            extra_roots,
            read: 0,
            sites: Vec::new(),
            names: SiteNames::default(),
            without_origins: Vec::new(),
            without_origins_count: 0,
            last_shared: None,
        }
    }

    /// Checks the next site of the list.
    pub fn check(&mut self, checker: &mut Checker, site: SiteConfig) {
        let i = self.read;
        self.read += 1;
        let defaults = self.defaults;
        let at = format!("sites[{i}]");
        let mut input = SiteInput::new(written(&site.url, format!("{at}.url")));
        input.origins = site
            .origins
            .iter()
            .enumerate()
            .map(|(j, o)| written(o, format!("{at}.origins[{j}]")))
            .collect();
        input.edge = site.edge.as_ref().map(|e| written(e, format!("{at}.edge")));
        input.static_path = site
            .static_path
            .as_ref()
            .map(|p| written(p, format!("{at}.static_path")));
        input.timeout = site
            .timeout
            .as_ref()
            .map(|t| written(t, format!("{at}.timeout")));
        input.resolver = match (&site.resolver, &defaults.resolver) {
            (Some(own), _) => Some(written(&**own, format!("{at}.resolver"))),
            (None, Some(default)) => Some(written(default, "defaults.resolver")),
            (None, None) => None,
        };
        if let Some((list, path)) = inherited(
            &site.expect_status,
            &defaults.expect_status,
            &at,
            "expect_status",
        ) {
            input.expect_status = statuses(checker, list, &path);
        }
        if let Some((n, path)) = inherited(
            &site.follow_redirects,
            &defaults.follow_redirects,
            &at,
            "follow_redirects",
        ) {
            input.follow_redirects = Some(written(n, path));
        }
        if let Some((list, path)) = inherited(
            &site.redirect_hosts,
            &defaults.redirect_hosts,
            &at,
            "redirect_hosts",
        ) {
            input.redirect_hosts = written_list(list, &path);
        }
        if let Some((days, path)) = inherited(
            &site.cert_warning_days,
            &defaults.cert_warning_days,
            &at,
            "cert_warning_days",
        ) {
            let place = written(days, path);
            input.cert_warning_days =
                Some(settings::Written::new(place.value.to_vec(), place.place));
        }
        for (field, own, default, slot) in [
            (
                "samples",
                &site.samples,
                &defaults.samples,
                &mut input.samples,
            ),
            ("burst", &site.burst, &defaults.burst, &mut input.burst),
        ] {
            if let Some((n, path)) = inherited(own, default, &at, field) {
                *slot = Some(written(n, path));
            }
        }
        input.cloudflare_edge = site
            .cloudflare_edge
            .or(defaults.cloudflare_edge)
            .unwrap_or(false);
        if let Some((n, path)) = inherited(&None, &defaults.per_origin, &at, "per_origin") {
            input.per_origin = Some(written(n, path));
        }
        // The defaults' status pages apply to the sites with origins; a site's own needs one.
        let has_origins = !site.origins.is_empty();
        for (field, own, default, slot) in [
            (
                "fpm_status",
                site.fpm_status.as_deref(),
                defaults.fpm_status.as_ref(),
                &mut input.fpm_status,
            ),
            (
                "nginx_status",
                site.nginx_status.as_deref(),
                defaults.nginx_status.as_ref(),
                &mut input.nginx_status,
            ),
        ] {
            *slot = match (own, default) {
                (Some(path), _) => Some(written(path, format!("{at}.{field}"))),
                (None, Some(path)) if has_origins => {
                    Some(written(path, format!("defaults.{field}")))
                }
                _ => None,
            };
        }
        let header = match (&site.status_header, &defaults.status_header) {
            (Some(h), _) => Some((&**h, format!("{at}.status_header"))),
            (None, Some(h)) => Some((h, "defaults.status_header".to_string())),
            (None, None) => None,
        };
        if let Some((h, path)) =
            header.filter(|_| input.fpm_status.is_some() || input.nginx_status.is_some())
        {
            let var_at = format!("{path}.value_env");
            checker.secret_variable(&h.value_env, &var_at, "FPM_STATUS_TOKEN", "header value");
            let var = written(&h.value_env, var_at);
            input.status_header = Some(settings::StatusHeaderInput {
                name: written(&h.name, format!("{path}.name")),
                value: std::env::var(var.value.trim()).ok(),
                value_env: var,
            });
        }
        // Phase by phase: the site's own budget, else the defaults'.
        for phase in BudgetPhase::ALL {
            let own = site.budget.as_deref().and_then(|b| b.get(phase));
            let default = defaults.budget.as_ref().and_then(|b| b.get(phase));
            let written = match (own, default) {
                (Some(value), _) => Some(written(value, format!("{at}.budget.{}", phase.key()))),
                (None, Some(value)) => {
                    Some(written(value, format!("defaults.budget.{}", phase.key())))
                }
                (None, None) => None,
            };
            input.budget.extend(written.map(|w| (phase, w)));
        }
        let (probe, problems) = settings::check_site(&input, self.default_timeout);
        drop(input);
        checker.report(problems);

        let interval = checker.duration(
            site.interval.as_deref(),
            &format!("{at}.interval"),
            self.default_interval,
            None,
        );
        let timeout = probe
            .as_ref()
            .map_or(self.default_timeout, |p| p.shared.timeout);
        if timeout >= interval {
            let spot = site
                .timeout
                .as_deref()
                .or(site.interval.as_deref())
                .unwrap_or(&site.url);
            checker.problem(
                spot,
                format!("{at}.timeout"),
                format!(
                    "the timeout ({}) must be shorter than the interval ({})",
                    crate::words::duration(timeout),
                    crate::words::duration(interval)
                ),
            );
        }
        let alert_to = match &site.alert_to {
            Some(list) => checker.emails(list, &format!("{at}.alert_to")).into(),
            None => self.alert_to.clone(),
        };
        let name = match (&site.name, &probe) {
            (Some(n), _) => n.value.trim().to_string(),
            (None, Some(p)) => p.target.host().to_string(),
            // Other settings of the site are wrong: its name still counts, so that a second
            // site of the same name is reported in the same pass.
            (None, None) => Target::parse(site.url.value.trim())
                .map(|t| t.host().to_string())
                .unwrap_or_default(),
        };
        let spot = site.name.as_deref().unwrap_or(&site.url);
        let mut new_name = false;
        if name.starts_with('@') {
            checker.problem(
                spot,
                format!("{at}.name"),
                format!("{name:?}: names starting with '@' are reserved for the prober itself"),
            );
        } else if probe.is_some() && !valid_site_name(&name) {
            checker.problem(
                spot,
                format!("{at}.name"),
                format!("{name:?}: {SITE_NAME_RULE}"),
            );
        } else if !name.is_empty() && self.names.contains(&self.sites, &name) {
            checker.problem(
                spot,
                format!("{at}.name"),
                format!("a site named {name:?} is already defined; give each site a unique `name`"),
            );
        } else if !name.is_empty() {
            new_name = true;
        }
        if let Some(mut probe) = probe {
            if site.origins.is_empty() {
                self.without_origins_count += 1;
                if self.without_origins.len() < NAMED_WITHOUT_ORIGINS {
                    self.without_origins.push(format!("{at} ({name})"));
                }
            }
            probe.shared_mut().extra_roots = self.extra_roots.clone();
            // Consecutive sites mostly share their settings: one copy serves them all.
            match &self.last_shared {
                Some(last) if **last == *probe.shared => probe.shared = last.clone(),
                _ => self.last_shared = Some(probe.shared.clone()),
            }
            self.sites.push(Site {
                name,
                probe,
                interval,
                alert_to,
            });
            if new_name {
                self.names.add_last(&self.sites);
            }
        } else if new_name {
            self.names.unusable.insert(name);
        }
    }

    /// Counts the next site of the list as read without checking it (it could not be read: its
    /// problem is told); its name, when known, still counts as defined.
    pub fn skip(&mut self, name: Option<String>) {
        self.read += 1;
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            if !self.names.contains(&self.sites, &name) {
                self.names.unusable.insert(name);
            }
        }
    }

    /// The sites checked and their names; warns once about the sites without
    /// origins (naming the first few, then counting), and says so when there was no site
    /// (unless `list_read` is false: the list itself could not be read, and that is told).
    pub fn finish(mut self, checker: &mut Checker, list_read: bool) -> (Vec<Site>, SiteNames) {
        if self.read == 0 && list_read {
            checker.problems.push(ConfigProblem {
                line: 1,
                column: 1,
                path: "sites".into(),
                message: "no site to probe: add at least one under `sites:`".into(),
            });
        }
        const WHY: &str =
            "only the edge route is probed, so edge→origin failures cannot be told apart";
        let more = self.without_origins_count - self.without_origins.len();
        if more == 0 {
            for site in &self.without_origins {
                checker.warnings.push(format!("{site}: no origins: {WHY}"));
            }
        } else if self.without_origins_count > 0 {
            checker.warnings.push(format!(
                "{} sites have no origins ({} and {more} more): {WHY}",
                self.without_origins_count,
                self.without_origins.join(", "),
            ));
        }
        self.sites.shrink_to_fit();
        (self.sites, self.names)
    }
}

/// The names of the sites read: the checked sites' own names, found by index into the list
/// (100,000 names are not copied into a set), and those of the sites that could not be checked.
#[derive(Default)]
pub struct SiteNames {
    /// Indices into the checked sites, hashed by their names.
    checked: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
    unusable: HashSet<String>,
}

impl SiteNames {
    /// Whether a site of `name` was read; `sites` are the checked sites.
    pub fn contains(&self, sites: &[Site], name: &str) -> bool {
        let hash = self.hasher.hash_one(name);
        self.checked
            .find(hash, |&i| sites[i as usize].name == name)
            .is_some()
            || self.unusable.contains(name)
    }

    /// Adds the name of the last site of `sites`.
    fn add_last(&mut self, sites: &[Site]) {
        let Some(name) = sites.last().map(|s| s.name.as_str()) else {
            return;
        };
        // A config of more than 4 billion sites is refused long before (its size).
        let index = (sites.len() - 1) as u32;
        let hasher = &self.hasher;
        self.checked
            .insert_unique(hasher.hash_one(name), index, |&i| {
                hasher.hash_one(sites[i as usize].name.as_str())
            });
    }
}

/// A list of site names (`maintenance[0].sites`, `webhooks[1].sites`), each checked against the
/// names defined (`known`).
pub fn names_in(
    checker: &mut Checker,
    list: Option<&Vec<Text>>,
    at: &str,
    known: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (j, site) in list.into_iter().flatten().enumerate() {
        let name = site.value.trim();
        if known(name) {
            out.push(name.to_string());
        } else {
            checker.problem(
                site,
                format!("{at}.sites[{j}]"),
                format!("no site is named {name:?}"),
            );
        }
    }
    out
}
