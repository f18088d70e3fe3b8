//! The diagnosis, table-driven over observations shaped like what each failure shows (FACTS.md:
//! Cloudflare's codes and pages, nginx's stock pages and timings, WordPress's pages). No network.

use probe::diagnose::{diagnose, BudgetPhase, Cause, Confidence, DiagnoseSettings, Hop};
use probe::observe::{
    CertFacts, CertProblem, CloudflareErrorDetails, ErrorKind, Observation, ObservedError,
    PathRole, Phase, PhaseTimings, ResponseFacts, ResponseHeaders, Route, Status, TlsFacts,
};

const HOST: &str = "example.com";
const EDGE: &str = "104.16.1.1:443";
const ORIGIN: &str = "203.0.113.10:443";

const NGINX_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";
const NGINX_504: &str = "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";
const WP_DB: &str = "<!DOCTYPE html><html><head><title>Database Error</title></head><body><h1>Error establishing a database connection</h1></body></html>";
const WP_MAINTENANCE: &str = "<!DOCTYPE html><html><head><title>Maintenance</title></head><body><h1>Briefly unavailable for scheduled maintenance. Check back in a minute.</h1></body></html>";
const WP_CRITICAL: &str =
    "<html><body><p>There has been a critical error on this website.</p></body></html>";
/// Envoy's local reply when it cannot connect to its upstream cluster (text/plain).
const ENVOY_UPSTREAM: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: 111";
/// Apache 2.4 mod_proxy's 502 page.
const APACHE_PROXY_502: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>502 Proxy Error</title>\n</head><body>\n<h1>Proxy Error</h1>\n<p>The proxy server received an invalid\r\nresponse from an upstream server.<br />\r\nThe proxy server could not handle the request<p>Reason: <strong>Error reading from remote server</strong></p></p>\n<hr>\n<address>Apache/2.4.57 (Debian) Server at example.com Port 443</address>\n</body></html>\n";
const CF_PLAIN_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

/// Cloudflare's branded error page for `code`, with `source` ("browser", "cloudflare", "host")
/// marked as the failing box.
fn cf_branded(code: u16, source: &str) -> String {
    let mark = |b: &str| if b == source { " cf-error-source" } else { "" };
    format!(
        r#"<!DOCTYPE html><html><head><title>example.com | {code}: error</title></head><body>
<div id="cf-wrapper"><div id="cf-error-details" class="p-0">
<h1><span class="inline-block">Error</span><span class="code-label">Error code {code}</span></h1>
<div id="cf-browser-status" class="cf-column cf-status-item cf-browser-status{}">You Browser Working</div>
<div id="cf-cloudflare-status" class="cf-column cf-status-item cf-cloudflare-status{}">Cloudflare</div>
<div id="cf-host-status" class="cf-column cf-status-item cf-host-status{}">Host</div>
</div><p>Cloudflare Ray ID: <strong>8f1c2d3e4f5a6b7c</strong></p></div></body></html>"#,
        mark("browser"),
        mark("cloudflare"),
        mark("host")
    )
}

// ---- observation builders ---------------------------------------------------------------------

fn observation(route: Route, role: PathRole) -> Observation {
    Observation {
        route,
        path_role: role,
        sample: 1,
        address: Some(
            if route == Route::Edge { EDGE } else { ORIGIN }
                .parse()
                .unwrap(),
        ),
        cloudflare_address: route == Route::Edge,
        url: format!("https://{HOST}/"),
        started_at: "2026-11-25T12:00:00Z".into(),
        timings_ms: PhaseTimings {
            dns: None,
            connect: Some(1.0),
            tls: Some(3.0),
            ttfb: None,
            transfer: None,
            total: 0.0,
        },
        tls: Some(tls(90, None)),
        response: None,
        error: None,
        cloudflare_error: None,
        redirects: Vec::new(),
        witness: None,
    }
}

