//! One HTTP exchange over an already-open connection, so that the request-sent, first-byte and
//! body-done moments can be stamped. HTTP/1.1 goes through `hyper::client::conn`; HTTP/2 through
//! the `h2` crate directly, because hyper's HTTP/2 dispatcher fails a request that was already sent
//! when the server's graceful GOAWAY (which nginx sends at once with `keepalive_timeout 0`) lands
//! between two of its polls, although the server answers that request in full.
//! No pool, no retries, no redirects followed (a redirect is evidence: status and `location`).

use std::error::Error as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};

use crate::observe::{
    io_error_kind, ErrorKind, ObservedError, Phase, ResponseFacts, ResponseHeaders,
};

/// Bytes of body kept as the excerpt: enough for a whole Cloudflare or nginx error page.
pub const BODY_EXCERPT_BYTES: usize = 64 * 1024;
/// Bytes of body read at most; past this we stop (a prober must not download a huge file each
/// time) and say so, without blaming the site.
pub const BODY_READ_LIMIT: u64 = 8 * 1024 * 1024;
/// Most bytes of response headers accepted over HTTP/2 (hyper's HTTP/1.1 limit is ~400 KiB).
const MAX_HEADER_BYTES: u32 = 256 * 1024;
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
    /// The Accept header (`*/*`, or `application/json` to get Cloudflare's error details).
    pub accept: String,
    /// Body bytes kept as the excerpt, and read at most (`BODY_EXCERPT_BYTES` and
    /// `BODY_READ_LIMIT` for a page; a status page is read whole, up to its own limit).
    pub excerpt_bytes: usize,
    pub read_limit: u64,
}

/// What a request carries beyond what every probe sends: its method, extra headers and body.
/// A probe is a bare GET; a webhook delivery is a POST with a JSON body.
#[derive(Debug, Clone)]
pub struct Payload {
    pub method: Method,
    pub headers: Vec<(HeaderName, http::HeaderValue)>,
    /// Sent whole; small (a notification), so HTTP/2 flow control never holds it back.
    pub body: Bytes,
}

impl Payload {
    /// A bare GET.
    pub fn get() -> Self {
        Self {
            method: Method::GET,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }
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

/// The connection's own work (reading frames, flow control, answering pings), driven in the
/// probe's task alongside whatever the exchange awaits: no task of its own per probe, and it ends
/// with the exchange, so a server that never stops sending cannot keep it (or its socket) alive.
struct Connection {
    driving: Pin<Box<dyn Future<Output = ()> + Send>>,
    done: bool,
}

impl Connection {
    fn new(driving: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            driving: Box::pin(driving),
            done: false,
        }
    }

    /// Awaits `future` while driving the connection.
    async fn alongside<F: Future>(&mut self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = future.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if !self.done && self.driving.as_mut().poll(cx).is_ready() {
                self.done = true;
                // The connection ended: what waited on it has its answer (or its error) now.
                return future.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await
    }
}

/// A response body of either protocol, read chunk by chunk.
enum ResponseBody {
    Http1(Incoming),
    Http2(h2::RecvStream),
}

impl ResponseBody {
    /// The next data chunk; `None` at the end of the body.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, ObservedError>> {
        match self {
            ResponseBody::Http1(body) => loop {
                match body.frame().await? {
                    Ok(frame) => match frame.into_data() {
                        Ok(data) => return Some(Ok(data)),
                        Err(_trailers) => continue,
                    },
                    Err(e) => return Some(Err(hyper_error(Phase::Body, &e))),
                }
            },
            ResponseBody::Http2(body) => match body.data().await? {
                Ok(data) => {
                    // Give the window back, or a body larger than it would stall.
                    let _ = body.flow_control().release_capacity(data.len());
                    Some(Ok(data))
                }
                Err(e) => Some(Err(h2_error(Phase::Body, &e))),
            },
        }
    }
}

/// A response whose headers arrived, and the connection behind it.
struct Answered {
    response: Response<ResponseBody>,
    sent_at: Instant,
    connection: Connection,
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
    exchange_with(io, use_h2, spec, &Payload::get(), deadline).await
}

/// `exchange` with another method, more headers and a body.
pub async fn exchange_with<T>(
    io: T,
    use_h2: bool,
    spec: &HttpRequestSpec,
    payload: &Payload,
    deadline: Instant,
) -> HttpExchange
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let answered = if use_h2 {
        send_http2(io, spec, payload, deadline).await
    } else {
        send_http1(io, spec, payload, deadline).await
    };
    let mut answered = match answered {
        Ok(a) => a,
        Err(error) => {
            return HttpExchange {
                error: Some(error),
                ..HttpExchange::default()
            }
        }
    };
    let headers_at = Instant::now();
    let mut exchange = HttpExchange {
        ttfb: Some(headers_at - answered.sent_at),
        ..HttpExchange::default()
    };

    let (parts, mut body) = answered.response.into_parts();
    let mut excerpt: Vec<u8> = Vec::new();
    let mut body_bytes: u64 = 0;
    let mut body_complete = false;
    let mut body_read_limit_hit = false;
    loop {
        let chunk = answered.connection.alongside(body.next_chunk());
        match timeout_at(deadline, chunk).await {
            Err(_) => {
                exchange.error = Some(timeout_error(Phase::Body));
                break;
            }
            Ok(None) => {
                body_complete = true;
                break;
            }
            Ok(Some(Err(e))) => {
                exchange.error = Some(e);
                break;
            }
            Ok(Some(Ok(data))) => {
                body_bytes += data.len() as u64;
                let room = spec.excerpt_bytes.saturating_sub(excerpt.len());
                excerpt.extend_from_slice(&data[..data.len().min(room)]);
                if body_bytes >= spec.read_limit {
                    body_read_limit_hit = true;
                    break;
                }
            }
        }
    }
    exchange.transfer = Some(Instant::now() - headers_at);
    exchange.response = Some(ResponseFacts {
        status: parts.status.as_u16(),
        http_version: version_name(parts.version).to_string(),
        headers: kept_headers(&parts.headers),
        body_excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
        body_bytes,
        body_complete,
        body_read_limit_hit,
    });
    exchange
}

