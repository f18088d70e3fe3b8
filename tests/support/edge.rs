//! A Cloudflare-faithful edge, in process: the one stand-in the lab allows, since no real
//! Cloudflare is reachable from here. It behaves as Cloudflare documents (FACTS.md):
//! `server: cloudflare` and a `cf-ray` on every answer; 521 when the origin refuses, 522 when the
//! connection times out, 523 when unreachable, 524 when the origin sends no answer in time, 520
//! for an empty or broken reply, 525 when the TLS handshake fails, 526 when Full (strict) refuses
//! the certificate; the branded error page with the failing box marked (the host for all of
//! those, and for an origin's own 502/504); and RFC 9457 JSON instead when the request accepts
//! `application/json`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use probe::engine::resolve::{DnsClient, Nameserver};

use super::pki::{Leaf, SITE};
use super::servers::{tls_acceptor, Alpn, TestServer};

/// Cloudflare's SSL modes for the edge → origin leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// TLS, certificate not checked: only a failed handshake (525) stops it.
    Full,
    /// TLS, certificate must be valid for the name and issued by a trusted CA (else 526).
    Strict,
    /// Plain HTTP to the origin, whatever its port speaks.
    Flexible,
}

/// Where the edge finds the origin, as a Cloudflare DNS record would say.
#[derive(Clone, Debug)]
pub enum OriginTarget {
    /// An A record: the address itself. A blocked path is modelled by an address that refuses or
    /// drops the edge.
    Address(SocketAddr),
    /// A CNAME to a host name the edge resolves (with `resolver`) before connecting to `port`.
    Name {
        name: String,
        port: u16,
        resolver: SocketAddr,
    },
}

/// How the edge reaches the origin.
#[derive(Clone, Debug)]
pub struct EdgeSettings {
    pub origin: OriginTarget,
    pub mode: SslMode,
    /// CA certificates Full (strict) trusts (the test CA stands in for the public ones).
    pub trusted: Vec<CertificateDer<'static>>,
    /// Cloudflare waits ~19 s for a SYN-ACK; the lab waits less.
    pub connect_timeout: Duration,
    /// Cloudflare waits 100 s for the origin's answer; the lab waits less.
    pub response_timeout: Duration,
    /// The edge itself fails (Cloudflare's own plain 502), whatever the origin does.
    pub fails_itself: bool,
}

/// Cloudflare's own 502, in the plain style of nginx, when Cloudflare itself fails.
const PLAIN_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n";

