//! The plain status rules that stand until the diagnosis lands: a route that fails or answers 5xx
//! is CRITICAL; an expiring certificate, an unverifiable origin certificate, a non-2xx/3xx answer or
//! one edge address failing among several is a WARNING. Pure functions over observations.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::observe::{Observation, PathRole, Route, Status};

/// Certificates expiring within this many days make the site degraded.
pub const CERT_WARNING_DAYS: i64 = 14;

/// A route as the user sees it: the edge (all its addresses together) or one origin address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RouteKey {
    route: Route,
    origin: Option<SocketAddr>,
    path_role: PathRole,
}

/// Returns the status and its reasons, worst first.
pub fn plain_status(observations: &[Observation]) -> (Status, Vec<String>) {
    let mut groups: BTreeMap<RouteKey, Vec<&Observation>> = BTreeMap::new();
    for o in observations {
        let key = RouteKey {
            route: o.route,
            origin: (o.route == Route::Origin).then_some(o.address).flatten(),
            path_role: o.path_role,
        };
        groups.entry(key).or_default().push(o);
    }
    if groups.is_empty() {
        return (Status::Unknown, vec!["nothing was probed".into()]);
    }

    let mut down = Vec::new();
    let mut degraded = Vec::new();
    for (key, group) in &groups {
        let name = route_name(key);
        let failures: Vec<String> = group.iter().filter_map(|o| failure(o)).collect();
        if failures.len() == group.len() {
            down.push(format!("{name}: {}", failures[0]));
        } else if !failures.is_empty() {
            degraded.push(format!(
                "{name}: {} of {} requests failed ({})",
                failures.len(),
                group.len(),
                failures[0]
            ));
        }
        for o in group {
            if let Some(r) = &o.response {
                if !(200..400).contains(&r.status) && r.status < 500 {
                    degraded.push(format!("{name}: answered {}", r.status));
                }
            }
            if let Some(tls) = &o.tls {
                if !tls.verified {
                    let problem = tls.verify_error.map_or("invalid", |p| p.as_str());
                    let line = format!("{name}: certificate not valid ({problem})");
                    // Visitors' browsers refuse an invalid edge certificate: the site is down
                    // for them. An origin certificate may legitimately be trusted only by the edge.
                    match key.route {
                        Route::Edge => down.push(line),
                        Route::Origin => degraded.push(line),
                    }
                }
                for cert in &tls.chain {
                    if (0..CERT_WARNING_DAYS).contains(&cert.days_left) {
                        degraded.push(format!(
                            "{name}: certificate {} expires in {} days",
                            cert.subject, cert.days_left
                        ));
                    }
                }
            }
        }
    }
    down.dedup();
    degraded.sort();
    degraded.dedup();
    let status = if !down.is_empty() {
        Status::Down
    } else if !degraded.is_empty() {
        Status::Degraded
    } else {
        Status::Ok
    };
    let mut reasons = down;
    reasons.extend(degraded);
    (status, reasons)
}

/// What made a request fail, if it did: an error, or a 5xx answer.
fn failure(o: &Observation) -> Option<String> {
    // Origin routes are named by their address already; the edge may have several.
    let at = match (o.route, o.address) {
        (Route::Edge, Some(a)) => format!(" ({a})"),
        _ => String::new(),
    };
    if let Some(e) = &o.error {
        return Some(format!("{} {}{at}", e.phase.as_str(), e.kind.as_str()));
    }
    match &o.response {
        Some(r) if r.status >= 500 => Some(format!("answered {}{at}", r.status)),
        Some(_) => None,
        None => Some(format!("no response{at}")),
    }
}

