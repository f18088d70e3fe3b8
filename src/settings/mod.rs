//! One settings core: what a probe of one site needs, checked. The command line and probes.yaml
//! both hand it what the user wrote, each value with where it was written (`Place`); it returns
//! the checked settings and *every* problem at once, each a sentence about the value. The command
//! line shows the first as its one exit-3 line (`--origin "db.internal" is not an IP address…`),
//! the config every one as `file:line:column: path: message`. Neither front end checks what is
//! checked here, so the two cannot drift.

mod ca;
pub mod database;
mod target;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::diagnose::{Budget, BudgetPhase, DiagnoseSettings};

pub use ca::{load_ca_file, pem_certificates, CaFileError, MAX_CA_FILE_BYTES};
pub use target::{
    authority, check_static_path, is_port_zero, parse_ip_port, Scheme, StaticPathError, Target,
    TargetError, MAX_PATH_BYTES,
};

/// Longest timeout accepted: a prober that waits longer than this is not measuring anything.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Most redirects followed for one request: each is a full request with its own deadline.
pub const MAX_REDIRECTS: u32 = 5;
/// The deadline per request when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Days before a certificate's expiry at which a notice goes out, when not given (the largest
/// also degrades the site).
pub const DEFAULT_CERT_WARNING_DAYS: [u32; 4] = [14, 7, 3, 1];
/// A certificate threshold further out than this is a typo (a year and a bit).
const MAX_CERT_WARNING_DAYS: u32 = 400;

/// Where a value was written, for the message that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A command-line argument: `--origin`, or `target` for the site itself.
    Flag(&'static str),
    /// A field of a config file: where its value starts, and its path (`sites[2].origins[0]`).
    Field {
        line: u64,
        column: u64,
        path: String,
    },
}

/// A value as the user wrote it, and where.
#[derive(Debug, Clone)]
pub struct Written<T> {
    pub value: T,
    pub place: Place,
}

impl<T> Written<T> {
    pub fn new(value: T, place: Place) -> Self {
        Self { value, place }
    }
}

/// One problem with one value: where it was written and what is wrong, in a sentence that
/// starts with the value when it quotes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub place: Place,
    pub message: String,
}

impl Problem {
    pub fn new(place: &Place, message: impl Into<String>) -> Self {
        Self {
            place: place.clone(),
            message: message.into(),
        }
    }

    /// The problem as the command line shows it: the flag, then the sentence (`--origin "x" is
    /// not…`), or the flag, a colon and the sentence when it does not start with the value.
    pub fn for_command_line(&self) -> String {
        let flag = match &self.place {
            Place::Flag(flag) => flag.to_string(),
            Place::Field { path, .. } => path.clone(),
        };
        if self
            .message
            .starts_with(['"', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
        {
            format!("{flag} {}", self.message)
        } else {
            format!("{flag}: {}", self.message)
        }
    }
}

/// The probe settings of one site as written.
#[derive(Debug, Clone)]
pub struct SiteInput {
    pub url: Written<String>,
    pub origins: Vec<Written<String>>,
    pub edge: Option<Written<String>>,
    pub static_path: Option<Written<String>>,
    pub timeout: Option<Written<String>>,
    /// The DNS server asked instead of the system's (`ADDR[:PORT]`, port 53 by default).
    pub resolver: Option<Written<String>>,
    pub expect_status: Vec<Written<u16>>,
    pub follow_redirects: Option<Written<u32>>,
    pub redirect_hosts: Vec<Written<String>>,
    /// One threshold or several, in any order.
    pub cert_warning_days: Option<Written<Vec<u32>>>,
    pub samples: Option<Written<u32>>,
    pub burst: Option<Written<u32>>,
    pub cloudflare_edge: bool,
    /// PHP-FPM's status page (`pm.status_path`), read on the origin route.
    pub fpm_status: Option<Written<String>>,
    /// nginx's `stub_status` page, read on the origin route.
    pub nginx_status: Option<Written<String>>,
    /// A header sent with the status requests only (a token the origin checks).
    pub status_header: Option<StatusHeaderInput>,
    /// Time budgets per phase (`budget.ttfb: 2s`, `--budget ttfb=2s`), in the order written:
    /// a phase written twice keeps the last.
    pub budget: Vec<(BudgetPhase, Written<String>)>,
    /// Requests at once to one origin address, over every site (`limits.per_origin`,
    /// `--per-origin`).
    pub per_origin: Option<Written<u32>>,
}

/// `status_header` as written: the header's name, and the environment variable holding its
/// value with the value found there (`None` when the variable is not set).
#[derive(Clone)]
pub struct StatusHeaderInput {
    pub name: Written<String>,
    pub value_env: Written<String>,
    pub value: Option<String>,
}

impl std::fmt::Debug for StatusHeaderInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is a secret: never in a log line or a panic message.
        f.debug_struct("StatusHeaderInput")
            .field("name", &self.name.value)
            .field("value_env", &self.value_env.value)
            .finish_non_exhaustive()
    }
}

