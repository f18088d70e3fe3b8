//! The rules, in the order a request travels. Each looks at the observations of the routes and
//! either names a cause with its evidence or passes to the next.

use crate::observe::{CertProblem, ErrorKind, Observation, PathRole, Phase, Route, Status};

use super::advice::{self, AdviceContext};
use super::budget::Budget;
use super::certificate;
use super::recognise::{self, CloudflareBox, Generator, Proxy};
use super::slowness;
use super::unexpected;
use super::witness;
use super::{Alternative, Cause, Confidence, Diagnosis};
use crate::observe::witness::WitnessCounters;

/// Thresholds the rules use.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnoseSettings {
    /// Days before a certificate's expiry at which a notice goes out, largest first (never
    /// empty): a certificate within the largest degrades the site.
    pub cert_warning_days: Vec<i64>,
    /// How long each phase of a healthy answer may take before the site is slow.
    pub budget: Budget,
    /// Statuses the page may answer with while healthy (e.g. 401 for a site behind a login);
    /// empty: any status below 400. Static files must always answer below 400.
    pub expect_status: Vec<u16>,
    /// The user declared the edge to be Cloudflare: its headers count as proof even from an
    /// address outside Cloudflare's published ranges (a Tunnel, a private edge, a stand-in).
    pub cloudflare_edge_declared: bool,
}

impl Default for DiagnoseSettings {
    fn default() -> Self {
        Self {
            cert_warning_days: vec![14, 7, 3, 1],
            budget: Budget::default(),
            expect_status: Vec::new(),
            cloudflare_edge_declared: false,
        }
    }
}

impl DiagnoseSettings {
    /// Days before expiry from which a certificate degrades the site: the largest threshold.
    pub fn cert_window(&self) -> i64 {
        self.cert_warning_days.first().copied().unwrap_or(14)
    }
}

/// A 502 faster than this (or than a few round trips) means nginx did not even reach PHP-FPM:
/// measured here, a missing socket answers in under 1 ms.
const FAST_ANSWER_MS: f64 = 50.0;

/// A cause with what proves it, before status, hop and advice are added.
pub(super) struct Verdict {
    pub(super) cause: Cause,
    pub(super) confidence: Confidence,
    pub(super) summary: String,
    pub(super) evidence: Vec<String>,
    /// The proxy whose upstream failed, when it answered itself (its own next steps).
    proxy: Option<Proxy>,
    /// Next steps this evidence calls for, before the cause's own.
    pub(super) steps: Vec<String>,
    /// The server's own status page confirmed the cause: no alternative is left open.
    pub(super) witnessed: bool,
    /// The evidence told apart the forms of the cause that look alike from outside: the
    /// sentence listing them (`advice::variants`) would contradict it.
    pub(super) variants_ruled_out: bool,
    /// The status when the rule knows better than the routes' own measure (a 400 every visitor
    /// gets is down; a probe that asked wrongly judges nothing).
    pub(super) status: Option<Status>,
}

impl Verdict {
    pub(super) fn new(
        cause: Cause,
        confidence: Confidence,
        summary: impl Into<String>,
        evidence: Vec<String>,
    ) -> Self {
        Self {
            cause,
            confidence,
            summary: summary.into(),
            evidence,
            proxy: None,
            steps: Vec::new(),
            witnessed: false,
            variants_ruled_out: false,
            status: None,
        }
    }

    fn answered_by(mut self, proxy: Proxy) -> Self {
        self.proxy = Some(proxy);
        self
    }
}

/// The observations sorted by route and path role.
pub(super) struct View<'a> {
    pub(super) edge_page: Vec<&'a Observation>,
    pub(super) edge_static: Vec<&'a Observation>,
    pub(super) origin_page: Vec<&'a Observation>,
    pub(super) origin_static: Vec<&'a Observation>,
    /// The origin's status pages (the server's own witnesses).
    pub(super) fpm_status: Vec<&'a Observation>,
    pub(super) nginx_status: Vec<&'a Observation>,
}

impl<'a> View<'a> {
    fn new(observations: &'a [Observation]) -> Self {
        let pick = |route: Route, role: PathRole| {
            observations
                .iter()
                .filter(|o| o.route == route && o.path_role == role)
                .collect::<Vec<_>>()
        };
        Self {
            edge_page: pick(Route::Edge, PathRole::Page),
            edge_static: pick(Route::Edge, PathRole::Static),
            origin_page: pick(Route::Origin, PathRole::Page),
            origin_static: pick(Route::Origin, PathRole::Static),
            fpm_status: pick(Route::Origin, PathRole::FpmStatus),
            nginx_status: pick(Route::Origin, PathRole::NginxStatus),
        }
    }

    pub(super) fn groups(&self) -> [&Vec<&'a Observation>; 4] {
        [
            &self.edge_page,
            &self.origin_page,
            &self.origin_static,
            &self.edge_static,
        ]
    }
}

