//! One HTTP exchange over an already-open connection, through `hyper::client::conn` so that the
//! request-sent, first-byte and body-done moments can be stamped. No pool, no retries, no
//! redirects followed (a redirect is evidence: its status and `location` are recorded).

use std::error::Error as _;
use std::io;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use crate::connect::io_error_kind;
use crate::observe::{ErrorKind, ObservedError, Phase, ResponseFacts, ResponseHeaders};

/// Bytes of body kept as the excerpt: enough for a whole Cloudflare or nginx error page.
pub const BODY_EXCERPT_BYTES: usize = 64 * 1024;
/// Bytes of body read at most; past this we stop (a prober must not download a huge file each
/// time) and say so, without blaming the site.
pub const BODY_READ_LIMIT: u64 = 8 * 1024 * 1024;
/// Longest header value kept.
const HEADER_VALUE_MAX: usize = 512;

/// What to ask for.
#[derive(Debug, Clone)]
pub struct HttpRequestSpec {
    /// `https` or `http`.
    pub scheme: String,
    /// The site's name with the port when it is not the scheme's default: the Host header and the
    /// HTTP/2 `:authority`, whatever address was dialled.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
    pub user_agent: String,
}

/// What one exchange produced.
#[derive(Debug, Default)]
pub struct HttpExchange {
    /// Request handed to the connection → response headers received.
    pub ttfb: Option<Duration>,
    /// Response headers received → body done (or stopped).
    pub transfer: Option<Duration>,
    pub response: Option<ResponseFacts>,
    pub error: Option<ObservedError>,
}

/// Aborts the connection task when the exchange is over, so a server that never stops sending
/// cannot keep a task (and its socket) alive behind our back.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends one GET over `io` (HTTP/2 when `use_h2`, else HTTP/1.1) and reads the response, giving up
/// at `deadline`.
pub async fn exchange<T>(
    io: T,
    use_h2: bool,
    spec: &HttpRequestSpec,
    deadline: Instant,
) -> HttpExchange
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let request = match build_request(spec, use_h2) {
        Ok(r) => r,
        Err(e) => {
            return failed(
                Phase::Request,
                ErrorKind::Io,
                format!("cannot build request: {e}"),
            )
        }
    };
    let sending = if use_h2 {
        let handshake = hyper::client::conn::http2::handshake(TokioExecutor::new(), io);
        match timeout_at(deadline, handshake).await {
            Ok(Ok((mut sender, conn))) => {
                let task = AbortOnDrop(tokio::spawn(async move {
                    let _ = conn.await;
                }));
                (
                    task,
                    Box::pin(async move { sender.send_request(request).await }) as SendFuture,
                )
            }
            Ok(Err(e)) => return failed(Phase::Request, hyper_error_kind(&e), describe(&e)),
            Err(_) => return timed_out(Phase::Request),
        }
    } else {
        let handshake = hyper::client::conn::http1::handshake(io);
        match timeout_at(deadline, handshake).await {
            Ok(Ok((mut sender, conn))) => {
                let task = AbortOnDrop(tokio::spawn(async move {
                    let _ = conn.await;
                }));
                (
                    task,
                    Box::pin(async move { sender.send_request(request).await }) as SendFuture,
                )
            }
            Ok(Err(e)) => return failed(Phase::Request, hyper_error_kind(&e), describe(&e)),
            Err(_) => return timed_out(Phase::Request),
        }
    };
    let (_connection, send) = sending;

    let sent_at = Instant::now();
    let response = match timeout_at(deadline, send).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return failed(Phase::Headers, hyper_error_kind(&e), describe(&e)),
        Err(_) => return timed_out(Phase::Headers),
    };
    let headers_at = Instant::now();
    let mut exchange = HttpExchange {
        ttfb: Some(headers_at - sent_at),
        ..HttpExchange::default()
    };

    let status = response.status().as_u16();
    let http_version = version_name(response.version()).to_string();
    let headers = kept_headers(response.headers());
    let mut body = response.into_body();
    let mut excerpt: Vec<u8> = Vec::new();
    let mut body_bytes: u64 = 0;
    let mut body_complete = false;
    let mut body_read_limit_hit = false;
    loop {
        match timeout_at(deadline, body.frame()).await {
            Err(_) => {
                exchange.error = Some(timeout_error(Phase::Body));
                break;
            }
            Ok(None) => {
                body_complete = true;
                break;
            }
            Ok(Some(Err(e))) => {
                exchange.error = Some(ObservedError {
                    phase: Phase::Body,
                    kind: hyper_error_kind(&e),
                    message: describe(&e),
                });
                break;
            }
            Ok(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers
                };
                body_bytes += data.len() as u64;
                let room = BODY_EXCERPT_BYTES.saturating_sub(excerpt.len());
                excerpt.extend_from_slice(&data[..data.len().min(room)]);
                if body_bytes >= BODY_READ_LIMIT {
                    body_read_limit_hit = true;
                    break;
                }
            }
        }
    }
    exchange.transfer = Some(Instant::now() - headers_at);
    exchange.response = Some(ResponseFacts {
        status,
        http_version,
        headers,
        body_excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
        body_bytes,
        body_complete,
        body_read_limit_hit,
    });
    exchange
}

type SendFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<http::Response<hyper::body::Incoming>, hyper::Error>,
            > + Send,
    >,
>;

fn build_request(
    spec: &HttpRequestSpec,
    use_h2: bool,
) -> Result<Request<Empty<Bytes>>, http::Error> {
    let builder = if use_h2 {
        // HTTP/2 carries the site's name as :authority, taken from an absolute URI.
        Request::builder()
            .version(Version::HTTP_2)
            .uri(format!("{}://{}{}", spec.scheme, spec.authority, spec.path))
    } else {
        Request::builder()
            .uri(spec.path.as_str())
            .header(header::HOST, spec.authority.as_str())
            .header(header::CONNECTION, "close")
    };
    builder
        .method(Method::GET)
        .header(header::USER_AGENT, spec.user_agent.as_str())
        .header(header::ACCEPT, "*/*")
        // We read page text; a compressed body would hide it.
        .header(header::ACCEPT_ENCODING, "identity")
        .body(Empty::new())
}

fn kept_headers(headers: &HeaderMap) -> ResponseHeaders {
    let get = |name: &str| -> Option<String> {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let value = headers.get(name)?;
        let text = String::from_utf8_lossy(value.as_bytes());
        Some(text.chars().take(HEADER_VALUE_MAX).collect())
    };
    ResponseHeaders {
        server: get("server"),
        cf_ray: get("cf-ray"),
        cf_cache_status: get("cf-cache-status"),
        content_type: get("content-type"),
        retry_after: get("retry-after"),
        location: get("location"),
        content_length: get("content-length"),
    }
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// Classifies a hyper error by what caused it, not by its message.
fn hyper_error_kind(e: &hyper::Error) -> ErrorKind {
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    let mut source = e.source();
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            return io_error_kind(io);
        }
        source = inner.source();
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        ErrorKind::Closed
    } else {
        ErrorKind::Protocol
    }
}

/// The error and its causes on one line.
fn describe(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

fn failed(phase: Phase, kind: ErrorKind, message: String) -> HttpExchange {
    HttpExchange {
        error: Some(ObservedError {
            phase,
            kind,
            message,
        }),
        ..HttpExchange::default()
    }
}

fn timeout_error(phase: Phase) -> ObservedError {
    let what = match phase {
        Phase::Headers => "no response headers before the deadline",
        Phase::Body => "the body did not finish before the deadline",
        _ => "the HTTP connection was not ready before the deadline",
    };
    ObservedError {
        phase,
        kind: ErrorKind::Timeout,
        message: what.to_string(),
    }
}

fn timed_out(phase: Phase) -> HttpExchange {
    HttpExchange {
        error: Some(timeout_error(phase)),
        ..HttpExchange::default()
    }
}