impl SiteInput {
    /// A site given by its URL only (`place` says where the URL was written).
    pub fn new(url: Written<String>) -> Self {
        Self {
            url,
            origins: Vec::new(),
            edge: None,
            static_path: None,
            timeout: None,
            resolver: None,
            expect_status: Vec::new(),
            follow_redirects: None,
            redirect_hosts: Vec::new(),
            cert_warning_days: None,
            samples: None,
            burst: None,
            cloudflare_edge: false,
            fpm_status: None,
            nginx_status: None,
            status_header: None,
            budget: Vec::new(),
            per_origin: None,
        }
    }
}

/// Which server DNS questions go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nameserver {
    /// What /etc/resolv.conf names.
    System,
    /// One server, over UDP with TCP fallback (`--resolver`).
    At(SocketAddr),
}

/// Checked settings for probing one site: what the engine reads. What is the site's own is
/// held here; how it is probed and judged is shared by every site whose settings are alike (a
/// list of 100,000 sites holds a few of those).
#[derive(Debug, Clone)]
pub struct ProbeSettings {
    pub target: Target,
    pub origins: Box<[SocketAddr]>,
    pub edge: Option<SocketAddr>,
    pub static_path: Option<Box<str>>,
    /// Status pages read on the origin route; boxed, as most sites have none.
    pub witnesses: Option<Box<WitnessSettings>>,
    pub shared: Arc<SharedSettings>,
}

/// The server's own status pages, read on the origin route with the site's Host and SNI.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WitnessSettings {
    /// PHP-FPM's `pm.status_path`, read as `?json&full`.
    pub fpm_status: Option<Box<str>>,
    /// nginx's `stub_status` location.
    pub nginx_status: Option<Box<str>>,
    pub header: Option<StatusHeader>,
}

/// A header the status requests carry (and no other request).
#[derive(Clone, PartialEq)]
pub struct StatusHeader {
    pub name: http::HeaderName,
    /// From the environment; `None` when the variable was not set (nothing is sent then).
    pub value: Option<http::HeaderValue>,
    /// The variable it came from, for what people read.
    pub value_env: String,
}

impl std::fmt::Debug for StatusHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusHeader")
            .field("name", &self.name)
            .field("value_env", &self.value_env)
            .field("set", &self.value.is_some())
            .finish()
    }
}

/// How a site is probed and judged, beyond where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSettings {
    pub nameserver: Nameserver,
    /// Extra trusted roots, on both routes; shared by every site of a config (and the engine
    /// builds the trust stores once for one shared list).
    pub extra_roots: Arc<[CertificateDer<'static>]>,
    /// One deadline per request, every phase included.
    pub timeout: Duration,
    /// Each request made this many times, one after the other.
    pub samples: u32,
    /// The page requested this many times at once on each route (1: one request).
    pub burst: u32,
    /// Thresholds of the diagnosis (certificate warning window, expected statuses, …).
    pub diagnose: DiagnoseSettings,
    /// Redirects followed per request (same scheme, host and port, or `redirect_hosts`).
    pub follow_redirects: u32,
    /// Other hosts a followed redirect may go to.
    pub redirect_hosts: Vec<String>,
    /// Requests made at once to one origin address, over every site and route (`gate`).
    pub per_origin: u32,
}

