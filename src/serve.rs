//! The feed server of `probe watch --listen ADDR`: read-only, serving the feeds rendered last
//! (`feeds::render_all`) from memory — no file system, no store access, so no path can reach
//! anything else and no internal error can leak.
//!
//! Hardened for the open internet: GET and HEAD only; no request body; a 2 KiB URI; 16 KiB of
//! headers read within 5 s; every connection closed after 30 s; at most 256 at once and 32 from
//! one client address. When all 256 are taken, the connection idle the longest (kept alive between
//! requests, or still sending its headers) is closed to make room, so clients that merely hold
//! connections open cannot lock everyone else out. Responses carry ETag and Last-Modified (and
//! answer conditional requests with 304) and a short cache lifetime, since the status moves.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::feeds::FeedFile;

const MAX_CONNECTIONS: usize = 256;
/// Connections one client address may hold: a single client cannot take every slot.
const MAX_PER_CLIENT: usize = 32;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_URI_BYTES: usize = 2048;

/// One served file and when its content last changed. The body is shared, not copied, by every
/// response (the metrics of thousands of sites are megabytes).
#[derive(Debug, Clone)]
struct Entry {
    body: Bytes,
    content_type: &'static str,
    etag: String,
    last_modified: OffsetDateTime,
}

/// The feeds being served, by request path.
#[derive(Debug, Clone, Default)]
pub struct Published {
    files: HashMap<String, Entry>,
}

impl Published {
    /// The new rendering; a file whose bytes did not change keeps its Last-Modified, so
    /// conditional requests keep answering 304.
    pub fn next(&self, files: Vec<FeedFile>, now: OffsetDateTime) -> Published {
        let files = files
            .into_iter()
            .map(|file| {
                let etag = file.etag();
                let last_modified = match self.files.get(&file.path) {
                    Some(old) if old.etag == etag => old.last_modified,
                    _ => now,
                };
                let entry = Entry {
                    body: Bytes::from(file.body),
                    content_type: file.content_type,
                    etag,
                    last_modified,
                };
                (file.path, entry)
            })
            .collect();
        Published { files }
    }
}

/// Where the feed server takes its files from; the watch loop sends each new rendering.
pub type Feeds = watch::Receiver<Arc<Published>>;

/// One open connection, as the accept loop sees it.
struct OpenConnection {
    peer: IpAddr,
    opened: Instant,
    /// Requests being answered right now (0: idle between requests, or still reading headers).
    busy: Arc<AtomicUsize>,
    /// Told to close as soon as it is idle.
    close: Arc<Notify>,
    /// Already told to close: no longer counts against the limit.
    closing: bool,
}

/// The open connections, shared by the accept loop and the connection tasks.
#[derive(Default)]
struct Connections {
    open: Mutex<(u64, HashMap<u64, OpenConnection>)>,
}

/// What the accept loop does with a new connection.
enum Admission {
    Admit(u64, Arc<AtomicUsize>, Arc<Notify>),
    /// Too many from this address, or every slot busy answering.
    Refuse,
}

impl Connections {
    fn admit(&self, peer: IpAddr) -> Admission {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        let live = || open.values().filter(|c| !c.closing);
        if live().filter(|c| c.peer == peer).count() >= MAX_PER_CLIENT {
            return Admission::Refuse;
        }
        if live().count() >= MAX_CONNECTIONS {
            // Room is made by closing the connection idle since the longest: a client waiting
            // for an answer is never cut for one that only holds a connection.
            let idlest = open
                .iter_mut()
                .filter(|(_, c)| !c.closing && c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, c)| c.opened);
            match idlest {
                Some((_, c)) => {
                    c.closing = true;
                    c.close.notify_one();
                }
                None => return Admission::Refuse,
            }
        }
        *next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        open.insert(
            *next,
            OpenConnection {
                peer,
                opened: Instant::now(),
                busy: busy.clone(),
                close: close.clone(),
                closing: false,
            },
        );
        Admission::Admit(*next, busy, close)
    }

    fn closed(&self, id: u64) {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.remove(&id);
    }
}

/// Counts a request as being answered while its handler runs.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        Self(counter.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the feeds on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, feeds: Feeds) {
    let router = Router::new().fallback(respond).with_state(feeds);
    let connections = Arc::new(Connections::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "feed server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (id, busy, close) = match connections.admit(peer.ip()) {
            Admission::Admit(id, busy, close) => (id, busy, close),
            Admission::Refuse => {
                tracing::debug!(%peer, "feed server: too many connections, closed");
                continue;
            }
        };
        let inner = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |request| {
            let busy = Busy::new(&busy);
            let answer = hyper::service::Service::call(&inner, request);
            async move {
                let response = answer.await;
                drop(busy);
                response
            }
        });
        let connections = connections.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
            tokio::pin!(lifetime);
            let mut told = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(%peer, error = %e, "feed server: connection ended");
                        }
                        break;
                    }
                    _ = close.notified(), if !told => {
                        // Closes at once when idle, after the answer in progress otherwise.
                        told = true;
                        connection.as_mut().graceful_shutdown();
                    }
                    _ = &mut lifetime => {
                        tracing::debug!(%peer, "feed server: connection lifetime reached");
                        break;
                    }
                }
            }
            connections.closed(id);
        });
    }
}

/// Binds the feed server's address (a clear error when it cannot).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

async fn respond(
    State(feeds): State<Feeds>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "no request body is accepted\n",
        );
    }
    if uri.to_string().len() > MAX_URI_BYTES {
        return plain(StatusCode::URI_TOO_LONG, "URI too long\n");
    }
    let path = match uri.path() {
        "/" => "index.html",
        other => other.strip_prefix('/').unwrap_or(other),
    };
    let published = feeds.borrow().clone();
    let Some(entry) = published.files.get(path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let last_modified = http_date(entry.last_modified);
    let fresh = match headers.get(header::IF_NONE_MATCH) {
        Some(tags) => tags.to_str().is_ok_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == entry.etag || t.trim() == "*")
        }),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .is_some_and(|since| entry.last_modified.unix_timestamp() <= since.unix_timestamp()),
    };
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut response = Response::new(Body::from(entry.body.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(entry.content_type),
        );
        response
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&entry.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        h.insert(header::LAST_MODIFIED, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=15"),
    );
    secure(h);
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    secure(response.headers_mut());
    response
}

/// Headers every answer carries: no sniffing, no framing, nothing loaded from elsewhere.
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// An IMF-fixdate (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(HTTP_DATE)
        .expect("a UTC time formats")
}

fn parse_http_date(text: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(text.trim(), HTTP_DATE)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip() {
        let t = OffsetDateTime::from_unix_timestamp(784_111_777).unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn an_unchanged_file_keeps_its_last_modified() {
        let file = |body: &str| FeedFile {
            path: "status.json".into(),
            content_type: "application/json",
            body: body.as_bytes().to_vec(),
        };
        let t0 = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let t1 = t0 + time::Duration::minutes(1);
        let first = Published::default().next(vec![file("a")], t0);
        let same = first.next(vec![file("a")], t1);
        assert_eq!(same.files["status.json"].last_modified, t0);
        let changed = same.next(vec![file("b")], t1);
        assert_eq!(changed.files["status.json"].last_modified, t1);
        assert_ne!(
            changed.files["status.json"].etag,
            first.files["status.json"].etag
        );
    }
}