pub(super) fn diagnose(
    host: &str,
    observations: &[Observation],
    settings: &DiagnoseSettings,
    previous: &[WitnessCounters],
) -> Diagnosis {
    let view = View::new(observations);
    let verdict = dns(&view)
        .or_else(|| edge_connection(&view))
        .or_else(|| edge_certificate(&view))
        .or_else(|| cloudflare_error(&view).map(|v| claimed_edge(&view, settings, v)))
        .or_else(|| failing_chain(&view))
        .or_else(|| healthy(&view, settings))
        .or_else(|| unexpected::unexpected_answer(&view, settings))
        .unwrap_or_else(|| unknown(&view));
    let verdict = witness::weigh(&view, settings, previous, verdict);
    finish(host, &view, settings, verdict)
}

// ---- the rules ---------------------------------------------------------------------------

fn dns(view: &View<'_>) -> Option<Verdict> {
    let page = &view.edge_page;
    if page.is_empty() || !page.iter().all(|o| phase_of(o) == Some(Phase::Dns)) {
        return None;
    }
    let error = page[0].error.as_ref()?;
    let what = match error.kind {
        ErrorKind::Nxdomain => "the name does not exist (NXDOMAIN)",
        ErrorKind::Servfail => "the DNS servers fail to answer (SERVFAIL)",
        ErrorKind::NoRecords => "the name has no A or AAAA record",
        ErrorKind::Timeout => "DNS does not answer in time",
        ErrorKind::Refused => "the DNS server refuses to answer",
        _ => "the lookup fails",
    };
    Some(Verdict::new(
        Cause::DnsFailure,
        Confidence::High,
        format!("Visitors cannot find the site: {what}."),
        vec![format!("dns: {}", error.message)],
    ))
}

fn edge_connection(view: &View<'_>) -> Option<Verdict> {
    let failed: Vec<_> = view
        .edge_page
        .iter()
        .filter(|o| matches!(phase_of(o), Some(Phase::Connect | Phase::Tls)))
        .collect();
    let first = failed.first()?;
    let error = first.error.as_ref()?;
    let all = failed.len() == view.edge_page.len();
    let summary = match (error.phase, all) {
        (Phase::Connect, true) => format!(
            "No edge address accepts a connection ({}).",
            error.kind.as_str()
        ),
        (Phase::Tls, true) => format!(
            "The TLS handshake with the edge fails ({}).",
            error.kind.as_str()
        ),
        _ => format!(
            "{} of {} edge requests cannot connect ({} {}); the others are answered.",
            failed.len(),
            view.edge_page.len(),
            error.phase.as_str(),
            error.kind.as_str()
        ),
    };
    Some(Verdict::new(
        Cause::EdgeUnreachable,
        if all {
            Confidence::High
        } else {
            Confidence::Medium
        },
        summary,
        vec![describe(first)],
    ))
}

fn edge_certificate(view: &View<'_>) -> Option<Verdict> {
    let o = view
        .edge_page
        .iter()
        .chain(&view.edge_static)
        .find(|o| o.tls.as_ref().is_some_and(|t| !t.verified))?;
    // In words from the certificate's own dates and names, never the TLS library's message.
    let problem = certificate::problem(o)?;
    let line = certificate::evidence(&who(o), o)
        .unwrap_or_else(|| format!("{}: certificate {problem}", who(o)));
    let subject = o
        .tls
        .as_ref()
        .and_then(|t| t.leaf())
        .map(|leaf| format!(" ({})", leaf.subject))
        .unwrap_or_default();
    Some(Verdict::new(
        Cause::EdgeCertInvalid,
        Confidence::High,
        format!("Browsers refuse the certificate the edge presents{subject}: it {problem}."),
        vec![line],
    ))
}