fn route_name(key: &RouteKey) -> String {
    match key.origin {
        Some(address) => format!("origin {address} {}", key.path_role.as_str()),
        None => format!("{} {}", key.route.as_str(), key.path_role.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{
        CertFacts, ErrorKind, ObservedError, Phase, PhaseTimings, ResponseFacts, ResponseHeaders,
        TlsFacts,
    };

    fn observation(route: Route, address: &str, status: Option<u16>) -> Observation {
        Observation {
            route,
            path_role: PathRole::Page,
            sample: 1,
            address: Some(address.parse().unwrap()),
            cloudflare_address: false,
            url: "https://example.com/".into(),
            started_at: String::new(),
            timings_ms: PhaseTimings::default(),
            tls: None,
            response: status.map(|status| ResponseFacts {
                status,
                http_version: "HTTP/1.1".into(),
                headers: ResponseHeaders::default(),
                body_excerpt: String::new(),
                body_bytes: 0,
                body_complete: true,
                body_read_limit_hit: false,
            }),
            error: status.is_none().then(|| ObservedError {
                phase: Phase::Connect,
                kind: ErrorKind::Refused,
                message: String::new(),
            }),
        }
    }

    fn tls(days_left: i64, verified: bool) -> TlsFacts {
        TlsFacts {
            version: Some("TLSv1.3".into()),
            cipher: None,
            alpn: None,
            verified,
            verify_error: None,
            verify_message: None,
            name_matches: Some(true),
            chain: vec![CertFacts {
                subject: "CN=example.com".into(),
                issuer: "CN=CA".into(),
                sans: vec![],
                not_before: String::new(),
                not_after: String::new(),
                days_left,
                self_signed: false,
                cloudflare_origin_ca: false,
                sha256: String::new(),
            }],
        }
    }

    #[test]
    fn the_plain_rules() {
        let ok = observation(Route::Edge, "192.0.2.1:443", Some(200));
        let redirect = observation(Route::Edge, "192.0.2.1:443", Some(301));
        let bad_gateway = observation(Route::Origin, "198.51.100.1:443", Some(502));
        let refused = observation(Route::Origin, "198.51.100.1:443", None);
        let not_found = observation(Route::Origin, "198.51.100.1:443", Some(404));
        let edge_refused = observation(Route::Edge, "192.0.2.2:443", None);
        let mut expiring = ok.clone();
        expiring.tls = Some(tls(5, true));
        let mut expired_edge = ok.clone();
        expired_edge.tls = Some(tls(-3, false));
        let mut untrusted_origin = observation(Route::Origin, "198.51.100.1:443", Some(200));
        untrusted_origin.tls = Some(tls(300, false));

        let cases: Vec<(&str, Vec<Observation>, Status, &str)> = vec![
            (
                "healthy",
                vec![ok.clone(), redirect.clone()],
                Status::Ok,
                "",
            ),
            (
                "origin 502",
                vec![ok.clone(), bad_gateway],
                Status::Down,
                "origin 198.51.100.1:443 page: answered 502",
            ),
            (
                "origin refused",
                vec![ok.clone(), refused],
                Status::Down,
                "connect refused",
            ),
            (
                "404",
                vec![ok.clone(), not_found],
                Status::Degraded,
                "answered 404",
            ),
            (
                "one edge address of two",
                vec![ok.clone(), edge_refused.clone()],
                Status::Degraded,
                "1 of 2 requests failed",
            ),
            (
                "every edge address",
                vec![edge_refused],
                Status::Down,
                "edge page: connect refused",
            ),
            (
                "expiring",
                vec![expiring],
                Status::Degraded,
                "expires in 5 days",
            ),
            (
                "expired edge",
                vec![expired_edge],
                Status::Down,
                "edge page: certificate not valid",
            ),
            (
                "untrusted origin",
                vec![ok, untrusted_origin],
                Status::Degraded,
                "certificate not valid",
            ),
        ];
        for (name, observations, expected, reason) in cases {
            let (status, reasons) = plain_status(&observations);
            assert_eq!(status, expected, "{name}: {reasons:?}");
            assert!(
                reasons
                    .first()
                    .map_or(reason.is_empty(), |r| r.contains(reason)),
                "{name}: {reasons:?}"
            );
        }
    }

    #[test]
    fn nothing_probed_is_unknown() {
        assert_eq!(plain_status(&[]).0, Status::Unknown);
    }
}
