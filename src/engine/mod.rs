//! Looking at a site: `plan` (which requests) → `resolve` (DNS) → `connect` (TCP) → `tls` (the
//! handshake, certificate facts) → `http` (one exchange). `probe_site` runs a plan: resolves the
//! edge route, then makes every planned request concurrently (samples of one request one after
//! the other), each under its own deadline, and collects the observations in plan order.

pub mod cloudflare;
pub mod connect;
pub mod gate;
pub mod http;
pub mod plan;
pub mod resolve;
pub mod tls;

use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::settings::ProbeSettings;
use serde::{Deserialize, Serialize};

use crate::diagnose::recognise::made_by_cloudflare;
use crate::diagnose::{diagnose, Diagnosis};
use crate::engine::cloudflare::is_cloudflare_address;
use crate::engine::connect::connect;
use crate::engine::http::{
    exchange_with, HttpExchange, HttpRequestSpec, Payload, BODY_EXCERPT_BYTES, BODY_READ_LIMIT,
};
use crate::engine::plan::{plan, EdgeAddresses, PlannedRequest};
use crate::engine::resolve::{DnsClient, Nameserver, ResolveSetupError};
use crate::engine::tls::{handshake, TlsSetupError, TrustRoots};
use crate::observe::witness::{FpmStatus, NginxStatus, Witness, WITNESS_READ_LIMIT};
use crate::observe::{
    millis, CloudflareErrorDetails, Observation, PathRole, PhaseTimings, Resolution, Route, Status,
};
use crate::settings::{Scheme, Target};
use crate::text::url_for_display;

/// Version of the `--json` document. Bump it on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A whole probe of one site: the `--json` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub schema: u32,
    /// The URL probed.
    pub target: String,
    /// The site's name, sent as Host and SNI on every route.
    pub host: String,
    pub status: Status,
    /// Which hop broke, why, and what to run next.
    pub diagnosis: Diagnosis,
    /// `false` when no `--origin` was given: only the edge route was probed.
    pub origin_given: bool,
    /// DNS lookups behind the edge route; absent when `--edge` or an IP literal was given.
    pub resolution: Option<Resolution>,
    pub observations: Vec<Observation>,
    /// The user declared the edge to be Cloudflare (`--cloudflare-edge`, `cloudflare_edge:`)
    /// although its address may be outside Cloudflare's ranges; absent when not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cloudflare_edge_declared: bool,
    /// A scheduled run only: an earlier attempt of this run failed and a retry replaced it.
    /// The run is judged on the last attempt; the failure still counts in the site's history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_failure: Option<crate::diagnose::pattern::Failure>,
}

/// How long the page requests wait for the status pages to answer before starting anyway.
const WITNESS_GRACE: Duration = Duration::from_secs(1);