/// The edge answered with an error page or JSON of its own making.
fn cloudflare_error(view: &View<'_>) -> Option<Verdict> {
    let (edge, generator) = view.edge_page.iter().find_map(|o| {
        let r = o.response.as_ref()?;
        (o.cloudflare_error.is_some() || recognise::made_by_cloudflare(r))
            .then(|| (*o, recognise::generator(r)))
    })?;
    let response = edge.response.as_ref()?;
    let code = cloudflare_code(edge, &generator).unwrap_or(response.status);
    let source = match generator {
        Generator::CloudflareBranded { error_source, .. } => error_source,
        _ => None,
    };
    let origin = worst(&view.origin_page);
    let origin_answers = origin.is_some_and(|o| o.response.is_some());
    let origin_phase = origin.and_then(phase_of);
    let origin_kind = origin.and_then(|o| o.error.as_ref()).map(|e| e.kind);
    let mut evidence = vec![describe(edge)];
    if let Some(o) = origin {
        evidence.push(describe(o));
    }
    let no_origin = || " Probe the origin directly (--origin ADDR) to tell more.".to_string();
    let edge_internal = |code: u16| {
        Some(Verdict::new(
            Cause::EdgeInternal,
            Confidence::High,
            format!("Cloudflare itself fails ({code}): its own error page, not the origin's."),
            vec![describe(edge)],
        ))
    };
    let verdict = |cause, confidence, summary: String| {
        Some(Verdict::new(cause, confidence, summary, evidence.clone()))
    };

    match (code, source) {
        (520, _) => verdict(
            Cause::OriginBadResponse,
            if origin_phase.is_some_and(|p| matches!(p, Phase::Headers | Phase::Request)) {
                Confidence::High
            } else {
                Confidence::Medium
            },
            "Cloudflare got an empty or malformed reply from the origin (520).".into(),
        ),
        (521, _) if origin_answers => verdict(
            Cause::OriginBlocksEdge,
            Confidence::High,
            "Cloudflare's connections to the origin are refused (521) while the origin answers us directly: a firewall or allow-list rejects Cloudflare's addresses.".into(),
        ),
        (521, _) => verdict(
            Cause::OriginRefused,
            if origin_kind == Some(ErrorKind::Refused) { Confidence::High } else { Confidence::Medium },
            format!(
                "The origin refuses connections (Cloudflare 521){}",
                if origin.is_some() { ", to us as well: the web server is down.".to_string() } else { format!(".{}", no_origin()) }
            ),
        ),
        (522 | 523, _) if origin_answers => verdict(
            Cause::OriginBlocksEdge,
            Confidence::High,
            format!("Cloudflare cannot reach the origin ({code}) while the origin answers us directly: packets from Cloudflare are dropped."),
        ),
        (522 | 523, _) => verdict(
            Cause::OriginTimeout,
            if origin_kind.is_some() && origin_phase == Some(Phase::Connect) { Confidence::High } else { Confidence::Medium },
            format!(
                "Connections to the origin time out (Cloudflare {code}){}",
                if origin.is_some() { ", for us as well: host down or a firewall dropping everything.".to_string() } else { format!(".{}", no_origin()) }
            ),
        ),
        (524, _) => {
            let origin_504 = origin.and_then(|o| o.response.as_ref()).is_some_and(|r| r.status == 504);
            if origin_504 {
                verdict(
                    Cause::FpmSaturated,
                    Confidence::Medium,
                    "Cloudflare gave up waiting (524) and the origin's nginx times out on PHP-FPM (504): no worker answers in time.".into(),
                )
            } else {
                verdict(
                    Cause::OriginSlow,
                    if origin.is_some() { Confidence::High } else { Confidence::Medium },
                    "The origin accepted the connection but sent no answer within Cloudflare's 100 s (524).".into(),
                )
            }
        }
        (525, _) => verdict(
            Cause::OriginTlsHandshake,
            if origin_phase == Some(Phase::Tls) { Confidence::High } else { Confidence::Medium },
            "The TLS handshake between Cloudflare and the origin fails (525).".into(),
        ),
        (526, _) => {
            let tls = origin.and_then(|o| o.tls.as_ref());
            let what = origin.and_then(certificate::problem);
            let (cause, confidence, what) = match (tls, what) {
                (Some(t), Some(what)) if t.verify_error == Some(CertProblem::Expired) => {
                    (Cause::OriginCertExpired, Confidence::High, what)
                }
                (Some(t), Some(what)) if t.name_matches == Some(false) || t.verify_error == Some(CertProblem::NameMismatch) => {
                    (Cause::OriginCertNameMismatch, Confidence::High, what)
                }
                (Some(_), Some(what)) => (Cause::OriginCertUntrusted, Confidence::High, what),
                _ => (Cause::OriginCertUntrusted, Confidence::Low, "is refused by Full (strict) mode".to_string()),
            };
            let certificate_line = tls.and_then(|t| {
                t.leaf().map(|leaf| {
                    format!(
                        "origin certificate: {} · issuer {} · {} · {}",
                        leaf.subject,
                        leaf.issuer,
                        certificate::days_left(leaf.days_left),
                        if t.verified { "verified" } else { "not valid" }
                    )
                })
            });
            let mut evidence = evidence.clone();
            evidence.extend(certificate_line);
            Some(Verdict::new(cause, confidence, format!("Cloudflare (Full strict) refuses the origin certificate (526): it {what}."), evidence))
        }
        // 1016: origin DNS error; 1000-1002: the record points nowhere usable; a bare 530 is
        // how Cloudflare serves them. Other 1xxx codes (access denied, rate limits) are not DNS.
        (530 | 1000..=1002 | 1016, _) => verdict(
            Cause::OriginDnsFailure,
            if code == 1016 { Confidence::High } else { Confidence::Medium },
            format!("Cloudflare cannot resolve the origin's hostname (error {code}): the DNS record points to a name that does not resolve."),
        ),
        // Cloudflare's own failure: its plain page, or its branded page blaming itself.
        (_, Some(CloudflareBox::Cloudflare)) => edge_internal(code),
        _ if generator == Generator::CloudflarePlain => edge_internal(code),
        // The origin's nginx answered 502/504: Cloudflare wraps it in its branded page with the
        // host marked (or says "origin" in its JSON).
        (502 | 504, _) => origin_behind_edge(view, edge, code, evidence),
        _ => verdict(
            Cause::Unknown,
            Confidence::Low,
            format!("Cloudflare answered {code} with its own page; no rule matches it."),
        ),
    }
}