fn tls(days_left: i64, problem: Option<CertProblem>) -> TlsFacts {
    TlsFacts {
        version: Some("TLSv1.3".into()),
        cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
        alpn: Some("h2".into()),
        verified: problem.is_none(),
        verify_error: problem,
        verify_message: problem.map(|p| format!("invalid peer certificate: {}", p.as_str())),
        name_matches: Some(problem != Some(CertProblem::NameMismatch)),
        chain: vec![CertFacts {
            subject: format!("CN={HOST}"),
            issuer: "CN=Some CA".into(),
            sans: vec![HOST.into()],
            not_before: "2026-01-01T00:00:00Z".into(),
            // The probe started 2026-11-25T12:00:00Z: the expiry `days_left` whole days on.
            not_after: (time::macros::datetime!(2026-11-25 12:00 UTC)
                + time::Duration::days(days_left)
                + time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
            days_left,
            self_signed: problem == Some(CertProblem::Untrusted),
            cloudflare_origin_ca: false,
            sha256: "00".repeat(32),
            serial: "1f".into(),
        }],
    }
}

/// A response: `status` after `ttfb` ms, from `server`, with `body`.
fn answered(
    route: Route,
    role: PathRole,
    status: u16,
    ttfb: f64,
    server: &str,
    body: &str,
) -> Observation {
    let mut o = observation(route, role);
    let via_cloudflare = route == Route::Edge && server == "cloudflare";
    o.timings_ms.ttfb = Some(ttfb);
    o.timings_ms.transfer = Some(0.1);
    o.timings_ms.total = 4.0 + ttfb + 0.1;
    o.response = Some(ResponseFacts {
        status,
        http_version: "HTTP/2".into(),
        headers: ResponseHeaders {
            server: Some(server.into()),
            cf_ray: via_cloudflare.then(|| "8f1c2d3e4f5a6b7c-LHR".into()),
            content_type: Some("text/html".into()),
            ..ResponseHeaders::default()
        },
        body_excerpt: body.into(),
        body_bytes: body.len() as u64,
        body_complete: true,
        body_read_limit_hit: false,
    });
    o
}

/// `o` with its `Server` header set to `server` (or none) and its content type.
fn with_server(mut o: Observation, server: Option<&str>, content_type: &str) -> Observation {
    let r = o.response.as_mut().unwrap();
    r.headers.server = server.map(str::to_string);
    r.headers.content_type = Some(content_type.into());
    o
}

fn failed(route: Route, role: PathRole, phase: Phase, kind: ErrorKind, total: f64) -> Observation {
    let mut o = observation(route, role);
    if matches!(phase, Phase::Dns | Phase::Connect) {
        o.tls = None;
        o.timings_ms.tls = None;
    }
    if phase == Phase::Dns {
        o.address = None;
        o.timings_ms.connect = None;
    }
    if phase == Phase::Tls {
        o.tls = None;
    }
    o.timings_ms.total = total;
    o.error = Some(ObservedError {
        phase,
        kind,
        message: format!("{} {}", phase.as_str(), kind.as_str()),
    });
    o
}

use PathRole::{Page, Static};
use Route::{Edge, Origin};

fn edge_ok() -> Observation {
    answered(Edge, Page, 200, 40.0, "cloudflare", "<html>welcome</html>")
}
fn origin_ok() -> Observation {
    answered(
        Origin,
        Page,
        200,
        35.0,
        "nginx/1.22.1",
        "<html>welcome</html>",
    )
}
fn static_ok(route: Route) -> Observation {
    answered(route, Static, 200, 0.6, "nginx/1.22.1", ".dashicons{}")
}
fn cf_error(code: u16, source: &str) -> Observation {
    answered(
        Edge,
        Page,
        code,
        30.0,
        "cloudflare",
        &cf_branded(code, source),
    )
}

struct Case {
    name: &'static str,
    observations: Vec<Observation>,
    status: Status,
    hop: Hop,
    cause: Cause,
    confidence: Confidence,
    /// Words the first evidence line must contain (the decisive observation).
    evidence: &'static str,
}

fn cases() -> Vec<Case> {
    let with_tls = |mut o: Observation, problem: CertProblem, days: i64| {
        o.tls = Some(tls(days, Some(problem)));
        o
    };
    let mut json_522 = answered(
        Edge,
        Page,
        522,
        19_000.0,
        "cloudflare",
        "<html>error</html>",
    );
    json_522.cloudflare_error = Some(CloudflareErrorDetails {
        error_code: Some(522),
        error_name: Some("connection_timed_out".into()),
        error_category: Some("origin".into()),
        ray_id: Some("8f1c2d3e4f5a6b7c".into()),
        retryable: Some(true),
    });
    let mut expiring = edge_ok();
    expiring.tls = Some(tls(5, None));
    vec![
        Case {
            name: "healthy",
            observations: vec![edge_ok(), origin_ok(), static_ok(Origin)],
            status: Status::Ok, hop: Hop::None, cause: Cause::Ok, confidence: Confidence::High,
            evidence: "edge page 200",
        },
        Case {
            name: "healthy but a slow static file: slow, never down",
            observations: vec![edge_ok(), answered(Edge, Static, 200, 3500.0, "cloudflare", ".x{}"), origin_ok()],
            status: Status::Degraded, hop: Hop::None, cause: Cause::Slow, confidence: Confidence::High,
            evidence: "edge static 200 in 3500 ms",
        },
        Case {
            name: "the page 3.7 s, the static file 0.9 ms on the origin: PHP is slow",
            observations: vec![
                answered(Edge, Page, 200, 3708.0, "nginx/1.22.1", "<html>shop</html>"),
                static_ok(Edge),
                answered(Origin, Page, 200, 3694.0, "nginx/1.22.1", "<html>shop</html>"),
                answered(Origin, Static, 200, 0.9, "nginx/1.22.1", ".dashicons{}"),
            ],
            status: Status::Degraded, hop: Hop::OriginFpm, cause: Cause::OriginSlow, confidence: Confidence::High,
            evidence: "origin 203.0.113.10:443 page 200 in 3694 ms",
        },
        Case {
            name: "the page slow through the edge only, the static file fast: PHP, medium",
            observations: vec![
                answered(Edge, Page, 200, 3708.0, "nginx/1.22.1", "<html>shop</html>"),
                static_ok(Edge),
            ],
            status: Status::Degraded, hop: Hop::OriginFpm, cause: Cause::OriginSlow, confidence: Confidence::Medium,
            evidence: "edge page 200 in 3708 ms",
        },
        Case {
            name: "the page slow with no static file to compare: slow",
            observations: vec![
                answered(Edge, Page, 200, 3708.0, "nginx/1.22.1", "<html>shop</html>"),
                answered(Origin, Page, 200, 3694.0, "nginx/1.22.1", "<html>shop</html>"),
            ],
            status: Status::Degraded, hop: Hop::None, cause: Cause::Slow, confidence: Confidence::High,
            evidence: "edge page 200 in 3708 ms",
        },
        Case {
            name: "certificate expiring",
            observations: vec![expiring, origin_ok()],
            status: Status::Degraded, hop: Hop::None, cause: Cause::CertExpiring, confidence: Confidence::High,
            evidence: "expires in 5 days",
        },
        Case {
            name: "NXDOMAIN",
            observations: vec![failed(Edge, Page, Phase::Dns, ErrorKind::Nxdomain, 12.0)],
            status: Status::Down, hop: Hop::Dns, cause: Cause::DnsFailure, confidence: Confidence::High,
            evidence: "dns: dns nxdomain",
        },
        Case {
            name: "edge refuses",
            observations: vec![failed(Edge, Page, Phase::Connect, ErrorKind::Refused, 1.0), origin_ok()],
            status: Status::Down, hop: Hop::VisitorEdge, cause: Cause::EdgeUnreachable, confidence: Confidence::High,
            evidence: "edge page: connect refused",
        },
        Case {
            name: "edge certificate expired",
            observations: vec![with_tls(edge_ok(), CertProblem::Expired, -2)],
            status: Status::Down, hop: Hop::VisitorEdge, cause: Cause::EdgeCertInvalid, confidence: Confidence::High,
            evidence: "edge page: certificate CN=example.com (issuer CN=Some CA) expired on 2026-11-23 (2 days ago)",
        },
        Case {
            name: "521 and the origin refuses us too",
            observations: vec![cf_error(521, "host"), failed(Origin, Page, Phase::Connect, ErrorKind::Refused, 30.0)],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginRefused, confidence: Confidence::High,
            evidence: "edge page 521",
        },
        Case {
            name: "521 while the origin answers us",
            observations: vec![cf_error(521, "host"), origin_ok()],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginBlocksEdge, confidence: Confidence::High,
            evidence: "Cloudflare branded error page 521, host box = error",
        },
        Case {
            name: "522 and our connect times out too",
            observations: vec![cf_error(522, "host"), failed(Origin, Page, Phase::Connect, ErrorKind::Timeout, 10_000.0)],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginTimeout, confidence: Confidence::High,
            evidence: "edge page 522",
        },
        Case {
            name: "522 without an origin to compare",
            observations: vec![cf_error(522, "host")],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginTimeout, confidence: Confidence::Medium,
            evidence: "edge page 522",
        },
        Case {
            name: "522 known from Cloudflare's JSON only",
            observations: vec![json_522],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginTimeout, confidence: Confidence::Medium,
            evidence: "Cloudflare JSON error 522 (origin)",
        },
        Case {
            name: "525 and the origin handshake fails",
            observations: vec![cf_error(525, "host"), failed(Origin, Page, Phase::Tls, ErrorKind::TlsAlert, 5.0)],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginTlsHandshake, confidence: Confidence::High,
            evidence: "edge page 525",
        },
        Case {
            name: "526 with an expired origin certificate",
            observations: vec![cf_error(526, "host"), with_tls(origin_ok(), CertProblem::Expired, -3)],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginCertExpired, confidence: Confidence::High,
            evidence: "edge page 526",
        },
        Case {
            name: "526 with a self-signed origin certificate",
            observations: vec![cf_error(526, "host"), with_tls(origin_ok(), CertProblem::Untrusted, 300)],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginCertUntrusted, confidence: Confidence::High,
            evidence: "edge page 526",
        },
        Case {
            name: "526 with an origin certificate for another name",
            observations: vec![cf_error(526, "host"), with_tls(origin_ok(), CertProblem::NameMismatch, 300)],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginCertNameMismatch, confidence: Confidence::High,
            evidence: "edge page 526",
        },
        Case {
            name: "530 / 1016",
            observations: vec![answered(Edge, Page, 530, 20.0, "cloudflare", "<title>Origin DNS error</title><div id=\"cf-error-details\"><span class=\"cf-error-code\">1016</span></div>")],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginDnsFailure, confidence: Confidence::High,
            evidence: "edge page 530",
        },
        Case {
            name: "520",
            observations: vec![cf_error(520, "host"), failed(Origin, Page, Phase::Headers, ErrorKind::Closed, 3.0)],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::OriginBadResponse, confidence: Confidence::High,
            evidence: "edge page 520",
        },
        Case {
            name: "524",
            observations: vec![cf_error(524, "host"), failed(Origin, Page, Phase::Headers, ErrorKind::Timeout, 10_000.0)],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::OriginSlow, confidence: Confidence::High,
            evidence: "edge page 524",
        },
        Case {
            name: "Cloudflare's own plain 502",
            observations: vec![answered(Edge, Page, 502, 5.0, "cloudflare", CF_PLAIN_502), origin_ok()],
            status: Status::Down, hop: Hop::VisitorEdge, cause: Cause::EdgeInternal, confidence: Confidence::High,
            evidence: "Cloudflare's own plain error page",
        },
        Case {
            name: "branded 502 (host) + origin nginx 502 in 0.8 ms + static fine",
            observations: vec![
                cf_error(502, "host"),
                answered(Origin, Page, 502, 0.8, "nginx/1.22.1", NGINX_502),
                static_ok(Origin),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmUnreachable, confidence: Confidence::High,
            evidence: "Cloudflare branded error page 502, host box = error",
        },
        Case {
            name: "branded 502 without an origin: low confidence",
            observations: vec![cf_error(502, "host")],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmUnreachable, confidence: Confidence::Low,
            evidence: "edge page 502",
        },
        Case {
            name: "no CDN: nginx 502 in 0.5 ms, static fine",
            observations: vec![
                answered(Edge, Page, 502, 0.5, "nginx/1.22.1", NGINX_502),
                static_ok(Edge),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmUnreachable, confidence: Confidence::High,
            evidence: "edge page 502 in 0.5 ms, server nginx/1.22.1, stock nginx page",
        },
        Case {
            name: "no CDN: Envoy's upstream connect error in 1 ms: named, medium",
            observations: vec![
                with_server(answered(Edge, Page, 503, 1.0, "envoy", ENVOY_UPSTREAM), Some("envoy"), "text/plain"),
                static_ok(Edge),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmUnreachable, confidence: Confidence::Medium,
            evidence: "Envoy's upstream error text",
        },
        Case {
            name: "no CDN: Traefik's bare Bad Gateway in 0.7 ms: named, medium",
            observations: vec![
                with_server(answered(Edge, Page, 502, 0.7, "", "Bad Gateway"), None, "text/plain; charset=utf-8"),
                static_ok(Edge),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmUnreachable, confidence: Confidence::Medium,
            evidence: "Traefik's plain error text",
        },
        Case {
            name: "no CDN: Caddy's empty 502 in 0.9 ms: named, medium",
            observations: vec![
                answered(Edge, Page, 502, 0.9, "Caddy", ""),
                static_ok(Edge),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmUnreachable, confidence: Confidence::Medium,
            evidence: "Caddy's empty error answer",
        },
        Case {
            name: "no CDN: Apache mod_proxy's 502 in 2 ms: named, medium",
            observations: vec![
                answered(Edge, Page, 502, 2.0, "Apache/2.4.57 (Debian)", APACHE_PROXY_502),
                static_ok(Edge),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmUnreachable, confidence: Confidence::Medium,
            evidence: "Apache mod_proxy error page",
        },
        Case {
            name: "an edge outside Cloudflare's ranges claiming a 521 while the origin answers: medium",
            observations: vec![
                {
                    let mut o = cf_error(521, "host");
                    o.address = Some("198.51.100.66:443".parse().unwrap());
                    o.cloudflare_address = false;
                    o
                },
                origin_ok(),
            ],
            status: Status::Down, hop: Hop::EdgeOrigin, cause: Cause::OriginBlocksEdge, confidence: Confidence::Medium,
            evidence: "edge page 521",
        },
        Case {
            name: "origin nginx 504 at the read timeout",
            observations: vec![
                cf_error(504, "host"),
                answered(Origin, Page, 504, 3000.4, "nginx/1.22.1", NGINX_504),
                static_ok(Origin),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmSaturated, confidence: Confidence::Medium,
            evidence: "edge page 504",
        },
        Case {
            name: "origin 502 after 490 ms: a worker died",
            observations: vec![
                answered(Edge, Page, 502, 495.0, "nginx/1.22.1", NGINX_502),
                answered(Origin, Page, 502, 490.0, "nginx/1.22.1", NGINX_502),
                static_ok(Origin),
            ],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmWorkerDied, confidence: Confidence::Medium,
            evidence: "origin 203.0.113.10:443 page 502 in 490 ms",
        },
        Case {
            name: "fast 502s for some requests only: backlog full",
            observations: vec![
                edge_ok(),
                origin_ok(),
                answered(Origin, Page, 502, 3.0, "nginx/1.22.1", NGINX_502),
                origin_ok(),
            ],
            status: Status::Degraded, hop: Hop::OriginFpm, cause: Cause::FpmSaturated, confidence: Confidence::Medium,
            evidence: "origin 203.0.113.10:443 page 502 in 3.0 ms",
        },
        Case {
            name: "WordPress database error",
            observations: vec![
                answered(Edge, Page, 500, 5.0, "cloudflare", WP_DB),
                answered(Origin, Page, 500, 1.9, "nginx/1.22.1", WP_DB),
            ],
            status: Status::Down, hop: Hop::FpmDatabase, cause: Cause::DatabaseUnreachable, confidence: Confidence::High,
            evidence: "WordPress database error page",
        },
        Case {
            name: "WordPress maintenance",
            observations: vec![answered(Edge, Page, 503, 5.0, "cloudflare", WP_MAINTENANCE)],
            status: Status::Down, hop: Hop::App, cause: Cause::Maintenance, confidence: Confidence::High,
            evidence: "WordPress maintenance page",
        },
        Case {
            name: "WordPress critical error",
            observations: vec![answered(Edge, Page, 500, 50.0, "cloudflare", WP_CRITICAL), answered(Origin, Page, 500, 45.0, "nginx", WP_CRITICAL)],
            status: Status::Down, hop: Hop::App, cause: Cause::AppError, confidence: Confidence::High,
            evidence: "WordPress critical error page",
        },
        Case {
            name: "origin refuses while the edge still serves",
            observations: vec![edge_ok(), failed(Origin, Page, Phase::Connect, ErrorKind::Refused, 1.0)],
            status: Status::Degraded, hop: Hop::EdgeOrigin, cause: Cause::OriginRefused, confidence: Confidence::Medium,
            evidence: "origin 203.0.113.10:443 page: connect refused",
        },
        Case {
            name: "a body cut short",
            observations: vec![{
                let mut o = answered(Edge, Page, 200, 20.0, "nginx", "<html>partial");
                o.error = Some(ObservedError { phase: Phase::Body, kind: ErrorKind::Reset, message: "reset".into() });
                o.response.as_mut().unwrap().body_complete = false;
                o
            }],
            status: Status::Down, hop: Hop::OriginFpm, cause: Cause::FpmWorkerDied, confidence: Confidence::Medium,
            evidence: "then body reset",
        },
    ]
}

/// A 502 from a proxy that is not nginx names that proxy, not nginx, and gives its own next
/// steps; `high` stays for nginx's own page with the static file served.
#[test]
fn other_proxies_are_named_with_their_own_next_steps() {
    let settings = DiagnoseSettings::default();
    let cases: [(Observation, &str, &str); 4] = [
        (
            with_server(
                answered(Edge, Page, 503, 1.0, "envoy", ENVOY_UPSTREAM),
                Some("envoy"),
                "text/plain",
            ),
            "Envoy answers 503",
            "localhost:9901/clusters",
        ),
        (
            with_server(
                answered(Edge, Page, 502, 0.7, "", "Bad Gateway"),
                None,
                "text/plain",
            ),
            "Traefik answers 502",
            "traefik.http.services",
        ),
        (
            answered(Edge, Page, 502, 0.9, "Caddy", ""),
            "Caddy answers 502",
            "/etc/caddy/Caddyfile",
        ),
        (
            answered(
                Edge,
                Page,
                502,
                2.0,
                "Apache/2.4.57 (Debian)",
                APACHE_PROXY_502,
            ),
            "Apache answers 502",
            "/var/log/apache2/error.log",
        ),
    ];
    for (observation, summary, step) in cases {
        let d = diagnose(HOST, &[observation, static_ok(Edge)], &settings);
        assert!(d.summary.starts_with(summary), "{}", d.summary);
        assert!(!d.summary.contains("nginx"), "{}", d.summary);
        assert!(
            d.next_steps.iter().any(|s| s.contains(step)),
            "{summary}: {:#?}",
            d.next_steps
        );
        assert!(
            !d.next_steps
                .iter()
                .any(|s| s.contains("fastcgi_pass /etc/nginx")),
            "{summary}: nginx's steps for another proxy: {:#?}",
            d.next_steps
        );
    }
}

/// Cloudflare's headers from an address outside its ranges are a claim: the evidence says so.
#[test]
fn a_claimed_cloudflare_edge_is_said_to_be_a_claim() {
    let mut edge = cf_error(521, "host");
    edge.address = Some("198.51.100.66:443".parse().unwrap());
    edge.cloudflare_address = false;
    let d = diagnose(
        HOST,
        &[edge.clone(), origin_ok()],
        &DiagnoseSettings::default(),
    );
    assert!(
        d.evidence.iter().any(|e| e.contains(
            "edge 198.51.100.66 is not in Cloudflare's published ranges: its Cloudflare headers are a claim, not proof"
        )),
        "{:#?}",
        d.evidence
    );
    // Declared by the user (a Tunnel, a private edge): proof again.
    let declared = DiagnoseSettings {
        cloudflare_edge_declared: true,
        ..DiagnoseSettings::default()
    };
    let d = diagnose(HOST, &[edge, origin_ok()], &declared);
    assert_eq!(
        (d.cause, d.confidence),
        (Cause::OriginBlocksEdge, Confidence::High)
    );
}

/// Next steps name the site's own scheme and port, not `https://HOST/` on 443.
#[test]
fn next_steps_use_the_real_url() {
    let mut edge = failed(Edge, Page, Phase::Connect, ErrorKind::Refused, 1.0);
    edge.url = "https://example.com:8443/shop".into();
    let d = diagnose(HOST, &[edge], &DiagnoseSettings::default());
    assert_eq!(d.cause, Cause::EdgeUnreachable);
    assert!(
        d.next_steps
            .iter()
            .any(|s| s.starts_with("curl -sv 'https://example.com:8443/shop'")),
        "{:#?}",
        d.next_steps
    );
    // openssl dials the edge address probe dialled (--edge / edge:, or DNS's), with the name.
    let mut edge = answered(Edge, Page, 200, 10.0, "nginx", "ok");
    edge.url = "https://example.com:8443/".into();
    edge.address = Some("198.51.100.7:8443".parse().unwrap());
    edge.tls = Some(tls(-2, Some(CertProblem::Expired)));
    let d = diagnose(HOST, &[edge], &DiagnoseSettings::default());
    assert_eq!(d.cause, Cause::EdgeCertInvalid);
    assert!(
        d.next_steps[0].starts_with(
            "echo | openssl s_client -connect 198.51.100.7:8443 -servername example.com "
        ),
        "{:#?}",
        d.next_steps
    );
}

/// Certificate problems from the certificate's own dates and names, never the TLS library's
/// text; an expired certificate's days as "expired N days ago"; and an expiring certificate's
/// next steps by who renews it, checked where probe dialled.
#[test]
fn certificates_in_words() {
    let settings = DiagnoseSettings::default();
    let library = "invalid peer certificate: certificate expired: verification time 1796674624 (UNIX), but certificate is not valid after 1743465600 (53209024 seconds ago)";
    let mut expired = tls(-616, Some(CertProblem::Expired));
    expired.verify_message = Some(library.into());
    expired.chain[0].not_after = "2025-04-01T00:00:00Z".into();
    let mut edge = edge_ok();
    edge.tls = Some(expired.clone());
    let d = diagnose(HOST, &[edge, origin_ok()], &settings);
    assert_eq!(d.cause, Cause::EdgeCertInvalid);
    assert_eq!(
        d.summary,
        "Browsers refuse the certificate the edge presents (CN=example.com): it expired on 2025-04-01 (616 days ago)."
    );
    assert_eq!(
        d.evidence[0],
        "edge page: certificate CN=example.com (issuer CN=Some CA) expired on 2025-04-01 (616 days ago)"
    );
    let all = format!("{d:?}");
    assert!(!all.contains("UNIX") && !all.contains("-616"), "{d:#?}");

    // The origin's certificate for another name, behind Cloudflare's 526.
    let mut wrong = tls(300, Some(CertProblem::NameMismatch));
    wrong.chain[0].sans = vec!["other.test".into(), "www.other.test".into()];
    let mut origin = origin_ok();
    origin.tls = Some(wrong);
    let d = diagnose(HOST, &[cf_error(526, "host"), origin], &settings);
    assert_eq!(d.cause, Cause::OriginCertNameMismatch);
    assert!(
        d.summary.ends_with(
            "it is for other.test, www.other.test, not for the site's name example.com."
        ),
        "{}",
        d.summary
    );

    // An expiring certificate: its date, and the steps that renew it.
    let mut edge = edge_ok();
    edge.tls = Some(tls(10, None));
    edge.tls.as_mut().unwrap().chain[0].issuer = "C=US, O=Let's Encrypt, CN=R11".into();
    edge.cloudflare_address = false;
    let mut plain = edge.clone();
    plain.response.as_mut().unwrap().headers.server = Some("nginx".into());
    plain.response.as_mut().unwrap().headers.cf_ray = None;
    let d = diagnose(HOST, &[plain, origin_ok()], &settings);
    assert_eq!(d.cause, Cause::CertExpiring);
    assert!(
        d.summary
            .ends_with("a certificate on the edge route expires in 10 days, on 2026-12-05."),
        "{}",
        d.summary
    );
    assert!(
        d.next_steps[0]
            .starts_with("echo | openssl s_client -connect 104.16.1.1:443 -servername example.com")
            && d.next_steps
                .iter()
                .any(|s| s.starts_with("systemctl list-timers | grep -i certbot"))
            && d.next_steps.iter().any(|s| s.contains("certbot renew")),
        "{:#?}",
        d.next_steps
    );
    // Behind Cloudflare, the certificate visitors get is Cloudflare's to renew.
    let d = diagnose(HOST, &[edge_ok_expiring(), origin_ok()], &settings);
    assert!(
        d.next_steps
            .iter()
            .any(|s| s.contains("managed by the CDN")),
        "{:#?}",
        d.next_steps
    );
    // A Cloudflare Origin CA certificate on the origin: renewed in Cloudflare's dashboard.
    let mut origin = origin_ok();
    origin.tls = Some(tls(10, None));
    origin.tls.as_mut().unwrap().chain[0].cloudflare_origin_ca = true;
    let d = diagnose(HOST, &[edge_ok(), origin], &settings);
    assert_eq!(d.cause, Cause::CertExpiring);
    assert!(
        d.next_steps[0].starts_with("echo | openssl s_client -connect 203.0.113.10:443 ")
            && d.next_steps[1].contains("Origin Server → Create Certificate"),
        "{:#?}",
        d.next_steps
    );
}

fn edge_ok_expiring() -> Observation {
    let mut edge = edge_ok();
    edge.tls = Some(tls(10, None));
    edge
}

#[test]
fn every_cause_from_its_evidence() {
    let settings = DiagnoseSettings::default();
    for case in cases() {
        let d = diagnose(HOST, &case.observations, &settings);
        let got = (d.status, d.hop, d.cause, d.confidence);
        let want = (case.status, case.hop, case.cause, case.confidence);
        assert_eq!(got, want, "{}: {}\n{:#?}", case.name, d.summary, d.evidence);
        assert_eq!(d.hop, d.cause.hop(), "{}", case.name);
        assert!(
            d.evidence
                .first()
                .is_some_and(|e| e.contains(case.evidence)),
            "{}: first evidence should contain {:?}: {:#?}",
            case.name,
            case.evidence,
            d.evidence
        );
        assert!(!d.summary.is_empty(), "{}", case.name);
        assert_each_line_once(case.name, &d.evidence);
        assert_one_stop(case.name, &d.summary);
        let healthy = d.cause == Cause::Ok;
        assert_eq!(
            d.next_steps.is_empty(),
            healthy || d.cause == Cause::Unknown,
            "{}: next steps {:?}",
            case.name,
            d.next_steps
        );
    }
}

/// One full stop or question mark ends each sentence, never two.
fn assert_one_stop(name: &str, summary: &str) {
    for doubled in ["?.", "..", ".?", ". ."] {
        assert!(!summary.contains(doubled), "{name}: {summary}");
    }
}

/// What the page answered that it should not, in words: a redirect with where it points, a 4xx
/// as a question ending with its own mark, nginx's page for plain HTTP on a TLS port.
#[test]
fn unexpected_answers_say_what_was_seen() {
    let moved = |route: Route| {
        let mut o = answered(route, Page, 301, 30.0, "nginx/1.22.1", "");
        o.response.as_mut().unwrap().headers.location =
            Some("https://www.example.com/?token=***".into());
        o
    };
    let only_200 = DiagnoseSettings {
        expect_status: vec![200],
        ..DiagnoseSettings::default()
    };
    let d = diagnose(HOST, &[moved(Edge), moved(Origin)], &only_200);
    assert_eq!(
        d.summary,
        "Nothing fails, but the edge page answers 301 to https://www.example.com/?token=***: expected 200."
    );
    assert!(
        d.evidence[0].contains(", location https://www.example.com/?token=***"),
        "{:#?}",
        d.evidence
    );
    let missing = answered(Edge, Page, 404, 3.0, "nginx/1.22.1", "");
    let d = diagnose(HOST, &[missing], &DiagnoseSettings::default());
    assert_eq!(
        d.summary,
        "Nothing fails, but the edge page answers 404: is the path right?"
    );

    // An http:// site whose origin address names the TLS port: probe's own request is wrong,
    // the site is not judged.
    const PLAIN_TO_TLS: &str = "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";
    let http = |mut o: Observation| {
        o.url = format!("http://{HOST}/");
        o.tls = None;
        o
    };
    let edge = http(answered(
        Edge,
        Page,
        200,
        20.0,
        "nginx/1.22.1",
        "<html>ok</html>",
    ));
    let origin = http(answered(
        Origin,
        Page,
        400,
        0.6,
        "nginx/1.22.1",
        PLAIN_TO_TLS,
    ));
    let d = diagnose(HOST, &[edge, origin], &DiagnoseSettings::default());
    assert_eq!(
        (d.status, d.cause, d.confidence),
        (Status::Unknown, Cause::Unknown, Confidence::High),
        "{d:#?}"
    );
    assert!(
        d.summary.contains("the origin address 203.0.113.10:443 answers 400 \"The plain HTTP request was sent to HTTPS port\"")
            && d.summary.ends_with("give the origin's plain-HTTP port (origins: [IP:80], --origin IP:80), or probe the site as https://."),
        "{}",
        d.summary
    );
    assert_one_stop("plain http", &d.summary);
}

fn assert_each_line_once(name: &str, evidence: &[String]) {
    for (i, line) in evidence.iter().enumerate() {
        assert!(
            !evidence[..i].contains(line),
            "{name}: {line:?} is said twice: {evidence:#?}"
        );
    }
}

/// The observation a slow verdict leads with is also the first of its route's lines: it is
/// said once (it was inserted first, then found again among the routes' lines).
#[test]
fn the_decisive_line_is_said_once() {
    let slow_page = answered(Edge, Page, 200, 3708.0, "nginx/1.22.1", "<html>shop</html>");
    let mut expiring = edge_ok();
    expiring.tls = Some(tls(10, None));
    for (name, observations) in [
        (
            "slow",
            vec![slow_page, static_ok(Edge), origin_ok(), static_ok(Origin)],
        ),
        ("expiring", vec![expiring, origin_ok()]),
    ] {
        let d = diagnose(HOST, &observations, &DiagnoseSettings::default());
        assert_each_line_once(name, &d.evidence);
    }
}

/// A page much slower than the static file is PHP's slowness, said with both figures and the
/// setting its budget comes from; slowness that is not PHP's stays `slow`, naming its phase's
/// setting; and a slow site with a certificate close to expiry is slow first.
#[test]
fn slowness_names_who_is_slow_and_the_budget_setting() {
    let settings = DiagnoseSettings::default();
    let slow_php = vec![
        answered(Edge, Page, 200, 3708.0, "nginx/1.22.1", "<html>shop</html>"),
        static_ok(Edge),
        answered(
            Origin,
            Page,
            200,
            3694.0,
            "nginx/1.22.1",
            "<html>shop</html>",
        ),
        answered(Origin, Static, 200, 0.9, "nginx/1.22.1", ".dashicons{}"),
    ];
    let d = diagnose(HOST, &slow_php, &settings);
    assert_eq!(d.cause, Cause::OriginSlow, "{d:#?}");
    assert_eq!(
        d.summary,
        "The page takes 3.7 s to its first byte, over its budget (budget.ttfb = 2s), while nginx serves the static file in 0.9 ms on the same origin: PHP is slow, not the network."
    );
    assert!(
        d.evidence[0].contains("page 200 in 3694 ms")
            && d.evidence[1].contains("static 200 in 0.9 ms"),
        "{:#?}",
        d.evidence
    );
    assert!(
        d.next_steps[0].contains("request_slowlog_timeout")
            && d.next_steps.iter().any(|s| s.contains("wp profile"))
            && d.next_steps.iter().any(|s| s.contains("pm = ondemand")),
        "{:#?}",
        d.next_steps
    );
    assert_each_line_once("slow php", &d.evidence);
    // The budget is the site's: at 5 s the same page is within it.
    let patient = DiagnoseSettings {
        budget: {
            let mut b = probe::diagnose::Budget::default();
            b.set(BudgetPhase::Ttfb, std::time::Duration::from_secs(5));
            b
        },
        ..DiagnoseSettings::default()
    };
    assert_eq!(diagnose(HOST, &slow_php, &patient).cause, Cause::Ok);

    // Slowness that is not PHP's: each names its phase's setting.
    let mut slow_dns = edge_ok();
    slow_dns.timings_ms.dns = Some(1400.0);
    let mut slow_tls = origin_ok();
    slow_tls.timings_ms.tls = Some(1700.0);
    let mut strict = DiagnoseSettings::default();
    strict
        .budget
        .set(BudgetPhase::Dns, std::time::Duration::from_secs(1));
    strict
        .budget
        .set(BudgetPhase::Tls, std::time::Duration::from_millis(500));
    let cases: Vec<(Vec<Observation>, &DiagnoseSettings, &str)> = vec![
        (
            vec![slow_dns, origin_ok(), static_ok(Origin)],
            &strict,
            "our DNS lookup of the site's name takes 1.4 s, over its budget (budget.dns = 1s)",
        ),
        (
            vec![edge_ok(), slow_tls, static_ok(Origin)],
            &strict,
            "the TLS handshake for the origin page takes 1.7 s, over its budget (budget.tls = 500ms)",
        ),
        (
            vec![
                answered(Edge, Page, 200, 3708.0, "cloudflare", "<html>shop</html>"),
                origin_ok(),
                static_ok(Origin),
            ],
            &settings,
            "while the origin answers the page in 35 ms: the time is spent in front of the origin",
        ),
        (
            vec![
                answered(Edge, Page, 200, 3708.0, "nginx/1.22.1", "<html>shop</html>"),
                answered(Edge, Static, 200, 1900.0, "nginx/1.22.1", ".x{}"),
            ],
            &settings,
            "the static file takes 1.9 s too: the host or the network is slow, not PHP alone.",
        ),
    ];
    for (observations, settings, words) in cases {
        let d = diagnose(HOST, &observations, settings);
        assert_eq!(
            (d.status, d.cause),
            (Status::Degraded, Cause::Slow),
            "{d:#?}"
        );
        assert!(d.summary.contains(words), "{words}: {}", d.summary);
    }

    // Slow and a certificate 10 days from expiry: the slowness leads, the certificate stays.
    let mut expiring = slow_php.clone();
    for o in &mut expiring {
        o.tls = Some(tls(10, None));
    }
    let d = diagnose(HOST, &expiring, &settings);
    assert_eq!(
        (d.status, d.cause),
        (Status::Degraded, Cause::OriginSlow),
        "{d:#?}"
    );
    assert!(
        d.summary
            .ends_with("Also, a certificate on the edge route expires in 10 days, on 2026-12-05."),
        "{}",
        d.summary
    );
    assert!(
        d.evidence.iter().any(|l| l.contains("expires in 10 days")),
        "{:#?}",
        d.evidence
    );
}

#[test]
fn causes_that_cannot_be_told_apart_name_their_alternatives() {
    let settings = DiagnoseSettings::default();
    let died = diagnose(
        HOST,
        &[
            answered(Origin, Page, 502, 490.0, "nginx", NGINX_502),
            edge_ok(),
        ],
        &settings,
    );
    assert_eq!(died.cause, Cause::FpmWorkerDied);
    // Its look-alike forms in its summary; "also possible" only for other causes.
    assert!(died.summary.contains("OOM kill"), "{}", died.summary);
    assert!(
        died.alternatives
            .iter()
            .all(|a| a.cause != Cause::FpmWorkerDied)
            && !died.alternatives.is_empty(),
        "{:?}",
        died.alternatives
    );
    assert!(
        died.next_steps.iter().any(|s| s.contains("dmesg")),
        "{:?}",
        died.next_steps
    );

    let unreachable = diagnose(
        HOST,
        &[
            answered(Origin, Page, 502, 0.8, "nginx", NGINX_502),
            static_ok(Origin),
            cf_error(502, "host"),
        ],
        &settings,
    );
    assert!(unreachable
        .next_steps
        .iter()
        .any(|s| s.contains("grep -rn fastcgi_pass")));
    assert!(unreachable
        .next_steps
        .iter()
        .any(|s| s.contains("ls -la /var/run/php/")));
    // What the commands assume is said, with the usual other places.
    let assumed = unreachable.next_steps.last().unwrap();
    for words in [
        "assume Debian/Ubuntu with systemd",
        "/etc/nginx/conf.d/",
        "/var/log/php*-fpm.log",
        "docker logs",
    ] {
        assert!(assumed.contains(words), "{words}: {assumed}");
    }
}

#[test]
fn a_slow_static_file_never_makes_a_healthy_site_down() {
    let settings = DiagnoseSettings::default();
    for ttfb in [2500.0, 9000.0, 60_000.0] {
        let d = diagnose(
            HOST,
            &[
                edge_ok(),
                answered(Edge, Static, 200, ttfb, "cloudflare", ".x{}"),
                origin_ok(),
                static_ok(Origin),
            ],
            &settings,
        );
        assert_eq!(
            (d.status, d.cause),
            (Status::Degraded, Cause::Slow),
            "{ttfb}: {}",
            d.summary
        );
    }
}

#[test]
fn expect_status_decides_what_a_healthy_page_answers() {
    let login =
        |route: Route| answered(route, Page, 401, 30.0, "nginx/1.22.1", "<html>login</html>");
    let moved = |route: Route| answered(route, Page, 301, 30.0, "nginx/1.22.1", "");
    let expecting = |codes: &[u16]| DiagnoseSettings {
        expect_status: codes.to_vec(),
        ..DiagnoseSettings::default()
    };
    // (observations, expected statuses, status, cause, summary contains)
    type ExpectCase = (Vec<Observation>, Vec<u16>, Status, Cause, &'static str);
    let cases: Vec<ExpectCase> = vec![
        // A site behind a login answers 401 on purpose.
        (
            vec![login(Edge), login(Origin)],
            vec![200, 401],
            Status::Ok,
            Cause::Ok,
            "as expected",
        ),
        // Without the expectation the same 401 is a question about the path.
        (
            vec![login(Edge), login(Origin)],
            vec![],
            Status::Degraded,
            Cause::Unknown,
            "is the path right?",
        ),
        // A redirect is healthy by default, but not where only 200 will do.
        (
            vec![moved(Edge), moved(Origin)],
            vec![],
            Status::Ok,
            Cause::Ok,
            "as expected",
        ),
        (
            vec![moved(Edge), moved(Origin)],
            vec![200],
            Status::Degraded,
            Cause::Unknown,
            "answers 301: expected 200",
        ),
        // The expectation is the page's: a static file must still answer below 400.
        (
            vec![
                login(Edge),
                answered(Origin, Static, 404, 1.0, "nginx/1.22.1", ""),
            ],
            vec![401],
            Status::Degraded,
            Cause::Unknown,
            "static answers 404",
        ),
        // Expecting a status never hides a failure.
        (
            vec![
                cf_error(502, "host"),
                answered(Origin, Page, 502, 1.0, "nginx/1.22.1", NGINX_502),
            ],
            vec![200, 502],
            Status::Down,
            Cause::FpmUnreachable,
            "",
        ),
    ];
    for (observations, codes, status, cause, summary) in cases {
        let d = diagnose(HOST, &observations, &expecting(&codes));
        assert_eq!(
            (d.status, d.cause),
            (status, cause),
            "{codes:?}: {}",
            d.summary
        );
        assert!(d.summary.contains(summary), "{codes:?}: {}", d.summary);
    }
}

// ---- the server's own witnesses -----------------------------------------------------------------

use probe::diagnose::diagnose_since;
use probe::observe::witness::{
    FpmCounters, FpmProcess, FpmStatus, NginxCounters, NginxStatus, Witness, WitnessCounters,
};

/// A worker of the pool: `state`, its request `uri` running for `ms`, started `age` s ago.
fn worker(pid: u64, state: &str, uri: &str, ms: f64, age: u64) -> FpmProcess {
    FpmProcess {
        pid,
        state: state.into(),
        start_since: age,
        requests: 10,
        request_duration_ms: ms,
        request_method: "GET".into(),
        request_uri: uri.into(),
        content_length: 0,
        last_request_cpu: 0.0,
        last_request_memory: 0,
    }
}

/// A static pool of `workers`, up for an hour, with `queue` requests waiting.
fn pool(workers: Vec<FpmProcess>, queue: u64) -> FpmStatus {
    let active = workers.iter().filter(|p| p.is_busy()).count() as u64;
    FpmStatus {
        pool: "www".into(),
        process_manager: "static".into(),
        start_time: 1_796_000_000,
        start_since: 3600,
        accepted_conn: 5000,
        listen_queue: queue,
        max_listen_queue: queue,
        listen_queue_len: 511,
        idle_processes: workers.len() as u64 - active,
        active_processes: active,
        total_processes: workers.len() as u64,
        max_active_processes: workers.len() as u64,
        max_children_reached: 30,
        slow_requests: 0,
        processes: workers,
        processes_omitted: 0,
    }
}

fn status_page(role: PathRole, witness: Witness) -> Observation {
    let mut o = answered(Origin, role, 200, 2.0, "nginx/1.22.1", "");
    o.url = format!("https://{HOST}/fpm-status?json&full");
    o.witness = Some(witness);
    o
}

fn fpm_page(status: FpmStatus) -> Observation {
    status_page(PathRole::FpmStatus, Witness::FpmStatus(status))
}

fn healthy_with(extra: Vec<Observation>) -> Vec<Observation> {
    let mut all = vec![edge_ok(), static_ok(Edge), origin_ok(), static_ok(Origin)];
    all.extend(extra);
    all
}

#[test]
fn one_slow_request_holding_a_full_pool_is_named_with_the_playbook_advice() {
    let busy = vec![
        worker(1, "Running", "/wp-admin/export.php", 48_000.0, 3600),
        worker(2, "Running", "/feed/", 900.0, 3600),
        worker(3, "Running", "/", 700.0, 3600),
    ];
    let observations = healthy_with(vec![fpm_page(pool(busy, 11))]);
    let d = diagnose(HOST, &observations, &DiagnoseSettings::default());
    assert_eq!(
        (d.status, d.cause, d.confidence),
        (Status::Degraded, Cause::FpmSaturated, Confidence::High),
        "{d:#?}"
    );
    assert!(
        d.summary.starts_with(
            "One slow request holds a worker: /wp-admin/export.php has been running for 48.0 s"
        ) && d.summary.contains("11 requests wait in its listen queue"),
        "{}",
        d.summary
    );
    assert!(
        d.next_steps[1].contains("background job") && d.next_steps[1].contains("pool of its own"),
        "{:#?}",
        d.next_steps
    );
    assert!(d.alternatives.is_empty());
    // Every worker busy with nobody waiting is said, not judged.
    let busy = vec![worker(1, "Running", "/a", 900.0, 3600)];
    let observations = healthy_with(vec![fpm_page(pool(busy, 0))]);
    let d = diagnose(HOST, &observations, &DiagnoseSettings::default());
    assert_eq!(d.cause, Cause::Ok, "{d:#?}");
    assert!(d
        .evidence
        .iter()
        .any(|l| l.contains("1 worker: 1 busy, 0 idle")));
}

#[test]
fn a_witness_never_overrides_a_hop_in_front_of_the_pool() {
    let full = pool(vec![worker(1, "Running", "/x", 9000.0, 3600)], 40);
    let refused = vec![
        failed(Edge, Page, Phase::Connect, ErrorKind::Refused, 1.0),
        failed(Origin, Page, Phase::Connect, ErrorKind::Refused, 1.0),
        fpm_page(full),
    ];
    let d = diagnose(HOST, &refused, &DiagnoseSettings::default());
    assert_eq!(d.cause, Cause::EdgeUnreachable, "{d:#?}");
    assert!(d.evidence.iter().any(|l| l.contains("listen queue 40")));
}

#[test]
fn php_fpm_answering_while_nginx_cannot_reach_it_points_at_fastcgi_pass() {
    let idle = pool(vec![worker(1, "Idle", "/", 30.0, 3600)], 0);
    let observations = vec![
        answered(Edge, Page, 502, 1.2, "nginx/1.22.1", NGINX_502),
        static_ok(Edge),
        answered(Origin, Page, 502, 1.0, "nginx/1.22.1", NGINX_502),
        static_ok(Origin),
        fpm_page(idle),
    ];
    let d = diagnose(HOST, &observations, &DiagnoseSettings::default());
    assert_eq!(
        (d.cause, d.confidence),
        (Cause::FpmUnreachable, Confidence::High)
    );
    assert!(
        d.summary.contains(
            "PHP-FPM itself runs: pool www answers its status page, 1 worker: 0 busy, 1 idle. So nginx is not talking to it: the socket that fastcgi_pass names for the pages is not the one PHP-FPM listens on"
        ),
        "{}",
        d.summary
    );
    // The pool runs: "whether PHP-FPM is stopped" would contradict it, and an idle pool has no
    // full backlog to list as also possible.
    assert!(!d.summary.contains("is stopped"), "{}", d.summary);
    assert!(d.alternatives.is_empty(), "{:#?}", d.alternatives);
    assert!(
        d.next_steps[0].contains("grep -rn '^listen' /etc/php/*/fpm/pool.d/"),
        "{:#?}",
        d.next_steps
    );
    // Every worker busy: a full listen backlog answers the same instant 502, so the socket is
    // not proved wrong, the alternative stays; PHP-FPM still runs, so it is not "stopped".
    let full = pool(vec![worker(1, "Running", "/export", 9000.0, 3600)], 0);
    let mut busy = observations.clone();
    busy[4] = fpm_page(full);
    let d = diagnose(HOST, &busy, &DiagnoseSettings::default());
    assert_eq!(d.cause, Cause::FpmUnreachable, "{d:#?}");
    assert!(
        d.summary.contains("or at a full listen backlog") && !d.summary.contains("is stopped"),
        "{}",
        d.summary
    );
    assert!(
        d.alternatives
            .iter()
            .any(|a| a.cause == Cause::FpmSaturated),
        "{:#?}",
        d.alternatives
    );
}

/// The worker answering our own status read is free again as soon as the page is sent: it is
/// never counted busy, the pool keeps its real size, and a slow page beside it is not a full
/// pool.
#[test]
fn the_worker_serving_our_status_read_never_makes_the_pool_look_full() {
    // A pool of 3: two workers busy with others' requests, the third answering our read.
    let ours = worker(3, "Running", "/fpm-status", 1.0, 3600);
    let status = pool(
        vec![
            worker(1, "Running", "/feed/", 900.0, 3600),
            worker(2, "Running", "/shop/", 700.0, 3600),
            ours,
        ],
        0,
    );
    assert_eq!((status.idle_processes, status.total_processes), (0, 3));
    let slow_page = answered(
        Origin,
        Page,
        200,
        3694.0,
        "nginx/1.22.1",
        "<html>shop</html>",
    );
    let observations = vec![
        edge_ok(),
        static_ok(Edge),
        slow_page,
        answered(Origin, Static, 200, 0.9, "nginx/1.22.1", ".dashicons{}"),
        fpm_page(status),
    ];
    let d = diagnose(HOST, &observations, &DiagnoseSettings::default());
    // The page is PHP's own slowness; with no worker free besides ours, a queue behind our own
    // edge request is not ruled out: it stays listed.
    assert_eq!(
        (d.status, d.hop, d.cause),
        (Status::Degraded, Hop::OriginFpm, Cause::OriginSlow),
        "{d:#?}"
    );
    assert!(!d.summary.contains("no free worker"), "{}", d.summary);
    assert!(
        d.alternatives
            .iter()
            .any(|a| a.cause == Cause::FpmSaturated),
        "{:#?}",
        d.alternatives
    );
    let lines: Vec<&String> = d
        .evidence
        .iter()
        .filter(|l| l.contains(" workers: "))
        .collect();
    assert_eq!(lines.len(), 1, "{:#?}", d.evidence);
    assert!(
        lines[0].starts_with(
            "PHP-FPM pool www: 3 workers: 2 busy, 0 idle, 1 answering this status read"
        ),
        "{}",
        lines[0]
    );
    // Read through a status pool of its own (`pm.status_listen`), the same three busy workers
    // are a full pool: our slow page waited for one of them.
    let full = pool(
        vec![
            worker(1, "Running", "/feed/", 900.0, 3600),
            worker(2, "Running", "/shop/", 700.0, 3600),
            worker(3, "Running", "/cart/", 600.0, 3600),
        ],
        0,
    );
    let mut separate = observations.clone();
    separate[4] = fpm_page(full);
    let d = diagnose(HOST, &separate, &DiagnoseSettings::default());
    assert_eq!(
        (d.cause, d.confidence),
        (Cause::FpmSaturated, Confidence::High),
        "{d:#?}"
    );
    assert!(
        d.summary
            .contains("no free worker (3 workers: 3 busy, 0 idle) and our page waited for one"),
        "{}",
        d.summary
    );
}

#[test]
fn workers_replaced_lately_are_said_beside_a_worker_death() {
    let replaced = pool(
        vec![
            worker(1, "Idle", "/", 30.0, 4),
            worker(2, "Idle", "/", 30.0, 3600),
        ],
        0,
    );
    let observations = vec![
        answered(Edge, Page, 502, 800.0, "nginx/1.22.1", NGINX_502),
        static_ok(Edge),
        answered(Origin, Page, 502, 790.0, "nginx/1.22.1", NGINX_502),
        static_ok(Origin),
        fpm_page(replaced),
    ];
    let d = diagnose(HOST, &observations, &DiagnoseSettings::default());
    // Said, not proved: pm.max_requests recycles workers too.
    assert_eq!(
        (d.cause, d.confidence),
        (Cause::FpmWorkerDied, Confidence::Medium),
        "{d:#?}"
    );
    assert!(
        d.summary
            .contains("PHP-FPM's own status: 1 of its workers started in the last minute"),
        "{}",
        d.summary
    );
}

#[test]
fn what_changed_since_the_last_read_is_judged_with_history() {
    let now = pool(vec![worker(1, "Idle", "/", 30.0, 3600)], 0);
    let nginx = NginxStatus {
        active: 3,
        reading: 0,
        writing: 1,
        waiting: 2,
        accepts: 1000,
        handled: 990,
        requests: 3000,
    };
    let observations = healthy_with(vec![
        fpm_page(now.clone()),
        status_page(PathRole::NginxStatus, Witness::NginxStatus(nginx.clone())),
    ]);
    let before = |reached: u64, start: i64| {
        vec![WitnessCounters {
            origin: ORIGIN.into(),
            fpm: Some(FpmCounters {
                at: 1_796_000_000 + 3000,
                start_time: start,
                accepted_conn: 4000,
                max_children_reached: reached,
            }),
            nginx: Some(NginxCounters {
                at: 1_796_000_000 + 3000,
                accepts: 900,
                handled: 896,
            }),
        }]
    };
    let settings = DiagnoseSettings::default();
    // Without history, a healthy run.
    assert_eq!(diagnose(HOST, &observations, &settings).cause, Cause::Ok);
    // The pool hit pm.max_children 7 times since: saturation, over now.
    let d = diagnose_since(HOST, &observations, &settings, &before(23, now.start_time));
    assert_eq!(
        (d.status, d.cause, d.confidence),
        (Status::Degraded, Cause::FpmSaturated, Confidence::Medium),
        "{d:#?}"
    );
    assert!(
        d.evidence
            .iter()
            .any(|l| l.contains("max children reached 30 (+7 since 01:43)")),
        "{:#?}",
        d.evidence
    );
    assert!(
        d.evidence
            .iter()
            .any(|l| l.contains("6 connections dropped since 01:43")),
        "{:#?}",
        d.evidence
    );
    // Nothing more reached, but the pool's start time moved: a restart, said and not judged.
    let d = diagnose_since(
        HOST,
        &observations,
        &settings,
        &before(30, now.start_time - 60),
    );
    assert_eq!(d.cause, Cause::Ok);
    assert!(
        d.evidence
            .iter()
            .any(|l| l.starts_with("PHP-FPM restarted since its status was last read, at 01:43")),
        "{:#?}",
        d.evidence
    );
}

#[test]
fn history_of_another_origin_or_below_an_outside_verdict_never_weakens_it() {
    let now = pool(vec![worker(1, "Idle", "/", 30.0, 3600)], 0);
    let counters = |origin: &str| {
        vec![WitnessCounters {
            origin: origin.into(),
            fpm: Some(FpmCounters {
                at: 1_796_003_000,
                start_time: now.start_time,
                accepted_conn: 4000,
                max_children_reached: 20,
            }),
            nginx: None,
        }]
    };
    let settings = DiagnoseSettings::default();
    // Counters read on another origin say nothing of this one.
    let healthy = healthy_with(vec![fpm_page(now.clone())]);
    let d = diagnose_since(HOST, &healthy, &settings, &counters("198.51.100.9:443"));
    assert_eq!(d.cause, Cause::Ok, "{d:#?}");
    // Fast 502s beside answered requests (a full backlog, shown from outside): the pool's
    // counters since the last run add their sentence and keep the confidence.
    let backlog = vec![
        edge_ok(),
        static_ok(Edge),
        answered(Origin, Page, 502, 1.0, "nginx/1.22.1", NGINX_502),
        origin_ok(),
        static_ok(Origin),
        fpm_page(now.clone()),
    ];
    let outside = diagnose(HOST, &backlog, &settings);
    let d = diagnose_since(HOST, &backlog, &settings, &counters(ORIGIN));
    assert_eq!(outside.cause, Cause::FpmSaturated, "{outside:#?}");
    assert_eq!((d.cause, d.confidence), (outside.cause, outside.confidence));
    assert!(
        d.summary.starts_with(&outside.summary)
            && d.summary.contains("ran out of workers since the last run"),
        "{}",
        d.summary
    );
    assert_eq!(d.alternatives, outside.alternatives);
}

#[test]
fn a_hung_status_page_beside_a_page_failing_at_once_is_not_saturation() {
    let mut hung = observation(Origin, PathRole::FpmStatus);
    hung.url = format!("https://{HOST}/fpm-status?json&full");
    hung.error = Some(ObservedError {
        phase: Phase::Headers,
        kind: ErrorKind::Timeout,
        message: "no response headers before the deadline".into(),
    });
    hung.timings_ms.total = 10_000.0;
    let observations = vec![
        answered(Edge, Page, 502, 1.2, "nginx/1.22.1", NGINX_502),
        static_ok(Edge),
        answered(Origin, Page, 502, 1.0, "nginx/1.22.1", NGINX_502),
        static_ok(Origin),
        hung,
    ];
    let d = diagnose(HOST, &observations, &DiagnoseSettings::default());
    assert_eq!(d.cause, Cause::FpmUnreachable, "{d:#?}");
    assert!(
        d.evidence
            .iter()
            .any(|l| l.contains("unavailable: no answer within 10.0 s")),
        "{:#?}",
        d.evidence
    );
}

#[test]
fn the_busiest_workers_are_named_whatever_order_a_saved_report_lists_them_in() {
    let busy = vec![
        worker(1, "Running", "/", 700.0, 3600),
        worker(2, "Running", "/wp-admin/export.php", 48_000.0, 3600),
    ];
    let d = diagnose(
        HOST,
        &healthy_with(vec![fpm_page(pool(busy, 2))]),
        &DiagnoseSettings::default(),
    );
    assert!(
        d.summary
            .starts_with("One slow request holds a worker: /wp-admin/export.php"),
        "{}",
        d.summary
    );
}