/// ALPN we offer: HTTP/2 first, as browsers do.
const ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Why a probe could not run at all (distinct from a site failing, which is an Observation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// DNS could not be set up on this machine.
    #[error(transparent)]
    Resolve(#[from] ResolveSetupError),
    /// The trust roots could not be built.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// The trust stores for a list of extra roots. Built once and reused while the sites share one
/// list (every site of a config does): parsing the roots for each probe would cost more than
/// some of its phases. Verification itself still runs in every handshake.
pub fn trust_roots(extra: &Arc<[CertificateDer<'static>]>) -> Result<TrustRoots, TlsSetupError> {
    static LAST: Mutex<Option<(Arc<[CertificateDer<'static>]>, TrustRoots)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((list, roots)) = last.as_ref() {
        if Arc::ptr_eq(list, extra) {
            return Ok(roots.clone());
        }
    }
    let roots = TrustRoots::new(extra)?;
    *last = Some((extra.clone(), roots.clone()));
    Ok(roots)
}

/// Probes one site along every route and returns the whole report.
pub async fn probe_site(settings: &ProbeSettings) -> Result<ProbeReport, ProbeError> {
    use tracing::Instrument as _;
    // Every line logged while probing names the site probed.
    let span = tracing::debug_span!("probe", host = %settings.target.host());
    probe_in_span(settings).instrument(span).await
}

async fn probe_in_span(settings: &ProbeSettings) -> Result<ProbeReport, ProbeError> {
    let target = &settings.target;
    let roots = trust_roots(&settings.shared.extra_roots)?;
    // An address on the command line or in the URL means no DNS: like curl --connect-to.
    let given_edge = settings
        .edge
        .or_else(|| target.host_ip.map(|ip| SocketAddr::new(ip, target.port)));
    let resolution = match given_edge {
        Some(_) => None,
        None => {
            let dns = DnsClient::new(settings.shared.nameserver, settings.shared.timeout)?;
            let resolution = dns.resolve(target.host()).await;
            // Plain values; a field with nothing to say (no address, no error) is left out.
            let addresses = |answer: &crate::observe::DnsAnswer| {
                (!answer.addresses.is_empty()).then(|| {
                    let each: Vec<String> =
                        answer.addresses.iter().map(|a| a.to_string()).collect();
                    each.join(", ")
                })
            };
            tracing::debug!(
                name = %resolution.name,
                resolver = %resolution.resolver,
                a = addresses(&resolution.a),
                aaaa = addresses(&resolution.aaaa),
                a_error = resolution.a.error.as_ref().map(|e| e.kind.as_str()),
                aaaa_error = resolution.aaaa.error.as_ref().map(|e| e.kind.as_str()),
                "resolved"
            );
            Some(resolution)
        }
    };
    let edge = match (given_edge, &resolution) {
        (Some(address), _) => EdgeAddresses::Given(address),
        (None, Some(resolution)) => EdgeAddresses::Resolved(resolution),
        (None, None) => unreachable!("DNS is asked whenever no edge address is given"),
    };
    let requests = plan(
        target,
        &edge,
        &settings.origins,
        settings.static_path.as_deref(),
        settings.witnesses.as_deref(),
    );

    let shared = Shared {
        target: target.clone(),
        roots,
        timeout: settings.shared.timeout,
        user_agent: format!("probe/{}", env!("CARGO_PKG_VERSION")),
        redirect_hosts: settings.shared.redirect_hosts.clone(),
        nameserver: settings.shared.nameserver,
        status_header: settings
            .witnesses
            .as_ref()
            .and_then(|w| w.header.as_ref())
            .and_then(|h| Some((h.name.clone(), h.value.clone()?))),
        origins: settings.origins.iter().map(|o| o.ip()).collect(),
        per_origin: settings.shared.per_origin,
    };
    // The requests run side by side in this task (a probe mostly waits): a task per request
    // would cost more hand-offs between threads than it saves.
    let (samples, follow) = (settings.shared.samples, settings.shared.follow_redirects);
    let burst = settings.shared.burst.max(1);
    let (requests_ref, shared_ref) = (&requests, &shared);
    let run = move |index: usize| {
        let (request, shared) = (&requests_ref[index], shared_ref);
        async move {
            // A burst asks for the page several times at once: a listen backlog that
            // overflows under load shows as fast 502s beside answered requests.
            let at_once = if request.path_role == crate::observe::PathRole::Page {
                burst
            } else {
                1
            };
            // A status page is read once, where it is: its counters are the server's, not
            // a sample of ours, and it never redirects anywhere we should go.
            let (rounds, follow) = if request.path_role.is_witness() {
                (1, 0)
            } else {
                (samples, follow)
            };
            let mut observations = Vec::with_capacity((rounds * at_once) as usize);
            for round in 0..rounds {
                let first = round * at_once + 1;
                // A burst asks at once on purpose: it takes every turn at the origin for the
                // wave, and its requests take none of their own.
                let wave_turn = match request.address {
                    Some(a) if at_once > 1 && shared.gated(a.ip(), request.route) => {
                        Some(gate::turn(a.ip(), shared.per_origin, true, shared.timeout * 2).await)
                    }
                    _ => None,
                };
                let has_turn = wave_turn.is_some();
                let wave = (first..first + at_once)
                    .map(|sample| observe_following(shared, request, sample, follow, has_turn));
                observations.extend(futures_util::future::join_all(wave).await);
                drop(wave_turn);
            }
            (index, observations)
        }
    };
    // The status pages are read first, so that they count the pool's load and not our own
    // page requests; those start once the pages have answered, or after a short grace when
    // they do not (a pool so busy that its status page waits too).
    let (witnesses, others): (Vec<usize>, Vec<usize>) =
        (0..requests.len()).partition(|&i| requests[i].path_role.is_witness());
    let read = futures_util::future::join_all(witnesses.into_iter().map(run));
    let rest = futures_util::future::join_all(others.into_iter().map(run));
    let mut read = std::pin::pin!(read);
    let grace = (settings.shared.timeout / 4).min(WITNESS_GRACE);
    let mut results = tokio::select! {
        read = &mut read => {
            let mut results = rest.await;
            results.extend(read);
            results
        }
        _ = tokio::time::sleep(grace) => {
            let (read, mut results) = futures_util::future::join(read, rest).await;
            results.extend(read);
            results
        }
    };
    results.sort_by_key(|(index, _)| *index);
    ask_cloudflare_for_details(&shared, &requests, &mut results).await;
    let observations: Vec<Observation> = results.into_iter().flat_map(|(_, o)| o).collect();

    for o in &observations {
        tracing::debug!(
            route = o.route.as_str(),
            path = o.path_role.as_str(),
            address = o.address.map(tracing::field::display),
            status = o.response.as_ref().map(|r| r.status),
            error_phase = o.error.as_ref().map(|e| e.phase.as_str()),
            error = o.error.as_ref().map(|e| e.kind.as_str()),
            total_ms = o.timings_ms.total,
            "observed"
        );
    }
    let diagnosis = diagnose(target.host(), &observations, &settings.shared.diagnose);
    Ok(ProbeReport {
        schema: SCHEMA_VERSION,
        target: target.url().to_string(),
        host: target.host().to_string(),
        status: diagnosis.status,
        diagnosis,
        origin_given: !settings.origins.is_empty(),
        resolution,
        observations,
        cloudflare_edge_declared: settings.shared.diagnose.cloudflare_edge_declared,
        hidden_failure: None,
    })
}

/// The Accept header of ordinary requests.
const ACCEPT_ANY: &str = "*/*";
/// Cloudflare answers its own errors as RFC 9457 JSON when asked for JSON.
const ACCEPT_JSON: &str = "application/json";

/// When the edge answered with an error page of Cloudflare's own making, asks once more for the
/// same URL with `Accept: application/json` and keeps Cloudflare's error code and category on
/// that observation. Once per probe: the first such edge answer stands for the others.
async fn ask_cloudflare_for_details(
    shared: &Shared,
    requests: &[PlannedRequest],
    results: &mut [(usize, Vec<Observation>)],
) {
    let found = results.iter_mut().find_map(|(index, observations)| {
        let observation = observations.iter_mut().find(|o| {
            o.route == Route::Edge && o.response.as_ref().is_some_and(made_by_cloudflare)
        })?;
        Some((&requests[*index], observation))
    });
    let Some((request, observation)) = found else {
        return;
    };
    let again = observe(
        shared,
        &shared.target,
        request,
        observation.sample,
        ACCEPT_JSON,
        false,
    )
    .await;
    observation.cloudflare_error = again
        .response
        .as_ref()
        .and_then(|r| CloudflareErrorDetails::from_json(&r.body_excerpt));
}

/// Makes one request and follows up to `follow` redirects: on the same scheme, host and port
/// over the same connection target, and to another host only when it is listed in
/// `redirect_hosts` (resolved then like the edge). Anything else is recorded, never followed. The
/// observation is the last request's, with the URLs followed listed in `redirects`.
async fn observe_following(
    shared: &Shared,
    request: &PlannedRequest,
    sample: u32,
    follow: u32,
    has_turn: bool,
) -> Observation {
    let mut target = shared.target.clone();
    let mut observation = observe(shared, &target, request, sample, ACCEPT_ANY, has_turn).await;
    let mut followed = Vec::new();
    let mut next = request.clone();
    while followed.len() < follow as usize {
        let Some(location) = redirect_location(&observation) else {
            break;
        };
        // The URL as requested (the observation shows it with secrets masked).
        let base = url::Url::parse(&target.request_url(&next.path)).ok();
        let Some(url) = base.and_then(|b| b.join(&location).ok()) else {
            break;
        };
        let Ok(hop) = Target::parse(url.as_str()) else {
            break;
        };
        let same =
            hop.scheme == target.scheme && hop.host() == target.host() && hop.port == target.port;
        if !same {
            if !shared
                .redirect_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(hop.host()))
            {
                break;
            }
            // Another host: dialled where DNS (or its URL) says, like an edge.
            let (address, dns_ms) = match hop.host_ip {
                Some(ip) => (Some(SocketAddr::new(ip, hop.port)), None),
                None => match DnsClient::new(shared.nameserver, shared.timeout) {
                    Ok(dns) => {
                        let answer = dns.resolve(hop.host()).await;
                        let ip = answer.a.addresses.first().or(answer.aaaa.addresses.first());
                        (
                            ip.map(|ip| SocketAddr::new(*ip, hop.port)),
                            Some(answer.a.duration_ms),
                        )
                    }
                    Err(_) => (None, None),
                },
            };
            let Some(address) = address else {
                break;
            };
            next.address = Some(address);
            next.dns_ms = dns_ms;
        } else {
            // The lookup, if any, was paid for by the first request.
            next.dns_ms = None;
        }
        next.path = hop.path().to_string();
        followed.push(url_for_display(url.as_str()));
        target = hop;
        observation = observe(shared, &target, &next, sample, ACCEPT_ANY, has_turn).await;
    }
    observation.redirects = followed;
    // Followed (or not) as the server gave it; shown like every other URL.
    if let Some(location) = observation
        .response
        .as_mut()
        .and_then(|r| r.headers.location.as_mut())
    {
        *location = url_for_display(location);
    }
    observation
}

/// Where a redirect answer points, if it is one.
fn redirect_location(o: &Observation) -> Option<String> {
    let response = o.response.as_ref()?;
    if !matches!(response.status, 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    response.headers.location.clone()
}

/// What every request of one probe shares.
struct Shared {
    target: Target,
    roots: TrustRoots,
    timeout: Duration,
    user_agent: String,
    /// Other hosts redirects may be followed to.
    redirect_hosts: Vec<String>,
    nameserver: Nameserver,
    /// The header the status page requests carry (a token), when its value is set.
    status_header: Option<(::http::HeaderName, ::http::HeaderValue)>,
    /// The site's origin addresses: requests to them take turns (`gate`), whichever route
    /// dials them (a site without an edge in front is its own origin).
    origins: Vec<std::net::IpAddr>,
    /// Requests made at once to one origin address.
    per_origin: u32,
}

impl Shared {
    /// Whether a request to `address` on `route` takes a turn at an origin.
    fn gated(&self, address: std::net::IpAddr, route: Route) -> bool {
        route == Route::Origin || self.origins.contains(&address)
    }
}

/// Makes one request and records everything it saw; `has_turn`: its turn at the origin is
/// already taken (a burst's wave takes them all).
async fn observe(
    shared: &Shared,
    target: &Target,
    request: &PlannedRequest,
    sample: u32,
    accept: &str,
    has_turn: bool,
) -> Observation {
    // Its turn at the origin first: the time it waits for it is not the server's. A status
    // page read takes every turn, so the pool it describes holds none of our requests.
    let witness = request.path_role.is_witness();
    let _turn = match request.address {
        Some(a) if !has_turn && shared.gated(a.ip(), request.route) => {
            let turn = gate::turn(a.ip(), shared.per_origin, witness, shared.timeout * 2).await;
            // Every turn while PHP-FPM takes the read, not while a hostile page trickles.
            Some(if witness {
                turn.at_most(WITNESS_GRACE)
            } else {
                turn
            })
        }
        _ => None,
    };
    let started_at = OffsetDateTime::now_utc();
    let start = Instant::now();
    // The lookup behind an edge address counts against the same deadline.
    let dns_spent = Duration::from_secs_f64(request.dns_ms.unwrap_or(0.0) / 1000.0);
    let deadline = start + shared.timeout.saturating_sub(dns_spent);
    let mut observation = Observation {
        route: request.route,
        path_role: request.path_role,
        sample,
        address: request.address,
        cloudflare_address: request
            .address
            .is_some_and(|a| is_cloudflare_address(a.ip())),
        url: target.url_for(&request.path),
        started_at: crate::text::rfc3339(started_at),
        timings_ms: PhaseTimings {
            dns: request.dns_ms,
            ..PhaseTimings::default()
        },
        tls: None,
        response: None,
        error: None,
        cloudflare_error: None,
        redirects: Vec::new(),
        witness: None,
    };
    let finish = |mut observation: Observation| {
        observation.timings_ms.total =
            round3(request.dns_ms.unwrap_or(0.0) + millis(start.elapsed()));
        observation
    };

    let Some(address) = request.address else {
        observation.error = request.dns_error.clone();
        return finish(observation);
    };
    let tcp = match connect(address, deadline).await {
        Ok(tcp) => tcp,
        Err(e) => {
            observation.error = Some(e);
            return finish(observation);
        }
    };
    let connected = Instant::now();
    observation.timings_ms.connect = Some(millis(connected - start));

    let mut spec = HttpRequestSpec {
        scheme: match target.scheme {
            Scheme::Https => "https".into(),
            Scheme::Http => "http".into(),
        },
        authority: target.authority().to_string(),
        path: request.path.clone(),
        user_agent: shared.user_agent.clone(),
        accept: accept.to_string(),
        excerpt_bytes: BODY_EXCERPT_BYTES,
        read_limit: BODY_READ_LIMIT,
    };
    let mut payload = Payload::get();
    if witness {
        // Read whole (to parse it), up to its own bound: one byte more tells a page of
        // exactly the bound from a larger one.
        spec.excerpt_bytes = WITNESS_READ_LIMIT as usize;
        spec.read_limit = WITNESS_READ_LIMIT + 1;
    }
    let http: HttpExchange = match target.scheme {
        Scheme::Http => exchange_with(tcp, false, &spec, &payload, deadline).await,
        Scheme::Https => {
            let verifier = shared.roots.verifier_for(request.route);
            let done = handshake(tcp, target.host(), verifier, ALPN, started_at, deadline).await;
            observation.timings_ms.tls = Some(millis(done.ended_at - connected));
            observation.tls = done.facts;
            match done.stream {
                Ok(stream) => {
                    let use_h2 =
                        observation.tls.as_ref().and_then(|t| t.alpn.as_deref()) == Some("h2");
                    // The status token goes only to a server that proved it is the site.
                    if witness && observation.tls.as_ref().is_some_and(|t| t.verified) {
                        payload.headers.extend(shared.status_header.clone());
                    }
                    exchange_with(stream, use_h2, &spec, &payload, deadline).await
                }
                Err(e) => {
                    observation.error = Some(e);
                    return finish(observation);
                }
            }
        }
    };
    observation.timings_ms.ttfb = http.ttfb.map(millis);
    observation.timings_ms.transfer = http.transfer.map(millis);
    observation.response = http.response;
    observation.error = http.error;
    if witness {
        read_witness(&mut observation);
    }
    finish(observation)
}

/// Bytes of an unreadable status page kept on its observation.
const WITNESS_EXCERPT_BYTES: usize = 512;

/// Reads what a status page that answered 200 says of the server, and keeps only the start of
/// its text. A page that is not what the server writes is recorded as unreadable, with why.
fn read_witness(observation: &mut Observation) {
    let Some(response) = observation.response.as_mut() else {
        return;
    };
    if response.status != 200 {
        // An error page: its start says what answered.
        truncate_at(&mut response.body_excerpt, WITNESS_EXCERPT_BYTES);
        return;
    }
    let witness = if response.body_read_limit_hit {
        Witness::Unreadable(format!("larger than {} KiB", WITNESS_READ_LIMIT / 1024))
    } else if !response.body_complete {
        Witness::Unreadable("the page was cut off".into())
    } else {
        let read = match observation.path_role {
            PathRole::FpmStatus => FpmStatus::parse(&response.body_excerpt).map(Witness::FpmStatus),
            _ => NginxStatus::parse(&response.body_excerpt).map(Witness::NginxStatus),
        };
        read.unwrap_or_else(|e| Witness::Unreadable(e.to_string()))
    };
    // The parsed account replaces the text; of a page that could not be read, its start shows
    // what it was — up to the workers' list, whose request URIs carry query strings.
    let keep = match witness {
        Witness::Unreadable(_) => response
            .body_excerpt
            .find("\"processes\"")
            .unwrap_or(usize::MAX)
            .min(WITNESS_EXCERPT_BYTES),
        _ => 0,
    };
    observation.witness = Some(witness);
    truncate_at(&mut response.body_excerpt, keep);
}

/// `text` cut to at most `bytes`, on a character boundary.
fn truncate_at(text: &mut String, bytes: usize) {
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