/// Cloudflare's headers are a claim anyone can make: from an address outside Cloudflare's
/// published ranges (and an edge the user did not declare), what they say is at most `medium`,
/// and the evidence says why.
fn claimed_edge(view: &View<'_>, settings: &DiagnoseSettings, mut verdict: Verdict) -> Verdict {
    if settings.cloudflare_edge_declared {
        return verdict;
    }
    let claimed = view
        .edge_page
        .iter()
        .find(|o| o.response.as_ref().is_some_and(recognise::via_cloudflare));
    let Some(o) = claimed.filter(|o| !o.cloudflare_address) else {
        return verdict;
    };
    verdict.confidence = verdict.confidence.min(Confidence::Medium);
    let address = o
        .address
        .map_or_else(|| "the edge".to_string(), |a| format!("edge {}", a.ip()));
    let line = format!("{address} is not in Cloudflare's published ranges: its Cloudflare headers are a claim, not proof (if it is Cloudflare, e.g. a Tunnel, declare it: --cloudflare-edge / cloudflare_edge: true)");
    verdict.evidence.insert(verdict.evidence.len().min(1), line);
    verdict
}

/// Cloudflare's branded 502/504 with the host marked: the origin's nginx answered it.
fn origin_behind_edge(
    view: &View<'_>,
    edge: &Observation,
    code: u16,
    evidence: Vec<String>,
) -> Option<Verdict> {
    if let Some(mut verdict) = origin_cause(&view.origin_page, &view.origin_static, false) {
        verdict.evidence.insert(0, describe(edge));
        return Some(verdict);
    }
    let (cause, what) = if code == 504 {
        (Cause::FpmSaturated, "timed out waiting for PHP")
    } else {
        (Cause::FpmUnreachable, "could not get an answer from PHP")
    };
    let summary = if view.origin_page.is_empty() {
        format!("The origin's web server answered {code} to Cloudflare (host marked as the error): it {what}. Probe the origin directly (--origin ADDR) to see which hop behind it broke.")
    } else {
        format!("The origin answered {code} to Cloudflare (host marked as the error) but answers us directly: an intermittent failure behind nginx.")
    };
    Some(Verdict::new(cause, Confidence::Low, summary, evidence))
}

/// The edge page fails with a response the edge did not make (or there is no CDN), or the origin
/// fails while the edge still answers.
fn failing_chain(view: &View<'_>) -> Option<Verdict> {
    let edge_fails = view.edge_page.iter().any(|o| is_failing(o));
    let origin_fails = view.origin_page.iter().any(|o| is_failing(o));
    if !edge_fails && !origin_fails {
        return None;
    }
    // The origin route, when it fails, shows the origin's own timing; otherwise what came
    // through the edge is the origin's page.
    let mut verdict = if origin_fails {
        origin_cause(&view.origin_page, &view.origin_static, false)
    } else {
        origin_cause(&view.edge_page, &view.edge_static, true)
    }?;
    if !edge_fails {
        // The hop that broke is behind an edge that still serves: say what visitors get first.
        verdict.confidence = verdict.confidence.min(Confidence::Medium);
        let cached = view.edge_page.iter().any(|o| {
            o.response
                .as_ref()
                .and_then(|r| r.headers.cf_cache_status.as_deref())
                .is_some_and(|s| matches!(s, "HIT" | "STALE" | "UPDATING" | "REVALIDATED"))
        });
        let served = if cached {
            "Visitors get cached pages from the edge"
        } else {
            "Visitors are still served through the edge (cached pages, or another origin)"
        };
        verdict.summary = format!("{served}; behind it: {}", lowercase_first(&verdict.summary));
    } else if !origin_fails && !view.origin_page.is_empty() {
        verdict.confidence = verdict.confidence.min(Confidence::Medium);
        verdict.summary.push_str(" The origin answers us directly: the failure is intermittent or limited to the edge's path.");
    }
    Some(verdict)
}

