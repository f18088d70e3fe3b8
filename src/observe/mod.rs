//! The evidence: what one request along one route saw, as plain serialisable data.
//!
//! Nothing here does I/O, and nothing here imports any other module of the crate: every stage
//! after `http` (the diagnosis, the report) reads only these types, so a recorded `--json` run can
//! be replayed without a network. How socket errors map to evidence kinds lives here too.

pub mod witness;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Which way we reached the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// The address a visitor gets: the DNS answer, or `--edge`.
    Edge,
    /// A configured origin address, dialled directly with the site's Host and SNI.
    Origin,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Edge => "edge",
            Route::Origin => "origin",
        }
    }
}

/// What kind of URL a request fetched, so PHP paths can be compared with files nginx serves itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRole {
    /// The URL the user asked for (usually rendered by PHP).
    Page,
    /// A file the web server serves without PHP (`--static-path`).
    Static,
    /// PHP-FPM's own status page (`--fpm-status`), read on the origin route.
    FpmStatus,
    /// nginx's `stub_status` page (`--nginx-status`), read on the origin route.
    NginxStatus,
}

impl PathRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PathRole::Page => "page",
            PathRole::Static => "static",
            PathRole::FpmStatus => "fpm_status",
            PathRole::NginxStatus => "nginx_status",
        }
    }

    /// A server's status page rather than a page of the site.
    pub fn is_witness(self) -> bool {
        matches!(self, PathRole::FpmStatus | PathRole::NginxStatus)
    }
}

/// Where a request stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Dns,
    Connect,
    Tls,
    /// Sending the request (or setting up the HTTP connection).
    Request,
    /// Waiting for the status line and headers.
    Headers,
    Body,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connect => "connect",
            Phase::Tls => "tls",
            Phase::Request => "request",
            Phase::Headers => "headers",
            Phase::Body => "body",
        }
    }
}

/// Why a request stopped, as a kind the diagnosis can match on (never a message string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// DNS: the name does not exist.
    Nxdomain,
    /// DNS: the server failed to answer (SERVFAIL).
    Servfail,
    /// DNS: the name exists but has no A/AAAA record.
    NoRecords,
    /// The deadline passed in this phase.
    Timeout,
    /// Connection refused (TCP RST to our SYN), or a DNS REFUSED answer.
    Refused,
    /// The peer reset an established connection.
    Reset,
    /// No route to the address.
    Unreachable,
    /// The peer closed the connection cleanly before the exchange was complete.
    Closed,
    /// The peer sent a TLS alert during the handshake.
    TlsAlert,
    /// The certificate was expired (only when it stopped the request).
    CertExpired,
    /// The certificate chain is not trusted (only when it stopped the request).
    CertUntrusted,
    /// The certificate does not cover the name (only when it stopped the request).
    CertNameMismatch,
    /// The peer spoke something that is not valid TLS / HTTP.
    Protocol,
    /// Any other local or network I/O failure.
    Io,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Nxdomain => "nxdomain",
            ErrorKind::Servfail => "servfail",
            ErrorKind::NoRecords => "no_records",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Closed => "closed",
            ErrorKind::TlsAlert => "tls_alert",
            ErrorKind::CertExpired => "cert_expired",
            ErrorKind::CertUntrusted => "cert_untrusted",
            ErrorKind::CertNameMismatch => "cert_name_mismatch",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Io => "io",
        }
    }
}

/// The failure that ended a request early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedError {
    pub phase: Phase,
    pub kind: ErrorKind,
    /// Human-readable detail (for people; the diagnosis uses `phase` and `kind`).
    pub message: String,
}

/// Phase durations in milliseconds, with curl's meanings taken apart into spans:
/// `dns` = name lookup, `connect` = TCP handshake, `tls` = TLS handshake, `ttfb` = request sent to
/// response headers received, `transfer` = headers to end of body, `total` = all of it.
/// A phase that did not happen (no DNS for a given address, no TLS for http://) is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTimings {
    pub dns: Option<f64>,
    pub connect: Option<f64>,
    pub tls: Option<f64>,
    pub ttfb: Option<f64>,
    pub transfer: Option<f64>,
    pub total: f64,
}

/// Why a certificate chain was not accepted by standard (WebPKI) verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertProblem {
    Expired,
    NotYetValid,
    /// Self-signed or issued by a CA we do not trust.
    Untrusted,
    NameMismatch,
    Revoked,
    /// Malformed, wrong purpose, unsupported algorithm, bad signature, …
    Invalid,
}

impl CertProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            CertProblem::Expired => "expired",
            CertProblem::NotYetValid => "not_yet_valid",
            CertProblem::Untrusted => "untrusted",
            CertProblem::NameMismatch => "name_mismatch",
            CertProblem::Revoked => "revoked",
            CertProblem::Invalid => "invalid",
        }
    }
}

/// Facts about one certificate of the chain the server presented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses from subjectAltName.
    pub sans: Vec<String>,
    /// RFC 3339.
    pub not_before: String,
    /// RFC 3339.
    pub not_after: String,
    /// Whole days from the probe's start to `not_after`; negative once expired.
    pub days_left: i64,
    pub self_signed: bool,
    /// Issued by Cloudflare's Origin CA (issuer OU contains "CloudFlare Origin").
    pub cloudflare_origin_ca: bool,
    /// SHA-256 of the DER encoding, lowercase hex.
    pub sha256: String,
    /// The serial number, lowercase hex without leading zeros (empty in reports recorded before
    /// it was kept).
    #[serde(default)]
    pub serial: String,
}

