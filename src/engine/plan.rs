//! The plan: which requests to make for one site — each route (the edge address(es), each origin)
//! × each path role (page, static) — for the target they all share (`settings::Target`: Host,
//! SNI, path).

use std::net::SocketAddr;

use crate::observe::{DnsFailure, ErrorKind, ObservedError, PathRole, Phase, Resolution, Route};
use crate::settings::{Target, WitnessSettings};

/// At most this many addresses of each family are dialled on the edge route.
pub const MAX_EDGE_ADDRESSES_PER_FAMILY: usize = 2;

/// One request to make (repeated `samples` times).
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    pub route: Route,
    pub path_role: PathRole,
    pub path: String,
    /// `None` when DNS gave the edge route nothing to dial; `dns_error` then says why.
    pub address: Option<SocketAddr>,
    /// Time the lookup behind this address took (edge route, from DNS).
    pub dns_ms: Option<f64>,
    pub dns_error: Option<ObservedError>,
}

/// Where the edge route dials.
#[derive(Debug, Clone)]
pub enum EdgeAddresses<'a> {
    /// Given on the command line, or the URL names an IP: no DNS.
    Given(SocketAddr),
    /// From our DNS lookups.
    Resolved(&'a Resolution),
}

/// Lists every request for the site: edge first, then each origin, page before static, then the
/// origin's status pages (never asked of the edge: they must not be public).
pub fn plan(
    target: &Target,
    edge: &EdgeAddresses<'_>,
    origins: &[SocketAddr],
    static_path: Option<&str>,
    witnesses: Option<&WitnessSettings>,
) -> Vec<PlannedRequest> {
    let mut paths = vec![(PathRole::Page, target.path().to_string())];
    if let Some(p) = static_path {
        paths.push((PathRole::Static, p.to_string()));
    }
    let mut requests = Vec::new();
    let edge_dials = edge_dials(edge, target.port);
    for (address, dns_ms, dns_error) in &edge_dials {
        for (role, path) in &paths {
            requests.push(PlannedRequest {
                route: Route::Edge,
                path_role: *role,
                path: path.clone(),
                address: *address,
                dns_ms: *dns_ms,
                dns_error: dns_error.clone(),
            });
        }
    }
    let mut origin_paths = paths.clone();
    if let Some(w) = witnesses {
        if let Some(p) = &w.fpm_status {
            // The full status as JSON: the pool's counters and every worker's request.
            let join = if p.contains('?') { '&' } else { '?' };
            origin_paths.push((PathRole::FpmStatus, format!("{p}{join}json&full")));
        }
        if let Some(p) = &w.nginx_status {
            origin_paths.push((PathRole::NginxStatus, p.to_string()));
        }
    }
    for origin in origins {
        for (role, path) in &origin_paths {
            requests.push(PlannedRequest {
                route: Route::Origin,
                path_role: *role,
                path: path.clone(),
                address: Some(*origin),
                dns_ms: None,
                dns_error: None,
            });
        }
    }
    requests
}

type EdgeDial = (Option<SocketAddr>, Option<f64>, Option<ObservedError>);

/// The edge addresses to dial, each with the DNS time behind it; or, when DNS gave none, one
/// address-less entry carrying the DNS failure.
fn edge_dials(edge: &EdgeAddresses<'_>, port: u16) -> Vec<EdgeDial> {
    let resolution = match edge {
        EdgeAddresses::Given(address) => return vec![(Some(*address), None, None)],
        EdgeAddresses::Resolved(resolution) => resolution,
    };
    let mut dials: Vec<EdgeDial> = Vec::new();
    for answer in [&resolution.a, &resolution.aaaa] {
        for ip in answer.addresses.iter().take(MAX_EDGE_ADDRESSES_PER_FAMILY) {
            dials.push((
                Some(SocketAddr::new(*ip, port)),
                Some(answer.duration_ms),
                None,
            ));
        }
    }
    if dials.is_empty() {
        let error = dns_error(resolution);
        let slowest = resolution.a.duration_ms.max(resolution.aaaa.duration_ms);
        dials.push((None, Some(slowest), Some(error)));
    }
    dials
}