/// What the origin's failure on `page` (with `statics` beside it) says about the hops behind it.
/// `through_edge`: the observations went through a proxy, so timings include its round trips.
fn origin_cause(
    page: &[&Observation],
    statics: &[&Observation],
    through_edge: bool,
) -> Option<Verdict> {
    let o = worst(page).filter(|o| is_failing(o))?;
    let mut evidence = vec![describe(o)];
    let static_obs = worst(statics);
    if let Some(s) = static_obs {
        evidence.push(describe(s));
    }
    let static_ok = !statics.is_empty() && statics.iter().all(|s| is_healthy(s));
    let some_ok = page.iter().any(|p| is_healthy(p));
    let failed = page.iter().filter(|p| is_failing(p)).count();
    if some_ok {
        evidence.push(format!(
            "{failed} of {} page requests failed, the others succeeded",
            page.len()
        ));
    }

    if let Some(error) = &o.error {
        let kind = error.kind;
        let v = match (error.phase, kind) {
            (Phase::Dns, _) => return None,
            (Phase::Connect, ErrorKind::Refused) => Verdict::new(
                Cause::OriginRefused,
                Confidence::High,
                "The origin refuses connections: nothing listens on the web port (web server down?).",
                evidence,
            ),
            (Phase::Connect, ErrorKind::Timeout) => Verdict::new(
                Cause::OriginTimeout,
                Confidence::High,
                "Connections to the origin time out: the host is down or a firewall drops the packets.",
                evidence,
            ),
            (Phase::Connect, _) => Verdict::new(
                Cause::OriginTimeout,
                Confidence::Medium,
                format!("The origin cannot be reached ({}).", kind.as_str()),
                evidence,
            ),
            (Phase::Tls, _) => Verdict::new(
                Cause::OriginTlsHandshake,
                Confidence::High,
                format!("The TLS handshake with the origin fails ({}).", kind.as_str()),
                evidence,
            ),
            (Phase::Request | Phase::Headers, ErrorKind::Timeout) => Verdict::new(
                Cause::OriginSlow,
                Confidence::Medium,
                format!(
                    "The origin accepts the request but sends no answer within {}.",
                    format_ms(o.timings_ms.total)
                ),
                evidence,
            ),
            (Phase::Request | Phase::Headers, _) => Verdict::new(
                Cause::OriginBadResponse,
                Confidence::High,
                format!("The origin closes the connection without a valid answer ({}).", kind.as_str()),
                evidence,
            ),
            (Phase::Body, _) => Verdict::new(
                Cause::FpmWorkerDied,
                Confidence::Medium,
                format!(
                    "The answer is cut off after {} bytes ({}): the PHP worker died after sending its headers.",
                    o.response.as_ref().map_or(0, |r| r.body_bytes),
                    kind.as_str()
                ),
                evidence,
            ),
        };
        return Some(v);
    }

    let response = o.response.as_ref()?;
    let generator = recognise::generator(response);
    let proxy = recognise::proxy(response);
    let ttfb = o.timings_ms.ttfb.unwrap_or(o.timings_ms.total);
    // As fast as the web server serves a file alone (with room) is not PHP at work: on a
    // loaded host, both are slower together.
    let static_ttfb = static_obs
        .filter(|_| static_ok)
        .and_then(|s| s.timings_ms.ttfb)
        .unwrap_or(0.0);
    let fast_limit = if through_edge {
        (3.0 * FAST_ANSWER_MS).max(3.0 * static_ttfb)
    } else {
        FAST_ANSWER_MS
            .max(4.0 * o.timings_ms.connect.unwrap_or(0.0))
            .max(3.0 * static_ttfb)
    };
    let static_note = if static_ok {
        " while the static file is served"
    } else if statics.is_empty() {
        " (no --static-path to compare with)"
    } else {
        " and the static file fails too"
    };
    let v = match (response.status, &generator) {
        (_, Generator::WordPressDatabaseError) => Verdict::new(
            Cause::DatabaseUnreachable,
            Confidence::High,
            format!("WordPress answers {} \"Error establishing a database connection\": PHP runs but cannot reach MySQL/MariaDB.", response.status),
            evidence,
        ),
        (_, Generator::WordPressMaintenance) => Verdict::new(
            Cause::Maintenance,
            Confidence::High,
            "WordPress is in maintenance mode (503). If it lasts more than a few minutes, an update failed and left its .maintenance file.",
            evidence,
        ),
        (_, Generator::WordPressCriticalError) => Verdict::new(
            Cause::AppError,
            Confidence::High,
            "WordPress hits a fatal PHP error (\"There has been a critical error\").",
            evidence,
        ),
        (502, _) if ttfb <= fast_limit && some_ok => Verdict::new(
            Cause::FpmSaturated,
            Confidence::Medium,
            format!(
                "Some PHP requests get a 502 within {} while others succeed: PHP-FPM's listen backlog overflows under load.",
                format_ms(ttfb)
            ),
            evidence,
        ),
        // Only nginx's own page with the static file served proves nginx is up and PHP-FPM is
        // what it cannot reach; another proxy's 502 says its upstream fails, not which one.
        (502, _) if ttfb <= fast_limit && proxy == Proxy::Nginx => Verdict::new(
            Cause::FpmUnreachable,
            if static_ok { Confidence::High } else { Confidence::Medium },
            format!(
                "{} answers 502 in {} for PHP pages{static_note}: nginx cannot reach PHP-FPM at all.",
                server_name(response),
                format_ms(ttfb)
            ),
            evidence,
        )
        .answered_by(proxy),
        (502 | 503, Generator::EnvoyStock) | (502, _) if ttfb <= fast_limit => Verdict::new(
            Cause::FpmUnreachable,
            Confidence::Medium,
            format!(
                "{} answers {} in {}{static_note}: it cannot reach its upstream, the application server behind it{}.",
                capitalised(&proxy.name()),
                response.status,
                format_ms(ttfb),
                if matches!(proxy, Proxy::Other(_)) { " (the page is not one we recognise: which proxy and which upstream is a guess)" } else { "" }
            ),
            evidence,
        )
        .answered_by(proxy),
        (502, _) => {
            let boundary = at_round_timeout(ttfb);
            let who = capitalised(&proxy.name());
            Verdict::new(
                Cause::FpmWorkerDied,
                Confidence::Medium,
                if boundary {
                    format!("{who} answers 502 after {}, a round number: a timeout behind it (PHP-FPM's request_terminate_timeout?) ended the request.", format_ms(ttfb))
                } else {
                    format!("{who} answers 502 after {} of work, not at a timeout: the worker behind it died mid-request (crash or OOM kill).", format_ms(ttfb))
                },
                evidence,
            )
            .answered_by(proxy)
        }
        (504, _) => Verdict::new(
            Cause::FpmSaturated,
            Confidence::Medium,
            match proxy {
                Proxy::Nginx => format!(
                    "nginx gives up waiting for PHP-FPM after {} (504){static_note}: no worker answered within fastcgi_read_timeout.",
                    format_ms(ttfb)
                ),
                _ => format!(
                    "{} gives up waiting for its upstream after {} (504){static_note}: no worker answered in time.",
                    capitalised(&proxy.name()),
                    format_ms(ttfb)
                ),
            },
            evidence,
        )
        .answered_by(proxy),
        (503, Generator::ApacheStock) => Verdict::new(
            Cause::FpmUnreachable,
            Confidence::Medium,
            "Apache answers 503: mod_proxy_fcgi cannot reach PHP-FPM.",
            evidence,
        )
        .answered_by(Proxy::Apache),
        (500, _) => Verdict::new(
            Cause::AppError,
            Confidence::Medium,
            "The application answers 500 with a page we do not recognise.",
            evidence,
        ),
        (status, _) => Verdict::new(
            Cause::Unknown,
            Confidence::Low,
            format!("The page answers {status} ({}); no rule matches it.", generator.describe()),
            evidence,
        ),
    };
    Some(v)
}

