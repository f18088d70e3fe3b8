//! Who produced a response: the Cloudflare edge (its branded page, its plain nginx-style page, its
//! RFC 9457 JSON), the origin web server's stock error page (nginx, Apache, LiteSpeed), or
//! WordPress (database error, critical error, maintenance). Pure functions over response facts.
//!
//! Page text can be forged, so a response counts as Cloudflare's only when its headers say it
//! came through Cloudflare (`server: cloudflare` or a `cf-ray`).

use crate::observe::ResponseFacts;

/// Which of the three boxes of Cloudflare's branded error page is marked as the failing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudflareBox {
    /// The visitor's browser.
    Browser,
    /// Cloudflare itself.
    Cloudflare,
    /// The origin host.
    Host,
}

/// What generated a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generator {
    /// Cloudflare's branded error page ("Error code 522", the three status boxes).
    CloudflareBranded {
        /// The error code the page names (5xx or 1xxx), when found.
        code: Option<u16>,
        error_source: Option<CloudflareBox>,
    },
    /// Cloudflare's own plain page (`<center>cloudflare</center>`): Cloudflare itself failed.
    CloudflarePlain,
    /// Cloudflare's RFC 9457 JSON error (asked for with `Accept: application/json`).
    CloudflareJson { code: Option<u16> },
    /// nginx's built-in error page.
    NginxStock,
    /// nginx's 400 "The plain HTTP request was sent to HTTPS port": plain HTTP reached a port
    /// where nginx speaks TLS (`listen … ssl`).
    NginxPlainHttpToTls,
    /// Apache's built-in error page.
    ApacheStock,
    /// LiteSpeed's built-in error page.
    LiteSpeedStock,
    /// Apache mod_proxy's "Proxy Error" page (502: an invalid answer from its upstream).
    ApacheProxyError,
    /// Envoy's plain-text "upstream connect error or disconnect/reset before headers".
    EnvoyStock,
    /// Traefik's plain-text "Bad Gateway" / "Gateway Timeout" (no Server header).
    TraefikStock,
    /// Caddy's reverse proxy failing: an empty 502 or 504 with `Server: Caddy`.
    CaddyStock,
    /// WordPress could not reach its database.
    WordPressDatabaseError,
    /// WordPress's fatal-error handler page.
    WordPressCriticalError,
    /// WordPress maintenance mode (503 with Retry-After).
    WordPressMaintenance,
    /// Something else: the site's own content or an unknown page.
    Unrecognised,
}

impl Generator {
    pub fn is_cloudflare(&self) -> bool {
        matches!(
            self,
            Generator::CloudflareBranded { .. }
                | Generator::CloudflarePlain
                | Generator::CloudflareJson { .. }
        )
    }

    /// A short phrase for evidence lines.
    pub fn describe(&self) -> String {
        match self {
            Generator::CloudflareBranded { code, error_source } => {
                let code = code.map(|c| format!(" {c}")).unwrap_or_default();
                let source = match error_source {
                    Some(CloudflareBox::Host) => ", host box = error",
                    Some(CloudflareBox::Cloudflare) => ", Cloudflare box = error",
                    Some(CloudflareBox::Browser) => ", browser box = error",
                    None => "",
                };
                format!("Cloudflare branded error page{code}{source}")
            }
            Generator::CloudflarePlain => "Cloudflare's own plain error page".into(),
            Generator::CloudflareJson { code } => match code {
                Some(c) => format!("Cloudflare JSON error {c}"),
                None => "Cloudflare JSON error".into(),
            },
            Generator::NginxStock => "stock nginx page".into(),
            Generator::NginxPlainHttpToTls => {
                "nginx's page \"The plain HTTP request was sent to HTTPS port\"".into()
            }
            Generator::ApacheStock => "stock Apache page".into(),
            Generator::LiteSpeedStock => "stock LiteSpeed page".into(),
            Generator::ApacheProxyError => "Apache mod_proxy error page".into(),
            Generator::EnvoyStock => "Envoy's upstream error text".into(),
            Generator::TraefikStock => "Traefik's plain error text".into(),
            Generator::CaddyStock => "Caddy's empty error answer".into(),
            Generator::WordPressDatabaseError => "WordPress database error page".into(),
            Generator::WordPressCriticalError => "WordPress critical error page".into(),
            Generator::WordPressMaintenance => "WordPress maintenance page".into(),
            Generator::Unrecognised => "page not recognised".into(),
        }
    }
}

/// The response came through Cloudflare's edge, by its headers.
pub fn via_cloudflare(response: &ResponseFacts) -> bool {
    let server = response
        .headers
        .server
        .as_deref()
        .unwrap_or("")
        .to_ascii_lowercase();
    server.starts_with("cloudflare") || response.headers.cf_ray.is_some()
}

