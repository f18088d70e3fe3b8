//! The plan: which requests to make for one site — each route (the edge address(es), each origin)
//! × each path role (page, static) — and the target they all share (Host, SNI, path).

use std::net::{IpAddr, SocketAddr};

use url::{Host, Url};

use crate::observe::{DnsFailure, ErrorKind, ObservedError, PathRole, Phase, Resolution, Route};
use crate::text::url_for_display;

/// At most this many addresses of each family are dialled on the edge route.
pub const MAX_EDGE_ADDRESSES_PER_FAMILY: usize = 2;

/// Why a target argument is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("not a URL ({0}); expected e.g. example.com or https://example.com/")]
    Unparsable(String),
    #[error("scheme {0:?} is not supported; use https:// or http://")]
    Scheme(String),
    #[error("has no host name")]
    NoHost,
    #[error("{0:?} is not a fully qualified host name; expected e.g. example.com or https://example.com/")]
    NotQualified(String),
    /// User name or password in the URL: never sent, and they would be shown in every output.
    #[error("carries a user name or password; probe does not send credentials from a URL: remove them (secrets come from the environment, never from probes.yaml or the command line)")]
    Credentials,
    #[error("port 0 is not a port a server can listen on")]
    PortZero,
}

/// Parses `IP`, `IP:PORT`, `[IPv6]` or `[IPv6]:PORT` (no host names: an address is what is
/// dialled); port 0 is refused.
pub fn parse_ip_port(value: &str, default_port: u16) -> Option<SocketAddr> {
    parse_any_ip_port(value, default_port).filter(|a| a.port() != 0)
}

/// Whether `value` is an address whose port is 0 (to say so rather than "not an address").
pub fn is_port_zero(value: &str) -> bool {
    parse_any_ip_port(value, 1).is_some_and(|a| a.port() == 0)
}

fn parse_any_ip_port(value: &str, default_port: u16) -> Option<SocketAddr> {
    if let Ok(address) = value.parse::<SocketAddr>() {
        return Some(address);
    }
    let bare = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, default_port))
}

/// Why a static path cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StaticPathError {
    #[error("must be a path starting with '/', e.g. /wp-includes/css/dashicons.min.css")]
    NotAbsolute,
    #[error("starts with '//', which a URL reads as another host")]
    OtherHost,
    #[error("holds a space or a control character; percent-encode it (%20)")]
    BadCharacter,
    #[error("is longer than {MAX_PATH_BYTES} bytes")]
    TooLong,
}

/// Longest path accepted for a static file (longer URLs are refused by many servers anyway).
pub const MAX_PATH_BYTES: usize = 2048;

/// Checks a path for the static file (`--static-path`, `static_path:`), as both the command line
/// and the config accept it.
pub fn check_static_path(path: &str) -> Result<String, StaticPathError> {
    if !path.starts_with('/') {
        return Err(StaticPathError::NotAbsolute);
    }
    if path.starts_with("//") {
        return Err(StaticPathError::OtherHost);
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || crate::text::is_unsafe(c))
    {
        return Err(StaticPathError::BadCharacter);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(StaticPathError::TooLong);
    }
    Ok(path.to_string())
}

/// Scheme of the site URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

/// The site as every route addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Normalised URL (`example.com` → `https://example.com/`) as every output shows it: secret
    /// query values masked (`text::url_for_display`). Requests use `path`.
    pub url: String,
    pub scheme: Scheme,
    /// Host name (or IP literal, without brackets): SNI and certificate name.
    pub host: String,
    /// The host as an IP, when the URL names an address instead of a name.
    pub host_ip: Option<IpAddr>,
    pub port: u16,
    /// Host header / `:authority`: host, plus `:port` when not the scheme's default.
    pub authority: String,
    /// Path and query of the page.
    pub path: String,
}