fn healthy(view: &View<'_>, settings: &DiagnoseSettings) -> Option<Verdict> {
    let all: Vec<&Observation> = view.groups().into_iter().flatten().copied().collect();
    if all.is_empty() || !all.iter().all(|o| as_expected(o, settings)) {
        return None;
    }
    let mut evidence: Vec<String> = view
        .groups()
        .into_iter()
        .filter_map(|g| g.first().map(|o| describe(o)))
        .collect();
    // The edge still connects, so it does not verify the origin (Cloudflare "Full", not
    // "Full (strict)"): working, but one setting away from a 526.
    let bad_origin_cert = view
        .origin_page
        .iter()
        .chain(&view.origin_static)
        .find_map(|o| {
            let tls = o.tls.as_ref().filter(|t| !t.verified)?;
            Some((*o, tls))
        });
    if let Some((o, tls)) = bad_origin_cert {
        let cause = match tls.verify_error {
            Some(CertProblem::Expired) => Cause::OriginCertExpired,
            Some(CertProblem::NameMismatch) => Cause::OriginCertNameMismatch,
            _ if tls.name_matches == Some(false) => Cause::OriginCertNameMismatch,
            _ => Cause::OriginCertUntrusted,
        };
        let what = certificate::problem(o).unwrap_or_else(|| "is not valid".to_string());
        if let Some(line) = certificate::evidence(&who(o), o) {
            lead_with(&mut evidence, line);
        }
        return Some(Verdict::new(
            cause,
            Confidence::Medium,
            format!("Every route answers, but the origin certificate {what}. The edge must be skipping verification (Cloudflare Full, not Full strict); strict mode would fail with 526."),
            evidence,
        ));
    }
    let expiring = all.iter().find_map(|o| {
        let tls = o.tls.as_ref()?;
        let cert = tls
            .chain
            .iter()
            .find(|c| (0..settings.cert_window()).contains(&c.days_left))?;
        Some((*o, cert))
    });
    let expiring_line = |o: &Observation, cert: &crate::observe::CertFacts| {
        format!(
            "{}: certificate {} (issuer {}) {}",
            who(o),
            cert.subject,
            cert.issuer,
            certificate::expires(cert)
        )
    };
    // Slowness needs action now, a certificate within its warning window in days: the slowness
    // leads, the certificate stays in the summary and the evidence.
    if let Some(mut verdict) = slowness::judge(view, &settings.budget, evidence.clone()) {
        if let Some((o, cert)) = expiring {
            verdict.summary.push_str(&format!(
                " Also, a certificate on the {} route {}.",
                o.route.as_str(),
                certificate::expires(cert)
            ));
            verdict
                .evidence
                .insert(2.min(verdict.evidence.len()), expiring_line(o, cert));
        }
        return Some(verdict);
    }
    if let Some((o, cert)) = expiring {
        lead_with(&mut evidence, expiring_line(o, cert));
        let mut verdict = Verdict::new(
            Cause::CertExpiring,
            Confidence::High,
            format!(
                "Everything answers, but a certificate on the {} route {}.",
                o.route.as_str(),
                certificate::expires(cert)
            ),
            evidence,
        );
        verdict.steps = certificate::expiring_steps(o, cert);
        return Some(verdict);
    }
    Some(Verdict::new(
        Cause::Ok,
        Confidence::High,
        "Every route answers as expected.",
        evidence,
    ))
}