async fn send_http1<T>(
    io: T,
    spec: &HttpRequestSpec,
    payload: &Payload,
    deadline: Instant,
) -> Result<Answered, ObservedError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = Request::builder()
        .uri(spec.path.as_str())
        .header(header::HOST, spec.authority.as_str())
        .header(header::CONNECTION, "close");
    let request = with_common_headers(request, spec, payload)
        .body(Full::new(payload.body.clone()))
        .map_err(request_build_error)?;
    let handshake = hyper::client::conn::http1::handshake(TokioIo::new(io));
    let (mut sender, conn) = within(deadline, Phase::Request, handshake, hyper_error).await?;
    let mut connection = Connection::new(async move {
        let _ = conn.await;
    });
    let sent_at = Instant::now();
    let response = within(
        deadline,
        Phase::Headers,
        connection.alongside(sender.send_request(request)),
        hyper_error,
    )
    .await?;
    Ok(Answered {
        response: response.map(ResponseBody::Http1),
        sent_at,
        connection,
    })
}

async fn send_http2<T>(
    io: T,
    spec: &HttpRequestSpec,
    payload: &Payload,
    deadline: Instant,
) -> Result<Answered, ObservedError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // HTTP/2 carries the site's name as :authority, taken from an absolute URI.
    let request = Request::builder()
        .version(Version::HTTP_2)
        .uri(format!("{}://{}{}", spec.scheme, spec.authority, spec.path));
    let request = with_common_headers(request, spec, payload)
        .body(())
        .map_err(request_build_error)?;
    // h2 accepts 16 MiB of response headers by default; a hostile server could make each probe
    // hold that much. 256 KiB is far beyond any real site's headers.
    let handshake = h2::client::Builder::new()
        .max_header_list_size(MAX_HEADER_BYTES)
        .handshake::<_, Bytes>(io);
    let (sender, conn) = within(deadline, Phase::Request, handshake, h2_error).await?;
    let mut connection = Connection::new(async move {
        let _ = conn.await;
    });
    let ready = connection.alongside(sender.ready());
    let mut sender = within(deadline, Phase::Request, ready, h2_error).await?;
    let sent_at = Instant::now();
    let (response, mut body) = sender
        .send_request(request, payload.body.is_empty())
        .map_err(|e| h2_error(Phase::Request, &e))?;
    if !payload.body.is_empty() {
        body.send_data(payload.body.clone(), true)
            .map_err(|e| h2_error(Phase::Request, &e))?;
    }
    let response = connection.alongside(response);
    let response = within(deadline, Phase::Headers, response, h2_error).await?;
    Ok(Answered {
        response: response.map(ResponseBody::Http2),
        sent_at,
        connection,
    })
}

/// Awaits `future` until `deadline`; a failure or the deadline becomes an observed error of `phase`.
async fn within<T, E>(
    deadline: Instant,
    phase: Phase,
    future: impl std::future::Future<Output = Result<T, E>>,
    classify: fn(Phase, &E) -> ObservedError,
) -> Result<T, ObservedError> {
    match timeout_at(deadline, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(classify(phase, &e)),
        Err(_) => Err(timeout_error(phase)),
    }
}

fn with_common_headers(
    builder: http::request::Builder,
    spec: &HttpRequestSpec,
    payload: &Payload,
) -> http::request::Builder {
    let mut builder = builder
        .method(payload.method.clone())
        .header(header::USER_AGENT, spec.user_agent.as_str())
        .header(header::ACCEPT, spec.accept.as_str())
        // We read page text; a compressed body would hide it.
        .header(header::ACCEPT_ENCODING, "identity");
    for (name, value) in &payload.headers {
        builder = builder.header(name, value);
    }
    builder
}

fn request_build_error(e: http::Error) -> ObservedError {
    ObservedError {
        phase: Phase::Request,
        kind: ErrorKind::Io,
        message: format!("cannot build the request: {e}"),
    }
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

/// Classifies a hyper (HTTP/1.1) error by what caused it, not by its message.
fn hyper_error(phase: Phase, e: &hyper::Error) -> ObservedError {
    let mut kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        ErrorKind::Closed
    } else {
        ErrorKind::Protocol
    };
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            kind = io_error_kind(io);
        }
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    ObservedError {
        phase,
        kind,
        message,
    }
}

/// Classifies an h2 (HTTP/2) error: socket errors by their kind, RST_STREAM as a reset, a
/// graceful GOAWAY as a close, anything else as a protocol error.
fn h2_error(phase: Phase, e: &h2::Error) -> ObservedError {
    let kind = if let Some(io) = e.get_io() {
        io_error_kind(io)
    } else if e.is_reset() {
        ErrorKind::Reset
    } else if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) {
        ErrorKind::Closed
    } else {
        ErrorKind::Protocol
    };
    ObservedError {
        phase,
        kind,
        message: format!("HTTP/2: {e}"),
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