impl SharedSettings {
    /// Every default, with this timeout.
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            nameserver: Nameserver::System,
            extra_roots: Arc::from(Vec::new()),
            timeout,
            samples: 1,
            burst: 1,
            diagnose: DiagnoseSettings::default(),
            follow_redirects: 0,
            redirect_hosts: Vec::new(),
            per_origin: DEFAULT_PER_ORIGIN,
        }
    }
}

impl ProbeSettings {
    /// The settings of a bare URL (the control checks): every default, no origin.
    pub fn for_target(target: Target, timeout: Duration) -> Self {
        Self {
            target,
            origins: Box::new([]),
            edge: None,
            static_path: None,
            witnesses: None,
            shared: Arc::new(SharedSettings::with_timeout(timeout)),
        }
    }

    /// The shared part, to change for this site alone (copied first if another site shares it).
    pub fn shared_mut(&mut self) -> &mut SharedSettings {
        Arc::make_mut(&mut self.shared)
    }
}

/// Checks one site's settings. `default_timeout` applies when none is written. Returns the
/// settings when there is no problem, and every problem found.
pub fn check_site(
    input: &SiteInput,
    default_timeout: Duration,
) -> (Option<ProbeSettings>, Vec<Problem>) {
    let mut problems = Vec::new();
    let target = target(&input.url).map_err(|p| problems.push(p)).ok();
    let port = target.as_ref().map_or(443, |t| t.port);
    let mut origins = Vec::new();
    for origin in &input.origins {
        match address(origin, port) {
            Ok(a) => origins.push(a),
            Err(p) => problems.push(p),
        }
    }
    let edge = match input.edge.as_ref().map(|e| address(e, port)).transpose() {
        Ok(edge) => edge,
        Err(p) => {
            problems.push(p);
            None
        }
    };
    let static_path = match &input.static_path {
        Some(p) => match check_static_path(&p.value) {
            Ok(path) => Some(path),
            Err(e) => {
                problems.push(Problem::new(&p.place, format!("{:?}: {e}", p.value)));
                None
            }
        },
        None => None,
    };
    let timeout = match &input.timeout {
        Some(t) => duration(t, Some(MAX_TIMEOUT)).unwrap_or_else(|p| {
            problems.push(p);
            default_timeout
        }),
        None => default_timeout,
    };
    let nameserver = match input.resolver.as_ref().map(|r| address(r, 53)).transpose() {
        Ok(Some(address)) => Nameserver::At(address),
        Ok(None) => Nameserver::System,
        Err(p) => {
            problems.push(p);
            Nameserver::System
        }
    };
    for status in &input.expect_status {
        if !(100..=599).contains(&status.value) {
            problems.push(Problem::new(
                &status.place,
                format!("{} is not an HTTP status (100-599)", status.value),
            ));
        }
    }
    let follow_redirects = match &input.follow_redirects {
        Some(n) if n.value > MAX_REDIRECTS => {
            problems.push(Problem::new(
                &n.place,
                format!(
                    "{}: at most {MAX_REDIRECTS} redirects are followed",
                    n.value
                ),
            ));
            0
        }
        Some(n) => n.value,
        None => 0,
    };
    let cert_warning_days = cert_thresholds(input.cert_warning_days.as_ref(), &mut problems);
    let samples = at_most(
        input.samples.as_ref(),
        MAX_SAMPLES,
        "samples",
        &mut problems,
    );
    let burst = at_most(input.burst.as_ref(), MAX_BURST, "burst", &mut problems);
    let witnesses = witness_settings(input, &mut problems);
    let budget = budget(&input.budget, &mut problems);
    let per_origin = match &input.per_origin {
        Some(_) => at_most(
            input.per_origin.as_ref(),
            MAX_PER_ORIGIN,
            "requests at once to one origin",
            &mut problems,
        ),
        None => DEFAULT_PER_ORIGIN,
    };
    let Some(target) = target.filter(|_| problems.is_empty()) else {
        return (None, problems);
    };
    let shared = SharedSettings {
        diagnose: DiagnoseSettings {
            cert_warning_days,
            expect_status: input.expect_status.iter().map(|s| s.value).collect(),
            cloudflare_edge_declared: input.cloudflare_edge,
            budget,
        },
        nameserver,
        follow_redirects,
        samples,
        burst,
        redirect_hosts: input
            .redirect_hosts
            .iter()
            .map(|h| h.value.trim().trim_end_matches('.').to_lowercase())
            .collect(),
        per_origin,
        ..SharedSettings::with_timeout(timeout)
    };
    let settings = ProbeSettings {
        target,
        origins: origins.into(),
        edge,
        static_path: static_path.map(String::into_boxed_str),
        witnesses,
        shared: Arc::new(shared),
    };
    (Some(settings), problems)
}