impl Target {
    /// Parses a user's target: a URL, or a bare host name meaning `https://NAME/`.
    pub fn parse(input: &str) -> Result<Self, TargetError> {
        let text = input.trim();
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("https://{text}")
        };
        let url = Url::parse(&with_scheme).map_err(|e| TargetError::Unparsable(e.to_string()))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Credentials);
        }
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => return Err(TargetError::Scheme(other.to_string())),
        };
        let (host, host_ip) = match url.host() {
            Some(Host::Domain(name)) => {
                // A single label ("intranet", "not-a-url") is almost always a typo for a URL.
                if !name.contains('.') && name != "localhost" {
                    return Err(TargetError::NotQualified(name.to_string()));
                }
                (name.trim_end_matches('.').to_string(), None)
            }
            Some(Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            None => return Err(TargetError::NoHost),
        };
        let port = url.port_or_known_default().ok_or(TargetError::NoHost)?;
        if port == 0 {
            return Err(TargetError::PortZero);
        }
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or(&host)),
            None => url.host_str().unwrap_or(&host).to_string(),
        };
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        Ok(Self {
            url: url_for_display(url.as_str()),
            scheme,
            host,
            host_ip,
            port,
            authority,
            path,
        })
    }

    /// The URL of another path on the same site, as outputs show it (secret query values
    /// masked).
    pub fn url_for(&self, path: &str) -> String {
        url_for_display(&self.request_url(path))
    }

    /// The URL of another path on the same site, as requested.
    pub fn request_url(&self, path: &str) -> String {
        let scheme = match self.scheme {
            Scheme::Https => "https",
            Scheme::Http => "http",
        };
        format!("{scheme}://{}{path}", self.authority)
    }
}

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

/// Lists every request for the site: edge first, then each origin, page before static.
pub fn plan(
    target: &Target,
    edge: &EdgeAddresses<'_>,
    origins: &[SocketAddr],
    static_path: Option<&str>,
) -> Vec<PlannedRequest> {
    let mut paths = vec![(PathRole::Page, target.path.clone())];
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
    for origin in origins {
        for (role, path) in &paths {
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

    #[test]
    fn bare_names_mean_https_root() {
        let t = Target::parse("example.com").unwrap();
        assert_eq!(t.url, "https://example.com/");
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            ("example.com", 443, "example.com", "/")
        );
        let t = Target::parse("http://Example.COM:8080/a/b?c=d").unwrap();
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.authority.as_str(),
                t.path.as_str()
            ),
            ("example.com", 8080, "example.com:8080", "/a/b?c=d")
        );
        let t = Target::parse("https://[::1]:8443/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:8443")
        );
        assert!(t.host_ip.is_some());
        assert_eq!(t.url_for("/x.css"), "https://[::1]:8443/x.css");
    }

    #[test]
    fn unusable_targets() {
        assert!(matches!(
            Target::parse("not-a-url"),
            Err(TargetError::NotQualified(_))
        ));
        assert!(matches!(
            Target::parse("ftp://example.com"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            Target::parse("https://"),
            Err(TargetError::Unparsable(_))
        ));
        assert!(matches!(
            Target::parse("exa mple.com"),
            Err(TargetError::Unparsable(_))
        ));
        assert!(matches!(
            Target::parse("https://admin:pw@example.com/"),
            Err(TargetError::Credentials)
        ));
        assert!(matches!(
            Target::parse("https://example.com:0/"),
            Err(TargetError::PortZero)
        ));
        assert_eq!(parse_ip_port("127.0.0.1:0", 443), None);
        assert_eq!(
            parse_ip_port("127.0.0.1", 443),
            Some("127.0.0.1:443".parse().unwrap())
        );
    }

    #[test]
    fn secret_query_values_are_masked_where_shown_and_kept_where_requested() {
        let t = Target::parse("https://shop.example/feed?token=s3cret&page=2").unwrap();
        assert_eq!(t.url, "https://shop.example/feed?token=***&page=2");
        assert_eq!(t.path, "/feed?token=s3cret&page=2");
        assert_eq!(
            t.request_url(&t.path),
            "https://shop.example/feed?token=s3cret&page=2"
        );
        assert_eq!(t.url_for(&t.path), t.url);
    }

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
        );
        let edge: Vec<_> = requests.iter().filter(|r| r.route == Route::Edge).collect();
        assert_eq!(edge.len(), 6, "2 A + 1 AAAA, × page and static");
        assert_eq!(edge[4].address.unwrap().to_string(), "[2001:db8::1]:443");
        assert_eq!(edge[4].dns_ms, Some(2.0));
        assert_eq!(
            requests.iter().filter(|r| r.route == Route::Origin).count(),
            2
        );
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
        let requests = plan(&target, &EdgeAddresses::Resolved(&resolution), &[], None);
        assert_eq!(requests.len(), 1);
        assert!(requests[0].address.is_none());
        assert_eq!(
            requests[0].dns_error.as_ref().unwrap().kind,
            ErrorKind::Nxdomain
        );
    }
}