/// The edge generated this error itself: its own page or JSON, or a status only Cloudflare uses
/// (520–530), which stands even when the page is not one we know.
pub fn made_by_cloudflare(response: &ResponseFacts) -> bool {
    via_cloudflare(response)
        && response.status >= 500
        && (generator(response).is_cloudflare() || (520..=530).contains(&response.status))
}

/// Decides who generated `response`.
pub fn generator(response: &ResponseFacts) -> Generator {
    let body = response.body_excerpt.as_str();
    let lower = body.to_ascii_lowercase();
    if via_cloudflare(response) {
        if let Some(code) = cloudflare_json(response) {
            return Generator::CloudflareJson { code };
        }
        if is_cloudflare_branded(&lower) {
            return Generator::CloudflareBranded {
                code: branded_code(&lower),
                error_source: error_source(&lower),
            };
        }
        if response.status >= 500 && lower.contains("<center>cloudflare</center>") {
            return Generator::CloudflarePlain;
        }
    }
    // WordPress first: its pages may also carry the server's name.
    if lower.contains("error establishing a database connection") {
        return Generator::WordPressDatabaseError;
    }
    if lower.contains("there has been a critical error on") {
        return Generator::WordPressCriticalError;
    }
    if response.status == 503 && lower.contains("briefly unavailable for scheduled maintenance") {
        return Generator::WordPressMaintenance;
    }
    if response.status >= 400 {
        // Its own 400 page (measured on nginx 1.22), before the generic stock page it also is.
        if response.status == 400 && lower.contains("the plain http request was sent to https port")
        {
            return Generator::NginxPlainHttpToTls;
        }
        if lower.contains("<center>nginx") {
            return Generator::NginxStock;
        }
        if lower.contains("<title>502 proxy error</title>")
            || lower.contains("the proxy server received an invalid")
        {
            return Generator::ApacheProxyError;
        }
        if lower.contains("upstream connect error or disconnect/reset before headers")
            || (server_is(response, "envoy") && lower.starts_with("upstream"))
        {
            return Generator::EnvoyStock;
        }
        if server_is(response, "caddy") && body.trim().is_empty() {
            return Generator::CaddyStock;
        }
        // Traefik answers with the bare reason phrase as text/plain and sends no Server header.
        if response.headers.server.is_none()
            && matches!(
                body.trim(),
                "Bad Gateway" | "Gateway Timeout" | "Service Unavailable"
            )
        {
            return Generator::TraefikStock;
        }
        if lower.contains("<address>apache")
            || (lower.contains("<title>") && lower.contains("apache/2"))
        {
            return Generator::ApacheStock;
        }
        if lower.contains("litespeed web server") {
            return Generator::LiteSpeedStock;
        }
    }
    Generator::Unrecognised
}

fn server_is(response: &ResponseFacts, name: &str) -> bool {
    response
        .headers
        .server
        .as_deref()
        .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with(name))
}

/// The web server or proxy that answered on the origin's side, by its page or its `Server`
/// header: the one whose upstream a 502 or 504 is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    Nginx,
    Apache,
    Envoy,
    Traefik,
    Caddy,
    LiteSpeed,
    /// Not recognised; the `Server` header, if any.
    Other(Option<String>),
}

impl Proxy {
    /// Its name in a sentence.
    pub fn name(&self) -> String {
        match self {
            Proxy::Nginx => "nginx".into(),
            Proxy::Apache => "Apache".into(),
            Proxy::Envoy => "Envoy".into(),
            Proxy::Traefik => "Traefik".into(),
            Proxy::Caddy => "Caddy".into(),
            Proxy::LiteSpeed => "LiteSpeed".into(),
            Proxy::Other(Some(server)) => format!("the origin's web server ({server})"),
            Proxy::Other(None) => "the origin's web server".into(),
        }
    }
}

/// Which proxy answered `response` (its own error page first, then its `Server` header).
pub fn proxy(response: &ResponseFacts) -> Proxy {
    match generator(response) {
        Generator::NginxStock | Generator::NginxPlainHttpToTls => return Proxy::Nginx,
        Generator::ApacheStock | Generator::ApacheProxyError => return Proxy::Apache,
        Generator::EnvoyStock => return Proxy::Envoy,
        Generator::TraefikStock => return Proxy::Traefik,
        Generator::CaddyStock => return Proxy::Caddy,
        Generator::LiteSpeedStock => return Proxy::LiteSpeed,
        _ => {}
    }
    let known = [
        ("nginx", Proxy::Nginx),
        ("apache", Proxy::Apache),
        ("envoy", Proxy::Envoy),
        ("traefik", Proxy::Traefik),
        ("caddy", Proxy::Caddy),
        ("litespeed", Proxy::LiteSpeed),
    ];
    for (name, proxy) in known {
        if server_is(response, name) {
            return proxy;
        }
    }
    Proxy::Other(response.headers.server.clone())
}