/// Headers a status request may not set: they belong to the request itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// The status pages to read, checked: paths like the static file's, only with an origin to read
/// them on (a status page is never asked of the edge: it must not be public), and a header
/// whose name HTTP allows and whose value the environment holds.
fn witness_settings(
    input: &SiteInput,
    problems: &mut Vec<Problem>,
) -> Option<Box<WitnessSettings>> {
    let mut witnesses = WitnessSettings::default();
    for (written, slot, example) in [
        (&input.fpm_status, &mut witnesses.fpm_status, "/fpm-status"),
        (
            &input.nginx_status,
            &mut witnesses.nginx_status,
            "/nginx_status",
        ),
    ] {
        let Some(p) = written else { continue };
        match check_static_path(&p.value) {
            Err(StaticPathError::NotAbsolute) => problems.push(Problem::new(
                &p.place,
                format!("{:?}: must be a path starting with '/', e.g. {example}", p.value),
            )),
            Err(e) => problems.push(Problem::new(&p.place, format!("{:?}: {e}", p.value))),
            Ok(_) if input.origins.is_empty() => problems.push(Problem::new(
                &p.place,
                "needs an origin address: status pages are read on the origin route only (they must not be public)",
            )),
            Ok(path) => *slot = Some(path.into_boxed_str()),
        }
    }
    if let Some(h) = &input.status_header {
        let name = h.name.value.trim();
        match http::HeaderName::from_bytes(name.as_bytes()) {
            Ok(header) if RESERVED_HEADERS.contains(&header.as_str()) => problems.push(Problem::new(
                &h.name.place,
                format!("{name:?}: the request sets this header itself; name a header of your own (e.g. X-Status-Token)"),
            )),
            Ok(header) => {
                let value = match &h.value {
                    Some(v) => match http::HeaderValue::from_str(v) {
                        Ok(mut value) => {
                            value.set_sensitive(true);
                            Some(value)
                        }
                        Err(_) => {
                            // The value is never repeated: it is a secret.
                            problems.push(Problem::new(
                                &h.value_env.place,
                                format!("{} holds a value a header cannot carry (a line break or control character)", h.value_env.value),
                            ));
                            None
                        }
                    },
                    None => None,
                };
                witnesses.header = Some(StatusHeader {
                    name: header,
                    value,
                    value_env: h.value_env.value.clone(),
                });
            }
            Err(_) => problems.push(Problem::new(
                &h.name.place,
                format!("{name:?} is not a header name (letters, digits and - only)"),
            )),
        }
    }
    (witnesses.fpm_status.is_some() || witnesses.nginx_status.is_some())
        .then(|| Box::new(witnesses))
}

/// Most requests of one kind a scheduled site makes in a run, one after the other.
pub const MAX_SAMPLES: u32 = 5;
/// Most page requests a site makes at once on one route.
pub const MAX_BURST: u32 = 5;

/// A count from 1 to `max` (1 when not given).
/// Most requests at once to one origin address.
const MAX_PER_ORIGIN: u32 = 64;
/// Requests made at once to one origin address when nothing else is set: a small PHP-FPM pool
/// keeps workers for its visitors while probe looks.
pub const DEFAULT_PER_ORIGIN: u32 = 2;

fn at_most(
    written: Option<&Written<u32>>,
    max: u32,
    what: &str,
    problems: &mut Vec<Problem>,
) -> u32 {
    match written {
        Some(n) if !(1..=max).contains(&n.value) => {
            problems.push(Problem::new(
                &n.place,
                format!("{}: {what} is 1 to {max}", n.value),
            ));
            1
        }
        Some(n) => n.value,
        None => 1,
    }
}

