//! What a site is addressed as: its URL (`Target`), and the addresses (`IP[:PORT]`) and paths
//! the user may give beside it. Parsing only; the messages are the settings' own.

use std::net::{IpAddr, SocketAddr};

use url::{Host, Url};

use crate::text::url_for_display;

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

/// The Host header / `:authority` of a URL: its host (brackets kept for IPv6), plus `:port` when
/// the port is not the scheme's default.
pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Scheme of the site URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

/// The site as every route addresses it. One string holds the URL as shown; the host, the
/// authority and the path are ranges of it (a site list of 100,000 targets is held in memory),
/// except a path whose query carries a secret, which the URL shows masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Normalised URL (`example.com` → `https://example.com/`) as every output shows it: secret
    /// query values masked (`text::url_for_display`).
    url: Box<str>,
    pub scheme: Scheme,
    /// The host as an IP, when the URL names an address instead of a name.
    pub host_ip: Option<IpAddr>,
    pub port: u16,
    /// Where the host name starts and ends in `url`.
    host: (u32, u32),
    /// Where the authority ends and the path starts in `url`.
    path_start: u32,
    /// The path and query as requested, when `url` shows them masked.
    secret_path: Option<Box<str>>,
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
        let host_ip = match url.host() {
            Some(Host::Domain(name)) => {
                // A single label ("intranet", "not-a-url") is almost always a typo for a URL.
                if !name.contains('.') && name != "localhost" {
                    return Err(TargetError::NotQualified(name.to_string()));
                }
                None
            }
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            None => return Err(TargetError::NoHost),
        };
        let port = url.port_or_known_default().ok_or(TargetError::NoHost)?;
        if port == 0 {
            return Err(TargetError::PortZero);
        }
        let shown = url_for_display(url.as_str());
        let too_long = || TargetError::Unparsable("longer than 4 GiB".into());
        // The host as the URL writes it: without an IPv6 address's brackets or a name's
        // trailing dot.
        let written = &url[url::Position::BeforeHost..url::Position::AfterHost];
        let bare = written
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(written.trim_end_matches('.'));
        let host_start =
            url[..url::Position::BeforeHost].len() + usize::from(written.starts_with('['));
        let host_end = host_start + bare.len();
        let path_start = url[..url::Position::AfterPort].len();
        // Masking touches the query and fragment only: the URL as shown starts as the URL does.
        if shown.get(..path_start) != Some(&url[..url::Position::AfterPort]) {
            return Err(TargetError::Unparsable("the URL cannot be shown".into()));
        }
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let secret_path = (shown.get(path_start..) != Some(path)).then(|| path.into());
        Ok(Self {
            url: shown.into(),
            scheme,
            host_ip,
            port,
            host: (
                u32::try_from(host_start).map_err(|_| too_long())?,
                u32::try_from(host_end).map_err(|_| too_long())?,
            ),
            path_start: u32::try_from(path_start).map_err(|_| too_long())?,
            secret_path,
        })
    }

    /// Normalised URL (`example.com` → `https://example.com/`) as every output shows it:
    /// secret query values masked. Requests use `path`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Host name (or IP literal, without brackets): SNI and certificate name.
    pub fn host(&self) -> &str {
        &self.url[self.host.0 as usize..self.host.1 as usize]
    }

    /// Host header / `:authority`: host, plus `:port` when not the scheme's default.
    pub fn authority(&self) -> &str {
        let start = match self.scheme {
            Scheme::Https => "https://".len(),
            Scheme::Http => "http://".len(),
        };
        &self.url[start..self.path_start as usize]
    }

    /// Path and query of the page, as requested.
    pub fn path(&self) -> &str {
        match &self.secret_path {
            Some(path) => path,
            None => &self.url[self.path_start as usize..],
        }
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
        format!("{scheme}://{}{path}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_mean_https_root() {
        let t = Target::parse("example.com").unwrap();
        assert_eq!(t.url(), "https://example.com/");
        assert_eq!(
            (t.host(), t.port, t.authority(), t.path()),
            ("example.com", 443, "example.com", "/")
        );
        let t = Target::parse("http://Example.COM:8080/a/b?c=d").unwrap();
        assert_eq!(t.scheme, Scheme::Http);
        assert_eq!(
            (t.host(), t.port, t.authority(), t.path()),
            ("example.com", 8080, "example.com:8080", "/a/b?c=d")
        );
        let t = Target::parse("https://[::1]:8443/").unwrap();
        assert_eq!((t.host(), t.authority()), ("::1", "[::1]:8443"));
        let mapped = Target::parse("https://[::ffff:1.2.3.4]/").unwrap();
        assert_eq!(
            (mapped.host(), mapped.authority(), mapped.host_ip),
            (
                "::ffff:102:304",
                "[::ffff:102:304]",
                "::ffff:1.2.3.4".parse().ok()
            )
        );
        let dotted = Target::parse("https://Example.com.:8443/x").unwrap();
        assert_eq!(
            (dotted.host(), dotted.authority(), dotted.path()),
            ("example.com", "example.com.:8443", "/x")
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
        assert_eq!(t.url(), "https://shop.example/feed?token=***&page=2");
        assert_eq!(t.path(), "/feed?token=s3cret&page=2");
        assert_eq!(
            t.request_url(t.path()),
            "https://shop.example/feed?token=s3cret&page=2"
        );
        assert_eq!(t.url_for(t.path()), t.url());
    }
}