/// Starts the edge on 127.0.0.1 with `leaf` as the certificate visitors get.
pub async fn cloudflare_edge(leaf: &Leaf, settings: EdgeSettings) -> TestServer {
    let acceptor = tls_acceptor(leaf, Alpn::H2AndHttp11);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Arc::new(settings);
    let rays = Arc::new(AtomicU64::new(0x8f1c_2d3e_4f5a_0000));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, settings, rays) = (acceptor.clone(), settings.clone(), rays.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request: Request<Incoming>| {
                    let (settings, rays) = (settings.clone(), rays.clone());
                    async move {
                        let ray = format!("{:016x}", rays.fetch_add(1, Ordering::Relaxed));
                        Ok::<_, Infallible>(answer(&settings, request, &ray).await)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TestServer { addr, task }
}

/// What the origin leg produced.
enum OriginOutcome {
    Answered(Response<Bytes>),
    /// Cloudflare's error code for what it met (1016: the origin's name does not resolve).
    Failed(u16),
    /// The edge itself failed.
    EdgeFailed,
}

async fn answer(
    settings: &EdgeSettings,
    request: Request<Incoming>,
    ray: &str,
) -> Response<Full<Bytes>> {
    let wants_json = request
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let path = request
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let outcome = if settings.fails_itself {
        OriginOutcome::EdgeFailed
    } else {
        fetch_from_origin(settings, &path).await
    };
    let (status, body, content_type) = match outcome {
        OriginOutcome::Answered(response) if matches!(response.status().as_u16(), 502 | 504) => {
            // The origin's own gateway error: Cloudflare shows its branded page, host marked.
            let code = response.status().as_u16();
            error_body(code, wants_json, ray)
        }
        OriginOutcome::Answered(response) => {
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/html")
                .to_string();
            (status, response.into_body(), content_type)
        }
        OriginOutcome::Failed(code) => error_body(code, wants_json, ray),
        OriginOutcome::EdgeFailed if wants_json => {
            let doc = problem_json(502, "bad_gateway", "Bad gateway", "cloudflare", ray);
            (502, doc, "application/problem+json".into())
        }
        OriginOutcome::EdgeFailed => (
            502,
            Bytes::from_static(PLAIN_502.as_bytes()),
            "text/html".into(),
        ),
    };
    let mut builder = Response::builder()
        .status(status)
        .header("server", "cloudflare")
        .header("cf-ray", format!("{ray}-LHR"))
        .header("cf-cache-status", "DYNAMIC")
        .header("content-type", content_type);
    if status >= 520 && retryable(status) {
        builder = builder.header("retry-after", "30");
    }
    builder.body(Full::new(body)).unwrap()
}

/// The edge → origin leg: TCP, TLS as the SSL mode says, one HTTP/1.1 request.
async fn fetch_from_origin(settings: &EdgeSettings, path: &str) -> OriginOutcome {
    let address = match &settings.origin {
        OriginTarget::Address(address) => *address,
        OriginTarget::Name {
            name,
            port,
            resolver,
        } => {
            let dns = DnsClient::new(Nameserver::At(*resolver), Duration::from_secs(2)).unwrap();
            let resolution = dns.resolve(name).await;
            match resolution.a.addresses.first() {
                Some(ip) => SocketAddr::new(*ip, *port),
                None => return OriginOutcome::Failed(1016),
            }
        }
    };
    let tcp =
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(address)).await {
            Err(_) => return OriginOutcome::Failed(522),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return OriginOutcome::Failed(521)
            }
            Ok(Err(_)) => return OriginOutcome::Failed(523),
            Ok(Ok(tcp)) => tcp,
        };
    // As Cloudflare's proxies do: no Nagle delay on small writes (40 ms stalls otherwise).
    let _ = tcp.set_nodelay(true);
    if settings.mode == SslMode::Flexible {
        return exchange(settings, tcp, path, "http").await;
    }
    let verifier = Arc::new(ModeVerifier::new(settings));
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(SITE).unwrap();
    let handshake = TlsConnector::from(Arc::new(config)).connect(name, tcp);
    let tls = match tokio::time::timeout(settings.response_timeout, handshake).await {
        Err(_) => return OriginOutcome::Failed(525),
        Ok(Err(e)) => {
            let refused_certificate = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
            return OriginOutcome::Failed(if refused_certificate { 526 } else { 525 });
        }
        Ok(Ok(tls)) => tls,
    };
    exchange(settings, tls, path, "https").await
}

/// One HTTP/1.1 request to the origin over `io` (TLS, or plain TCP in Flexible mode).
async fn exchange<IO>(settings: &EdgeSettings, io: IO, path: &str, proto: &str) -> OriginOutcome
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .ok()?;
        tokio::spawn(conn);
        let request = Request::builder()
            .uri(path)
            .header("host", SITE)
            .header("x-forwarded-proto", proto)
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, 4 * 1024 * 1024)
            .collect()
            .await
            .ok()?
            .to_bytes();
        Some(Response::from_parts(parts, body))
    };
    match tokio::time::timeout(settings.response_timeout, exchange).await {
        Err(_) => OriginOutcome::Failed(524),
        Ok(None) => OriginOutcome::Failed(520),
        Ok(Some(response)) => OriginOutcome::Answered(response),
    }
}

fn retryable(code: u16) -> bool {
    matches!(code, 502 | 504 | 520 | 521 | 522 | 523 | 524)
}

fn error_name(code: u16) -> (&'static str, &'static str, &'static str) {
    match code {
        502 => ("bad_gateway", "Bad gateway", "origin"),
        504 => ("gateway_timeout", "Gateway time-out", "origin"),
        520 => (
            "web_server_returned_unknown_error",
            "Web server is returning an unknown error",
            "origin",
        ),
        521 => ("web_server_is_down", "Web server is down", "origin"),
        522 => ("connection_timed_out", "Connection timed out", "origin"),
        523 => ("origin_is_unreachable", "Origin is unreachable", "origin"),
        524 => ("a_timeout_occurred", "A timeout occurred", "origin"),
        525 => ("ssl_handshake_failed", "SSL handshake failed", "ssl"),
        526 => ("invalid_ssl_certificate", "Invalid SSL certificate", "ssl"),
        1016 => ("origin_dns_error", "Origin DNS error", "dns"),
        _ => ("unknown_error", "Unknown error", "cloudflare"),
    }
}