/// The most telling DNS failure of a resolution that yielded no address: a definite answer
/// (NXDOMAIN, SERVFAIL) beats a timeout, which beats "no records".
fn dns_error(resolution: &Resolution) -> ObservedError {
    let rank = |f: &DnsFailure| match f.kind {
        ErrorKind::Nxdomain => 0,
        ErrorKind::Servfail | ErrorKind::Refused => 1,
        ErrorKind::Timeout => 2,
        ErrorKind::NoRecords => 4,
        _ => 3,
    };
    let failure = [&resolution.a.error, &resolution.aaaa.error]
        .into_iter()
        .flatten()
        .min_by_key(|f| rank(f));
    match failure {
        Some(f) => ObservedError {
            phase: Phase::Dns,
            kind: f.kind,
            message: f.message.clone(),
        },
        None => ObservedError {
            phase: Phase::Dns,
            kind: ErrorKind::NoRecords,
            message: format!("no A or AAAA record for {}", resolution.name),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::DnsAnswer;

    fn answer(kind: &str, ips: &[&str], error: Option<ErrorKind>) -> DnsAnswer {
        DnsAnswer {
            record_type: kind.into(),
            duration_ms: if kind == "A" { 1.0 } else { 2.0 },
            addresses: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ttl: None,
            cloudflare: false,
            error: error.map(|kind| DnsFailure {
                kind,
                message: String::new(),
            }),
        }
    }

    #[test]
    fn edge_addresses_are_capped_per_family_and_timed_by_their_lookup() {
        let target = Target::parse("example.com").unwrap();
        let resolution = Resolution {
            name: "example.com".into(),
            resolver: "system".into(),
            a: answer("A", &["192.0.2.1", "192.0.2.2", "192.0.2.3"], None),
            aaaa: answer("AAAA", &["2001:db8::1"], None),
        };
        let origins = ["198.51.100.7:443".parse().unwrap()];
        let requests = plan(
            &target,
            &EdgeAddresses::Resolved(&resolution),
            &origins,
            Some("/s.css"),
            Some(&WitnessSettings {
                fpm_status: Some("/fpm-status".into()),
                nginx_status: Some("/ns?x=1".into()),
                header: None,
            }),
        );
        let edge: Vec<_> = requests.iter().filter(|r| r.route == Route::Edge).collect();
        assert_eq!(edge.len(), 6, "2 A + 1 AAAA, × page and static");
        assert_eq!(edge[4].address.unwrap().to_string(), "[2001:db8::1]:443");
        assert_eq!(edge[4].dns_ms, Some(2.0));
        let origin: Vec<_> = requests
            .iter()
            .filter(|r| r.route == Route::Origin)
            .collect();
        assert_eq!(origin.len(), 4, "page, static and both status pages");
        assert_eq!(origin[2].path, "/fpm-status?json&full");
        assert_eq!(origin[3].path, "/ns?x=1");
    }

    #[test]
    fn no_address_leaves_one_request_per_path_with_the_dns_failure() {
        let target = Target::parse("example.com").unwrap();
        let resolution = Resolution {
            name: "example.com".into(),
            resolver: "system".into(),
            a: answer("A", &[], Some(ErrorKind::NoRecords)),
            aaaa: answer("AAAA", &[], Some(ErrorKind::Nxdomain)),
        };
        let requests = plan(
            &target,
            &EdgeAddresses::Resolved(&resolution),
            &[],
            None,
            None,
        );
        assert_eq!(requests.len(), 1);
        assert!(requests[0].address.is_none());
        assert_eq!(
            requests[0].dns_error.as_ref().unwrap().kind,
            ErrorKind::Nxdomain
        );
    }
}