fn unknown(view: &View<'_>) -> Verdict {
    let evidence = view
        .groups()
        .into_iter()
        .filter_map(|g| worst(g).map(describe))
        .collect();
    Verdict::new(
        Cause::Unknown,
        Confidence::Low,
        "The evidence fits no known cause; see what each route saw.",
        evidence,
    )
}

// ---- assembling the diagnosis ---------------------------------------------------------------

/// Puts `line` first among the evidence, and nowhere else.
pub(super) fn lead_with(evidence: &mut Vec<String>, line: String) {
    evidence.retain(|l| *l != line);
    evidence.insert(0, line);
}

fn finish(
    host: &str,
    view: &View<'_>,
    settings: &DiagnoseSettings,
    mut verdict: Verdict,
) -> Diagnosis {
    // Every route's view follows the decisive lines; each line is said once, where it first
    // appears (a rule may have led with a line that is also its route's own).
    for group in view.groups() {
        if let Some(o) = worst(group) {
            verdict.evidence.push(describe(o));
        }
    }
    let mut seen = std::collections::HashSet::new();
    verdict.evidence.retain(|line| seen.insert(line.clone()));
    let status = verdict
        .status
        .unwrap_or_else(|| status(view, settings, verdict.cause));
    let origin = view
        .origin_page
        .first()
        .and_then(|o| o.address)
        .map(|a| a.to_string());
    let url = view.edge_page.first().map_or("", |o| o.url.as_str());
    // The edge address probe dialled (`--edge`, `edge:`, or what DNS gave), so a command
    // reaches the same edge.
    let edge = view
        .edge_page
        .first()
        .and_then(|o| o.address)
        .map(|a| a.to_string());
    let ctx = AdviceContext {
        host,
        url,
        origin,
        edge,
        proxy: verdict.proxy.clone(),
    };
    let origin_probed = !view.origin_page.is_empty();
    if let Some(variants) = advice::variants(verdict.cause)
        .filter(|_| !verdict.witnessed && !verdict.variants_ruled_out)
    {
        verdict.summary.push(' ');
        verdict.summary.push_str(variants);
    }
    let alternatives = advice::alternatives(verdict.cause)
        .into_iter()
        .filter(|_| !verdict.witnessed)
        // Another cause, never the one just named.
        .filter(|(cause, _)| *cause != verdict.cause)
        // Having been refused or timed out ourselves, the edge is not singled out.
        .filter(|(cause, _)| !(origin_probed && *cause == Cause::OriginBlocksEdge))
        .map(|(cause, why)| Alternative {
            cause,
            why: why.to_string(),
        })
        .collect();
    Diagnosis {
        status,
        hop: verdict.cause.hop(),
        cause: verdict.cause,
        confidence: verdict.confidence,
        summary: verdict.summary,
        evidence: verdict.evidence,
        next_steps: {
            let mut steps = std::mem::take(&mut verdict.steps);
            steps.extend(advice::next_steps(verdict.cause, &ctx));
            steps
        },
        alternatives,
    }
}

/// Visitors' view decides: every edge page request failing is down, some failing (or only the
/// origin failing) is degraded.
fn status(view: &View<'_>, settings: &DiagnoseSettings, cause: Cause) -> Status {
    match cause {
        Cause::Ok => return Status::Ok,
        Cause::CertExpiring | Cause::Slow => return Status::Degraded,
        _ => {}
    }
    let edge = &view.edge_page;
    let edge_bad = |o: &&Observation| is_failing(o) || o.tls.as_ref().is_some_and(|t| !t.verified);
    let anything_wrong = view
        .groups()
        .into_iter()
        .flatten()
        .any(|o| !as_expected(o, settings));
    if !edge.is_empty() && edge.iter().all(edge_bad) {
        Status::Down
    } else if cause != Cause::Unknown || anything_wrong {
        Status::Degraded
    } else {
        Status::Unknown
    }
}

// ---- small facts about observations -----------------------------------------------------------

fn phase_of(o: &Observation) -> Option<Phase> {
    o.error.as_ref().map(|e| e.phase)
}

pub(super) fn is_failing(o: &Observation) -> bool {
    o.error.is_some() || o.response.as_ref().is_none_or(|r| r.status >= 500)
}

/// Redirects were followed, and the last answer is a redirect again: a loop, or a chain longer
/// than the limit.
pub(super) fn still_redirecting(o: &Observation) -> bool {
    !o.redirects.is_empty()
        && o.response
            .as_ref()
            .is_some_and(|r| (300..400).contains(&r.status))
}