/// The time budgets: each a duration like the timeout (at most `MAX_TIMEOUT`); the defaults for
/// the phases not written.
fn budget(written: &[(BudgetPhase, Written<String>)], problems: &mut Vec<Problem>) -> Budget {
    let mut budget = Budget::default();
    for (phase, value) in written {
        match duration(value, Some(MAX_TIMEOUT)) {
            Ok(limit) => budget.set(*phase, limit),
            Err(problem) => problems.push(problem),
        }
    }
    budget
}

/// The certificate thresholds, largest first and each once; the defaults when none are given.
fn cert_thresholds(written: Option<&Written<Vec<u32>>>, problems: &mut Vec<Problem>) -> Vec<i64> {
    let days = written.map_or(&DEFAULT_CERT_WARNING_DAYS[..], |d| d.value.as_slice());
    if let Some(w) = written {
        if w.value.is_empty() {
            problems.push(Problem::new(&w.place, "give at least one number of days"));
        }
        if let Some(bad) = w
            .value
            .iter()
            .find(|d| **d == 0 || **d > MAX_CERT_WARNING_DAYS)
        {
            problems.push(Problem::new(
                &w.place,
                format!("{bad}: a threshold is 1 to {MAX_CERT_WARNING_DAYS} days before expiry"),
            ));
        }
    }
    let mut days: Vec<i64> = days.iter().map(|d| i64::from(*d)).collect();
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    if days.is_empty() {
        days = DEFAULT_CERT_WARNING_DAYS
            .iter()
            .map(|d| i64::from(*d))
            .collect();
    }
    days
}

/// A site's URL (`example.com` means `https://example.com/`).
pub fn target(value: &Written<String>) -> Result<Target, Problem> {
    Target::parse(&value.value)
        .map_err(|e| Problem::new(&value.place, target_message(&value.value, &e)))
}

/// A target problem, naming the value once (as URLs are shown: never a password).
fn target_message(value: &str, e: &TargetError) -> String {
    match e {
        TargetError::NotQualified(_) => e.to_string(),
        _ => format!("{:?}: {e}", url_for_display(value)),
    }
}

use crate::text::url_for_display;

/// An address (`IP[:PORT]`, PORT defaulting to `default_port`).
pub fn address(value: &Written<String>, default_port: u16) -> Result<SocketAddr, Problem> {
    let text = value.value.trim();
    parse_ip_port(text, default_port).ok_or_else(|| {
        let message = if is_port_zero(text) {
            format!("{:?}: port 0 is not a port a server can listen on", value.value)
        } else {
            format!(
                "{:?} is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)",
                value.value
            )
        };
        Problem::new(&value.place, message)
    })
}

/// A duration (`30s`, `5m`, `2500ms`): longer than zero, and at most `max` when given.
pub fn duration(value: &Written<String>, max: Option<Duration>) -> Result<Duration, Problem> {
    let text = value.value.trim();
    let problem = |why: String| Problem::new(&value.place, why);
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(problem(format!(
            "{:?}: must be longer than zero",
            value.value
        ))),
        Ok(d) if max.is_some_and(|max| d > max) => Err(problem(format!(
            "{:?}: must be at most {}",
            value.value,
            crate::words::duration(max.unwrap_or_default())
        ))),
        Ok(d) => Ok(d),
        Err(e) => Err(problem(format!(
            "{:?} is not a duration ({e}); write e.g. 30s, 5m, 1h",
            value.value
        ))),
    }
}