/// What the TLS handshake showed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsFacts {
    /// `TLSv1.3`, `TLSv1.2`; absent when the handshake did not finish.
    pub version: Option<String>,
    pub cipher: Option<String>,
    /// Negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The chain passed standard verification for the site's name with the route's trust roots.
    pub verified: bool,
    pub verify_error: Option<CertProblem>,
    pub verify_message: Option<String>,
    /// The leaf certificate covers the site's name (checked on its own, so an expired certificate
    /// for the wrong name shows both problems).
    pub name_matches: Option<bool>,
    /// Leaf first, as the server sent it.
    pub chain: Vec<CertFacts>,
}

impl TlsFacts {
    pub fn leaf(&self) -> Option<&CertFacts> {
        self.chain.first()
    }
}

/// The response headers the diagnosis uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseHeaders {
    pub server: Option<String>,
    pub cf_ray: Option<String>,
    pub cf_cache_status: Option<String>,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    pub location: Option<String>,
    pub content_length: Option<String>,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseFacts {
    pub status: u16,
    /// `HTTP/1.1` or `HTTP/2`.
    pub http_version: String,
    pub headers: ResponseHeaders,
    /// The first bytes of the body (bounded), decoded as UTF-8 with replacement characters.
    pub body_excerpt: String,
    /// Body bytes received in all, including what was counted and discarded.
    pub body_bytes: u64,
    /// The body ended as the server announced it (no reset, no timeout, no early close).
    pub body_complete: bool,
    /// We stopped reading at our own size limit (the site did nothing wrong).
    pub body_read_limit_hit: bool,
}

/// Everything one request along one route saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub route: Route,
    pub path_role: PathRole,
    /// 1-based sample number (`--samples`).
    pub sample: u32,
    /// The address dialled; absent when DNS gave none.
    pub address: Option<SocketAddr>,
    /// The dialled address lies inside Cloudflare's published ranges.
    pub cloudflare_address: bool,
    pub url: String,
    /// RFC 3339 wall-clock time the request started.
    pub started_at: String,
    pub timings_ms: PhaseTimings,
    pub tls: Option<TlsFacts>,
    pub response: Option<ResponseFacts>,
    pub error: Option<ObservedError>,
    /// When the edge answered with an error of Cloudflare's own making: Cloudflare's account of
    /// it, asked for once more with `Accept: application/json` (RFC 9457).
    pub cloudflare_error: Option<CloudflareErrorDetails>,
    /// Redirects followed (same site, or hosts allowed by `redirect_hosts`), each URL in order; the
    /// timings and the response are the last request's. Absent when none was followed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<String>,
    /// A status page's account of the server (`fpm_status` and `nginx_status` requests that
    /// answered 200): parsed, or why it could not be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<witness::Witness>,
}

/// Cloudflare's RFC 9457 error document, the fields the diagnosis uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CloudflareErrorDetails {
    pub error_code: Option<u16>,
    pub error_name: Option<String>,
    /// `origin`, `ssl`, `cloudflare`, `dns`, `config`.
    pub error_category: Option<String>,
    pub ray_id: Option<String>,
    pub retryable: Option<bool>,
}

impl CloudflareErrorDetails {
    /// Reads Cloudflare's JSON error document; `None` unless it says `cloudflare_error: true`.
    pub fn from_json(text: &str) -> Option<Self> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        if value.get("cloudflare_error")?.as_bool() != Some(true) {
            return None;
        }
        let text_of = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_string);
        Some(Self {
            error_code: value
                .get("error_code")
                .and_then(|v| v.as_u64())
                .and_then(|c| u16::try_from(c).ok()),
            error_name: text_of("error_name"),
            error_category: text_of("error_category"),
            ray_id: text_of("ray_id"),
            retryable: value.get("retryable").and_then(|v| v.as_bool()),
        })
    }
}

/// One DNS query we made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsAnswer {
    /// `A` or `AAAA`.
    pub record_type: String,
    pub duration_ms: f64,
    pub addresses: Vec<IpAddr>,
    /// Smallest TTL of the answer records, in seconds.
    pub ttl: Option<u32>,
    /// Some answer address lies inside Cloudflare's published ranges.
    pub cloudflare: bool,
    pub error: Option<DnsFailure>,
}

/// Why a DNS query gave no address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsFailure {
    pub kind: ErrorKind,
    pub message: String,
}

/// The name lookups behind the edge route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    pub name: String,
    /// `system` (resolv.conf) or the `--resolver` address.
    pub resolver: String,
    pub a: DnsAnswer,
    pub aaaa: DnsAnswer,
}

/// Overall verdict, mapped to monitoring-plugin exit codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Ok,
    Degraded,
    Down,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Down => "down",
            Status::Unknown => "unknown",
        }
    }

    /// Monitoring-plugins convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Degraded => 1,
            Status::Down => 2,
            Status::Unknown => 3,
        }
    }

    /// The monitoring-plugins word for this status.
    pub fn plugin_word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Degraded => "WARNING",
            Status::Down => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// A duration in milliseconds, rounded to the microsecond (what the JSON carries).
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

/// Classifies a socket error as an evidence kind.
pub fn io_error_kind(e: &std::io::Error) -> ErrorKind {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => ErrorKind::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ErrorKind::Reset,
        K::TimedOut => ErrorKind::Timeout,
        K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable => ErrorKind::Unreachable,
        K::UnexpectedEof => ErrorKind::Closed,
        K::InvalidData => ErrorKind::Protocol,
        _ => ErrorKind::Io,
    }
}