pub(super) fn is_healthy(o: &Observation) -> bool {
    o.error.is_none() && o.response.as_ref().is_some_and(|r| r.status < 400)
}

/// Healthy by the site's own measure: the page's status in `expect_status` when one is set, and
/// not still redirecting after the redirects we were allowed to follow.
pub(super) fn as_expected(o: &Observation, settings: &DiagnoseSettings) -> bool {
    if still_redirecting(o) {
        return false;
    }
    match &o.response {
        Some(r) if o.path_role == PathRole::Page && !settings.expect_status.is_empty() => {
            o.error.is_none() && settings.expect_status.contains(&r.status)
        }
        _ => is_healthy(o),
    }
}

/// The most telling observation of a group: an error first, then the highest status.
fn worst<'a>(group: &[&'a Observation]) -> Option<&'a Observation> {
    group
        .iter()
        .copied()
        .max_by_key(|o| match (&o.error, &o.response) {
            (Some(_), None) => 2000,
            (Some(_), Some(r)) => 1000 + u32::from(r.status),
            (None, Some(r)) => u32::from(r.status),
            (None, None) => 0,
        })
}

/// The error code Cloudflare gave: from its JSON answer, else from its page, else the status.
fn cloudflare_code(o: &Observation, generator: &Generator) -> Option<u16> {
    if let Some(code) = o.cloudflare_error.as_ref().and_then(|e| e.error_code) {
        return Some(code);
    }
    match generator {
        Generator::CloudflareBranded { code, .. } | Generator::CloudflareJson { code } => *code,
        _ => None,
    }
}

/// A wait that ends within 2 % (or 300 ms) of a whole number of seconds looks like a configured
/// timeout rather than work.
fn at_round_timeout(ms: f64) -> bool {
    if ms < 1000.0 {
        return false;
    }
    let nearest = (ms / 1000.0).round() * 1000.0;
    (ms - nearest).abs() <= (0.02 * nearest).min(300.0)
}

pub(super) fn who(o: &Observation) -> String {
    match (o.route, o.address) {
        (Route::Origin, Some(a)) => format!("origin {a} {}", o.path_role.as_str()),
        _ => format!("{} {}", o.route.as_str(), o.path_role.as_str()),
    }
}

/// `text` as a sentence: a full stop added unless it already ends one ("is the path right?"
/// takes none).
pub(super) fn sentence(text: &str) -> String {
    let text = text.trim_end();
    if text.ends_with(['.', '?', '!']) {
        text.to_string()
    } else {
        format!("{text}.")
    }
}

pub(super) fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn server_name(response: &crate::observe::ResponseFacts) -> String {
    match response.headers.server.as_deref() {
        Some(s) => format!("The origin's web server ({s})"),
        None => "The origin's web server".to_string(),
    }
}

pub(super) fn format_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// A wait as a sentence says it: seconds from one second on ("3.7 s"), else as `format_ms`.
pub(super) fn format_seconds(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format_ms(ms)
    }
}

/// One line of evidence for an observation.
pub(super) fn describe(o: &Observation) -> String {
    let mut line = who(o);
    match (&o.response, &o.error) {
        (Some(r), error) => {
            line.push_str(&format!(" {}", r.status));
            if let Some(t) = o.timings_ms.ttfb {
                line.push_str(&format!(" in {}", format_ms(t)));
            }
            if let Some(server) = &r.headers.server {
                line.push_str(&format!(", server {server}"));
            }
            // Where a redirect points (as recorded: secrets already masked).
            if let Some(location) = r
                .headers
                .location
                .as_deref()
                .filter(|_| (300..400).contains(&r.status))
            {
                line.push_str(&format!(", location {location}"));
            }
            let generator = recognise::generator(r);
            if generator != Generator::Unrecognised {
                line.push_str(&format!(", {}", generator.describe()));
            }
            if let Some(ray) = &r.headers.cf_ray {
                line.push_str(&format!(", cf-ray {ray}"));
            }
            if let Some(e) = &o.cloudflare_error {
                if let (Some(code), Some(category)) = (e.error_code, &e.error_category) {
                    line.push_str(&format!(", Cloudflare JSON error {code} ({category})"));
                }
            }
            if let Some(e) = error {
                line.push_str(&format!(
                    "; then {} {} after {} bytes",
                    e.phase.as_str(),
                    e.kind.as_str(),
                    r.body_bytes
                ));
            }
        }
        (None, Some(e)) => {
            line.push_str(&format!(
                ": {} {} after {}",
                e.phase.as_str(),
                e.kind.as_str(),
                format_ms(o.timings_ms.total)
            ));
        }
        (None, None) => line.push_str(": nothing recorded"),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_timeouts() {
        assert!(at_round_timeout(60_012.0));
        assert!(at_round_timeout(29_950.0));
        assert!(!at_round_timeout(490.0));
        assert!(!at_round_timeout(2_480.0));
    }
}