/// The certificates of a CA file, or the problem with it.
pub fn ca_file(
    path: &std::path::Path,
    place: &Place,
) -> Result<Vec<CertificateDer<'static>>, Problem> {
    load_ca_file(path).map_err(|e| Problem::new(place, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(name: &'static str, value: &str) -> Written<String> {
        Written::new(value.to_string(), Place::Flag(name))
    }

    #[test]
    fn addresses_with_and_without_ports() {
        let cases = [
            ("203.0.113.10", "203.0.113.10:443"),
            ("203.0.113.10:8443", "203.0.113.10:8443"),
            ("2001:db8::1", "[2001:db8::1]:443"),
            ("[2001:db8::1]", "[2001:db8::1]:443"),
            ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
        ];
        for (input, expected) in cases {
            let got = address(&flag("--origin", input), 443).unwrap();
            assert_eq!(got.to_string(), expected, "{input}");
        }
        for bad in ["origin.example.com", "1.2.3", "1.2.3.4:99999", ""] {
            let err = address(&flag("--origin", bad), 443).unwrap_err();
            let line = err.for_command_line();
            assert!(line.starts_with("--origin"), "{line}");
        }
    }

    #[test]
    fn every_problem_at_once_each_at_its_place() {
        let mut input = SiteInput::new(flag("target", "not-a-url"));
        input.origins = vec![
            flag("--origin", "db.internal"),
            flag("--origin", "10.0.0.1"),
        ];
        input.timeout = Some(flag("--timeout", "20m"));
        input.expect_status = vec![Written::new(999, Place::Flag("--expect-status"))];
        input.follow_redirects = Some(Written::new(9, Place::Flag("--follow-redirects")));
        let (settings, problems) = check_site(&input, DEFAULT_TIMEOUT);
        assert!(settings.is_none());
        let lines: Vec<String> = problems.iter().map(Problem::for_command_line).collect();
        assert_eq!(
            lines,
            [
                "target \"not-a-url\" is not a fully qualified host name; expected e.g. example.com or https://example.com/",
                "--origin \"db.internal\" is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)",
                "--timeout \"20m\": must be at most 10 minutes",
                "--expect-status 999 is not an HTTP status (100-599)",
                "--follow-redirects 9: at most 5 redirects are followed",
            ]
        );
    }

    #[test]
    fn budgets_are_durations_and_the_last_written_wins() {
        let mut input = SiteInput::new(flag("target", "example.com"));
        input.budget = vec![
            (BudgetPhase::Ttfb, flag("--budget", "1s")),
            (BudgetPhase::Dns, flag("--budget", "300ms")),
            (BudgetPhase::Ttfb, flag("--budget", "3s")),
        ];
        let (settings, problems) = check_site(&input, DEFAULT_TIMEOUT);
        assert!(problems.is_empty(), "{problems:?}");
        let budget = settings.unwrap().shared.diagnose.budget;
        assert_eq!(budget.describe(), "dns 300 milliseconds, ttfb 3 seconds");
        input.budget = vec![(BudgetPhase::Tls, flag("--budget", "soon"))];
        let (_, problems) = check_site(&input, DEFAULT_TIMEOUT);
        assert_eq!(
            problems[0].for_command_line(),
            "--budget \"soon\" is not a duration (expected number at 0); write e.g. 30s, 5m, 1h"
        );
    }

    #[test]
    fn a_resolver_is_asked_on_port_53_unless_another_is_given() {
        let mut input = SiteInput::new(flag("target", "example.com"));
        let (settings, _) = check_site(&input, DEFAULT_TIMEOUT);
        assert_eq!(settings.unwrap().shared.nameserver, Nameserver::System);
        input.resolver = Some(flag("--resolver", "192.0.2.53"));
        let (settings, _) = check_site(&input, DEFAULT_TIMEOUT);
        let at = |s: &str| Nameserver::At(s.parse().unwrap());
        assert_eq!(settings.unwrap().shared.nameserver, at("192.0.2.53:53"));
        input.resolver = Some(flag("--resolver", "[2001:db8::53]:5353"));
        let (settings, _) = check_site(&input, DEFAULT_TIMEOUT);
        assert_eq!(
            settings.unwrap().shared.nameserver,
            at("[2001:db8::53]:5353")
        );
        input.resolver = Some(flag("--resolver", "dns.example"));
        let (settings, problems) = check_site(&input, DEFAULT_TIMEOUT);
        assert!(settings.is_none());
        assert_eq!(
            problems[0].for_command_line(),
            "--resolver \"dns.example\" is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)"
        );
    }

    #[test]
    fn defaults_fill_what_is_not_written() {
        let (settings, problems) = check_site(
            &SiteInput::new(flag("target", "example.com")),
            DEFAULT_TIMEOUT,
        );
        assert!(problems.is_empty());
        let s = settings.unwrap();
        assert_eq!(s.target.url(), "https://example.com/");
        assert_eq!(s.shared.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.shared.diagnose.cert_warning_days, [14, 7, 3, 1]);
        assert_eq!((s.shared.samples, s.shared.follow_redirects), (1, 0));
    }
}