fn is_cloudflare_branded(lower: &str) -> bool {
    [
        "cf-error-details",
        "cf-wrapper",
        "cf-error-code",
        "cloudflare ray id",
        "cf.errors.css",
    ]
    .iter()
    .any(|marker| lower.contains(marker))
}

/// The error code a branded page names: "Error code 522", `<span class="cf-error-code">522`,
/// or "Error 1016".
fn branded_code(lower: &str) -> Option<u16> {
    for marker in ["error code ", "class=\"cf-error-code\">", "error "] {
        let mut rest = lower;
        while let Some(at) = rest.find(marker) {
            rest = &rest[at + marker.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if (3..=4).contains(&digits.len()) {
                if let Ok(code) = digits.parse() {
                    return Some(code);
                }
            }
        }
    }
    None
}

/// Which status box carries the `cf-error-source` class.
fn error_source(lower: &str) -> Option<CloudflareBox> {
    let boxes = [
        ("cf-browser-status", CloudflareBox::Browser),
        ("cf-cloudflare-status", CloudflareBox::Cloudflare),
        ("cf-host-status", CloudflareBox::Host),
    ];
    // The class sits in the opening tag of the box's element.
    for (id, which) in boxes {
        let Some(at) = lower.find(&format!("id=\"{id}\"")) else {
            continue;
        };
        let tag_start = lower[..at].rfind('<').unwrap_or(at);
        let tag_end = lower[at..].find('>').map_or(lower.len(), |e| at + e);
        if lower[tag_start..tag_end].contains("cf-error-source") {
            return Some(which);
        }
    }
    None
}

/// The error code of a Cloudflare RFC 9457 JSON error, when the body is one.
fn cloudflare_json(response: &ResponseFacts) -> Option<Option<u16>> {
    let content_type = response.headers.content_type.as_deref().unwrap_or("");
    if !content_type.contains("json") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(&response.body_excerpt).ok()?;
    if value.get("cloudflare_error").and_then(|v| v.as_bool()) != Some(true) {
        return None;
    }
    Some(
        value
            .get("error_code")
            .and_then(|v| v.as_u64())
            .and_then(|c| u16::try_from(c).ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ResponseHeaders;

    fn response(status: u16, server: &str, cf_ray: bool, body: &str) -> ResponseFacts {
        ResponseFacts {
            status,
            http_version: "HTTP/2".into(),
            headers: ResponseHeaders {
                server: Some(server.into()),
                cf_ray: cf_ray.then(|| "8f1c2d3e4f5a6b7c-LHR".into()),
                content_type: Some("text/html".into()),
                ..ResponseHeaders::default()
            },
            body_excerpt: body.into(),
            body_bytes: body.len() as u64,
            body_complete: true,
            body_read_limit_hit: false,
        }
    }

    const BRANDED_502_HOST: &str = r#"<div id="cf-wrapper"><div id="cf-error-details">
        <h1><span class="inline-block">Bad gateway</span><span class="code-label">Error code 502</span></h1>
        <div id="cf-browser-status" class="cf-column cf-status-item cf-browser-status">ok</div>
        <div id="cf-cloudflare-status" class="cf-column cf-status-item">Working</div>
        <div id="cf-host-status" class="cf-column cf-status-item cf-error-source">Host Error</div>
        </div><span>Cloudflare Ray ID: <strong>8f1c2d3e4f5a6b7c</strong></span></div>"#;

    #[test]
    fn cloudflare_pages() {
        let cases = [
            (
                response(502, "cloudflare", true, BRANDED_502_HOST),
                Generator::CloudflareBranded { code: Some(502), error_source: Some(CloudflareBox::Host) },
            ),
            (
                response(522, "cloudflare", true, &BRANDED_502_HOST.replace("502", "522")),
                Generator::CloudflareBranded { code: Some(522), error_source: Some(CloudflareBox::Host) },
            ),
            (
                response(
                    502,
                    "cloudflare",
                    true,
                    &BRANDED_502_HOST
                        .replace(" cf-error-source\">Host", "\">Host")
                        .replace("cf-status-item\">Working", "cf-status-item cf-error-source\">Error"),
                ),
                Generator::CloudflareBranded { code: Some(502), error_source: Some(CloudflareBox::Cloudflare) },
            ),
            (
                response(530, "cloudflare", true, "<title>Origin DNS error | example.com | Cloudflare</title><span class=\"cf-error-code\">1016</span>"),
                Generator::CloudflareBranded { code: Some(1016), error_source: None },
            ),
            (
                response(502, "cloudflare", true, "<html><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></html>"),
                Generator::CloudflarePlain,
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(generator(&r), expected, "{}", r.body_excerpt);
        }
    }

    #[test]
    fn cloudflare_json_errors() {
        let mut r = response(
            522,
            "cloudflare",
            true,
            r#"{"cloudflare_error":true,"error_code":522,"error_category":"origin","retryable":true}"#,
        );
        r.headers.content_type = Some("application/json".into());
        assert_eq!(generator(&r), Generator::CloudflareJson { code: Some(522) });
    }

    #[test]
    fn a_forged_cloudflare_page_without_cloudflare_headers_is_not_cloudflare() {
        let r = response(502, "nginx", false, BRANDED_502_HOST);
        assert!(!generator(&r).is_cloudflare());
    }

    /// Apache 2.4 mod_proxy's 502 page, as httpd's own error document writes it.
    const APACHE_PROXY_502: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>502 Proxy Error</title>\n</head><body>\n<h1>Proxy Error</h1>\n<p>The proxy server received an invalid\r\nresponse from an upstream server.<br />\r\nThe proxy server could not handle the request<p>Reason: <strong>Error reading from remote server</strong></p></p>\n<hr>\n<address>Apache/2.4.57 (Debian) Server at example.com Port 443</address>\n</body></html>\n";
    /// Envoy's local reply when it cannot connect to its upstream cluster.
    const ENVOY_503: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: 111";

    #[test]
    fn proxies_are_told_apart() {
        let mut traefik = response(502, "", false, "Bad Gateway");
        traefik.headers.server = None;
        traefik.headers.content_type = Some("text/plain; charset=utf-8".into());
        let cases = [
            (
                response(502, "nginx/1.22.1", false, "<center>nginx</center>"),
                Proxy::Nginx,
            ),
            (
                response(502, "Apache/2.4.57 (Debian)", false, APACHE_PROXY_502),
                Proxy::Apache,
            ),
            (response(503, "envoy", false, ENVOY_503), Proxy::Envoy),
            (traefik, Proxy::Traefik),
            (response(502, "Caddy", false, ""), Proxy::Caddy),
            (
                response(502, "gunicorn", false, "oops"),
                Proxy::Other(Some("gunicorn".into())),
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(
                proxy(&r),
                expected,
                "{:?} {}",
                r.headers.server,
                r.body_excerpt
            );
        }
    }

    const NGINX_PLAIN_HTTP_TO_TLS: &str = "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";

    #[test]
    fn origin_and_application_pages() {
        let nginx_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";
        let cases = [
            (response(502, "nginx/1.22.1", false, nginx_502), Generator::NginxStock),
            (response(504, "nginx", false, "<center><h1>504 Gateway Time-out</h1></center><hr><center>nginx</center>"), Generator::NginxStock),
            (response(503, "Apache", false, "<h1>Service Unavailable</h1><hr><address>Apache/2.4.57 (Debian) Server at example.com Port 443</address>"), Generator::ApacheStock),
            (response(500, "nginx", false, "<title>Database Error</title><h1>Error establishing a database connection</h1>"), Generator::WordPressDatabaseError),
            (response(500, "nginx", false, "<p>There has been a critical error on this website.</p>"), Generator::WordPressCriticalError),
            (response(503, "nginx", false, "Briefly unavailable for scheduled maintenance. Check back in a minute."), Generator::WordPressMaintenance),
            (response(200, "nginx", false, "<h1>hello</h1>"), Generator::Unrecognised),
            (response(502, "Apache/2.4.57 (Debian)", false, APACHE_PROXY_502), Generator::ApacheProxyError),
            (response(503, "envoy", false, ENVOY_503), Generator::EnvoyStock),
            (response(502, "Caddy", false, ""), Generator::CaddyStock),
            // As nginx 1.22 answered plain HTTP on its TLS port in the lab.
            (response(400, "nginx/1.22.1", false, NGINX_PLAIN_HTTP_TO_TLS), Generator::NginxPlainHttpToTls),
            // Through Cloudflare, the origin's own page passes unchanged.
            (response(500, "cloudflare", true, "<h1>Error establishing a database connection</h1>"), Generator::WordPressDatabaseError),
        ];
        for (r, expected) in cases {
            assert_eq!(generator(&r), expected, "{}", r.body_excerpt);
        }
    }
}