/// Cloudflare's error answer for `code`: RFC 9457 JSON, or the branded page with the host box
/// marked as the error source.
fn error_body(code: u16, json: bool, ray: &str) -> (u16, Bytes, String) {
    let (name, title, category) = error_name(code);
    // 1xxx errors are configuration errors, served with status 530.
    let status = if code >= 1000 { 530 } else { code };
    if json {
        let doc = problem_json(code, name, title, category, ray);
        return (status, doc, "application/problem+json".into());
    }
    let page = format!(
        r#"<!DOCTYPE html>
<html lang="en-US"><head><title>{SITE} | {code}: {title}</title>
<meta charset="UTF-8" /></head><body>
<div id="cf-wrapper"><div id="cf-error-details" class="p-0">
<header class="mx-auto pt-10 lg:pt-6 lg:px-8 w-240 lg:w-full mb-8">
<h1 class="inline-block sm:block sm:mb-2 font-light text-60 lg:text-4xl text-black-dark leading-tight mr-2">
<span class="inline-block">{title}</span>
<span class="code-label">Error code {code}</span></h1></header>
<div class="my-8 bg-gradient-gray"><div class="w-240 lg:w-full mx-auto">
<div class="clearfix md:px-8">
<div id="cf-browser-status" class=" relative w-1/3 md:w-full py-15 md:p-0 md:py-8 md:text-left md:border-solid md:border-0 md:border-b md:border-gray-400 overflow-hidden float-left md:float-none text-center">
<span class="md:block w-full truncate">You</span><h3 class="md:inline-block mt-3 md:mt-0 text-2xl text-gray-600 font-light leading-1.3">Browser</h3><span class="leading-1.3 text-2xl text-green-success">Working</span></div>
<div id="cf-cloudflare-status" class=" relative w-1/3 md:w-full py-15 md:p-0 md:py-8 md:text-left md:border-solid md:border-0 md:border-b md:border-gray-400 overflow-hidden float-left md:float-none text-center">
<span class="md:block w-full truncate">London</span><h3 class="md:inline-block mt-3 md:mt-0 text-2xl text-gray-600 font-light leading-1.3">Cloudflare</h3><span class="leading-1.3 text-2xl text-green-success">Working</span></div>
<div id="cf-host-status" class="cf-error-source relative w-1/3 md:w-full py-15 md:p-0 md:py-8 md:text-left md:border-solid md:border-0 md:border-b md:border-gray-400 overflow-hidden float-left md:float-none text-center">
<span class="md:block w-full truncate">{SITE}</span><h3 class="md:inline-block mt-3 md:mt-0 text-2xl text-gray-600 font-light leading-1.3">Host</h3><span class="leading-1.3 text-2xl text-red-error">Error</span></div>
</div></div></div>
<div class="cf-error-footer cf-wrapper w-240 lg:w-full py-10 sm:py-4 sm:px-8 mx-auto text-center sm:text-left border-solid border-0 border-t border-gray-300">
<p class="text-13"><span class="cf-footer-item sm:block sm:mb-1">Cloudflare Ray ID: <strong class="font-semibold">{ray}</strong></span></p></div>
</div></div></body></html>
"#
    );
    (status, Bytes::from(page), "text/html; charset=UTF-8".into())
}

/// Cloudflare's RFC 9457 problem document for an error it generated.
fn problem_json(code: u16, name: &str, title: &str, category: &str, ray: &str) -> Bytes {
    let doc = serde_json::json!({
        "type": format!("https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-5xx-errors/error-{code}/"),
        "title": format!("Error {code}: {title}"),
        "status": if code >= 1000 { 530 } else { code },
        "detail": title,
        "instance": ray,
        "cloudflare_error": true,
        "error_code": code,
        "error_name": name,
        "error_category": category,
        "ray_id": ray,
        "retryable": retryable(code),
    });
    Bytes::from(doc.to_string())
}

/// The edge's view of the origin certificate: Full takes anything, Full (strict) verifies.
#[derive(Debug)]
struct ModeVerifier {
    strict: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    schemes: Vec<SignatureScheme>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ModeVerifier {
    fn new(settings: &EdgeSettings) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let strict = (settings.mode == SslMode::Strict).then(|| {
            let mut roots = RootCertStore::empty();
            for der in &settings.trusted {
                roots.add(der.clone()).unwrap();
            }
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .unwrap()
        });
        let schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        Self {
            strict,
            schemes,
            provider,
        }
    }
}

impl ServerCertVerifier for ModeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.strict {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}
