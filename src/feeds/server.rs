//! The feed server of `probe watch --listen ADDR`: read-only, serving the feeds rendered last
//! (`feeds::render_each`, each file put in place as it is made) from memory — no file system, no store access, so no path can reach
//! anything else and no internal error can leak.
//!
//! Hardened for the open internet: GET and HEAD only; no request body; a 2 KiB URI; 16 KiB of
//! headers read within 5 s; every connection closed after 30 s; at most 256 at once, 32 of them
//! from one client address. When a newcomer finds no room, the connection idle the longest (kept
//! alive between requests, or still sending its headers) is closed for it — among its own
//! connections when the client is at its limit (a reverse proxy in front rotates its own) — so
//! clients that merely hold connections open cannot lock everyone else out. Closing connections
//! are cut within 250 ms, and at most 64 of them may still hold a socket. Responses carry ETag and
//! Last-Modified (and answer conditional requests with 304) and a short cache lifetime, since the
//! status moves.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::feeds::{ComponentStatus, FeedFile};

const MAX_CONNECTIONS: usize = 256;
/// Connections one client address may hold: a single client cannot take every slot.
const MAX_PER_CLIENT: usize = 32;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_URI_BYTES: usize = 2048;

/// One served file and when its content last changed. A file of `GZIP_FROM` bytes or more is
/// held gzip-compressed (the feeds of thousands of sites are tens of megabytes of text, a tenth
/// of that compressed), sent as it is to clients that accept gzip and inflated as it is sent for
/// the others; a smaller one is held as it is, and a badge drawn from its site's state
/// (`BadgeState`). The bytes are shared, not copied, by every response.
#[derive(Debug, Clone)]
struct Entry {
    held: Held,
    content_type: &'static str,
    /// The start of the file's SHA-256, its ETag (`etag`); the gzip representation's is that
    /// with `-gzip` before the quote. (Kept as bytes: 100,000 badges hold one each.)
    etag: [u8; 12],
    last_modified: OffsetDateTime,
    /// The rendering that made it.
    rendering: u32,
}

/// How a file's bytes are held.
#[derive(Debug, Clone)]
enum Held {
    Plain(Bytes),
    /// The compressed bytes, and the file's own length (its Content-Length when inflated).
    Gzip(Bytes, u64),
    /// A site's badge, drawn when asked from the site's name and status.
    Badge(Box<str>, ComponentStatus),
}

/// What a site's badge is drawn from, held apart from the files by site name: a badge is a few
/// hundred bytes, and 100,000 sites' badges held drawn (or even held as files' entries, each
/// with its path, ETag and times) would be most of the server's memory.
#[derive(Debug, Clone, Copy)]
struct BadgeState {
    status: ComponentStatus,
    /// When the status last changed, in Unix seconds (what Last-Modified shows).
    since: i64,
    /// The rendering that showed it.
    rendering: u32,
}

/// Files from this size on are held compressed; below it gzip saves little and costs a
/// compressor's setup per file.
const GZIP_FROM: usize = 1024;
/// Bytes inflated at a time for a client that does not take gzip.
const INFLATE_CHUNK: usize = 64 * 1024;

impl Entry {
    fn etag(&self) -> String {
        super::etag_of(&self.etag)
    }

    fn gzip_etag(&self) -> String {
        format!("\"{}-gzip\"", crate::text::hex(&self.etag))
    }

    /// The file's own bytes, whole (tests and checks).
    fn inflated(&self) -> std::io::Result<Vec<u8>> {
        use std::io::Read as _;
        match &self.held {
            Held::Plain(bytes) => Ok(bytes.to_vec()),
            Held::Badge(name, status) => Ok(super::html::badge(name, *status).into_bytes()),
            Held::Gzip(gzip, _) => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&gzip[..]).read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// A held gzip file inflated a chunk at a time as the response is sent: a client that does not
/// take gzip costs one chunk of memory, not the whole file.
struct Inflating {
    gzip: flate2::read::GzDecoder<std::io::Cursor<Bytes>>,
    /// Bytes still to come: the body's exact size, so the answer carries a Content-Length.
    remaining: u64,
}

impl hyper::body::Body for Inflating {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        use std::io::Read as _;
        let mut chunk = vec![0; INFLATE_CHUNK];
        let read = match self.gzip.read(&mut chunk) {
            Ok(0) => return std::task::Poll::Ready(None),
            Ok(n) => n,
            Err(e) => return std::task::Poll::Ready(Some(Err(e))),
        };
        chunk.truncate(read);
        self.remaining = self.remaining.saturating_sub(read as u64);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(chunk)))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}

/// The feeds being served, by request path. A new rendering replaces the files one at a time as
/// they are made (`update`), so two renderings are never held at once: a client may get one
/// file from the new rendering and the next from the old, each whole.
#[derive(Debug, Default)]
pub struct Published {
    files: std::sync::RwLock<HashMap<String, Entry>>,
    /// Each site's badge (`badge/NAME.svg`), by site name.
    badges: std::sync::RwLock<HashMap<Box<str>, BadgeState>>,
    /// The rendering in progress or last done; a file not rendered again is removed at its end.
    rendering: AtomicU32,
}

impl Published {
    /// A new set of files after this one (tests, tools); a file whose bytes did not change
    /// keeps its Last-Modified, so conditional requests keep answering 304.
    pub fn next(&self, files: Vec<FeedFile>, now: OffsetDateTime) -> Published {
        let next = self.copied();
        let mut update = next.update(now);
        for file in files {
            update.add(file);
        }
        update.finish();
        next
    }

    /// A copy of the files as they are.
    fn copied(&self) -> Published {
        Published {
            files: std::sync::RwLock::new(self.read().clone()),
            badges: std::sync::RwLock::new(read(&self.badges).clone()),
            rendering: AtomicU32::new(self.rendering.load(Ordering::Relaxed)),
        }
    }

    /// Replaces the files with a new rendering, a file at a time as each is made (compressed
    /// as it comes, so the rendered text is never held whole). One rendering at a time: its end
    /// removes the files it did not make, another's included (the watch loop is the one writer).
    pub fn update(&self, now: OffsetDateTime) -> PublishedBuilder<'_> {
        PublishedBuilder {
            published: self,
            now,
            rendering: self
                .rendering
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1),
            current: None,
        }
    }

    /// The bytes served for `path` to a client that does not accept gzip (tests, checks).
    pub fn body(&self, path: &str) -> Option<Vec<u8>> {
        self.entry(path).and_then(|e| e.inflated().ok())
    }

    fn entry(&self, path: &str) -> Option<Entry> {
        if let Some(entry) = self.read().get(path) {
            return Some(entry.clone());
        }
        let name = badge_site(path)?;
        let state = *read(&self.badges).get(name.as_str())?;
        let svg = super::html::badge(&name, state.status);
        Some(Entry {
            etag: etag_bytes(ring::digest::digest(&ring::digest::SHA256, svg.as_bytes()).as_ref()),
            held: Held::Badge(name.into(), state.status),
            content_type: super::BADGE_TYPE,
            last_modified: OffsetDateTime::from_unix_timestamp(state.since)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            rendering: state.rendering,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        read(&self.files)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        write(&self.files)
    }
}

/// A lock's contents for reading; a panic while it was held leaves whole entries only.
fn read<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The site whose badge `path` names: `badge/NAME.svg` with NAME as `feeds::file_name` writes
/// it (percent-decoded, and only the spelling `file_name` gives: one path per site).
fn badge_site(path: &str) -> Option<String> {
    let written = path.strip_prefix("badge/")?.strip_suffix(".svg")?;
    let mut bytes = Vec::with_capacity(written.len());
    let mut rest = written.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let name = String::from_utf8(bytes).ok()?;
    (super::file_name(&name) == written).then_some(name)
}

/// A rendering going into a `Published`.
pub struct PublishedBuilder<'a> {
    published: &'a Published,
    now: OffsetDateTime,
    rendering: u32,
    /// The file being written.
    current: Option<Pending>,
}

/// A file being written into a rendering: hashed for its ETag and compressed as it comes.
struct Pending {
    path: String,
    content_type: &'static str,
    hash: ring::digest::Context,
    length: u64,
    /// The start of the body, until it is long enough to be worth compressing.
    plain: Vec<u8>,
    gzip: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl PublishedBuilder<'_> {
    /// Adds a whole file.
    pub fn add(&mut self, file: FeedFile) {
        use super::FeedSink as _;
        self.begin(file.path, file.content_type);
        self.write_bytes(&file.body);
        self.end();
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        use std::io::Write as _;
        let Some(file) = self.current.as_mut() else {
            return;
        };
        file.hash.update(bytes);
        file.length += bytes.len() as u64;
        // Writing into memory cannot fail.
        match &mut file.gzip {
            Some(gzip) => {
                let _ = gzip.write_all(bytes);
            }
            None => {
                file.plain.extend_from_slice(bytes);
                if file.plain.len() >= GZIP_FROM {
                    let mut gzip = flate2::write::GzEncoder::new(
                        Vec::with_capacity(file.plain.len()),
                        flate2::Compression::default(),
                    );
                    let _ = gzip.write_all(&file.plain);
                    file.plain = Vec::new();
                    file.gzip = Some(gzip);
                }
            }
        }
    }

    /// Puts a file in place of its previous version, which it keeps the Last-Modified of while
    /// the bytes stay the same.
    fn replace(&self, path: String, mut entry: Entry) {
        let mut files = self.published.write();
        if let Some(old) = files.get(&path) {
            if old.etag == entry.etag {
                entry.last_modified = old.last_modified;
            }
        }
        files.insert(path, entry);
    }

    /// Ends the rendering: the files it did not make again are gone.
    pub fn finish(mut self) {
        use super::FeedSink as _;
        self.end();
        let rendering = self.rendering;
        self.published
            .write()
            .retain(|_, entry| entry.rendering == rendering);
        write(&self.published.badges).retain(|_, badge| badge.rendering == rendering);
    }
}

impl std::fmt::Write for PublishedBuilder<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

impl super::FeedSink for PublishedBuilder<'_> {
    fn begin(&mut self, path: String, content_type: &'static str) {
        self.end();
        self.current = Some(Pending {
            path,
            content_type,
            hash: ring::digest::Context::new(&ring::digest::SHA256),
            length: 0,
            plain: Vec::new(),
            gzip: None,
        });
    }

    fn end(&mut self) {
        let Some(file) = self.current.take() else {
            return;
        };
        let etag = etag_bytes(file.hash.finish().as_ref());
        let held = match file.gzip {
            Some(gzip) => {
                let mut compressed = gzip.finish().unwrap_or_default();
                compressed.shrink_to_fit();
                Held::Gzip(Bytes::from(compressed), file.length)
            }
            None => Held::Plain(Bytes::from(file.plain)),
        };
        let entry = Entry {
            held,
            content_type: file.content_type,
            etag,
            last_modified: self.now,
            rendering: self.rendering,
        };
        self.replace(file.path, entry);
    }

    fn badge(&mut self, site_name: &str, status: ComponentStatus) {
        self.end();
        let now = self.now.unix_timestamp();
        let rendering = self.rendering;
        let mut badges = write(&self.published.badges);
        match badges.get_mut(site_name) {
            Some(badge) => {
                if badge.status != status {
                    badge.since = now;
                }
                badge.status = status;
                badge.rendering = rendering;
            }
            None => {
                let badge = BadgeState {
                    status,
                    since: now,
                    rendering,
                };
                badges.insert(site_name.into(), badge);
            }
        }
    }
}

/// The part of a SHA-256 an ETag shows.
fn etag_bytes(sha256: &[u8]) -> [u8; 12] {
    let mut etag = [0; 12];
    etag.copy_from_slice(&sha256[..12]);
    etag
}

/// Where the feed server takes its files from; the watch loop updates them in place.
pub type Feeds = Arc<Published>;

/// One open connection, as the accept loop sees it.
struct OpenConnection {
    peer: IpAddr,
    activity: Arc<Activity>,
    /// Told to close as soon as it is idle.
    close: Arc<Notify>,
    /// Already told to close: it no longer holds one of the `MAX_CONNECTIONS` slots, but counts
    /// against `MAX_CLOSING` until it is gone (a closing connection still holds a socket).
    closing: bool,
}

/// What a connection is doing, for choosing the one to close.
#[derive(Default)]
struct Activity {
    /// Requests being answered right now (0: idle between requests, or still sending headers).
    busy: AtomicUsize,
    /// When it last started or finished answering a request (or opened), in milliseconds since
    /// the server started.
    last_ms: AtomicU64,
}

/// Sockets a closing connection may still hold beyond the limit, at most: closing connections
/// are cut after `CLOSE_GRACE`, so this drains within a fraction of a second.
const MAX_CLOSING: usize = 64;
/// How long a connection told to close may take to finish the answer it is sending.
const CLOSE_GRACE: Duration = Duration::from_millis(250);

/// The open connections, shared by the accept loop and the connection tasks.
struct Connections {
    started: Instant,
    open: Mutex<(u64, HashMap<u64, OpenConnection>)>,
}

/// What the accept loop does with a new connection.
enum Admission {
    Admit(u64, Arc<Activity>, Arc<Notify>),
    /// Every slot it could have is busy answering, or too many sockets are still closing.
    Refuse,
}

impl Connections {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            open: Mutex::new((0, HashMap::new())),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Admits a connection from `peer`. A client at its own limit makes room from its own
    /// connections; a full server closes the connection idle the longest. A connection that is
    /// answering a request is never closed for a newcomer.
    fn admit(&self, peer: IpAddr) -> Admission {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, open) = &mut *guard;
        let closing = open.values().filter(|c| c.closing).count();
        if closing >= MAX_CLOSING {
            return Admission::Refuse;
        }
        let from_peer = open
            .values()
            .filter(|c| !c.closing && c.peer == peer)
            .count();
        let live = open.len() - closing;
        if from_peer >= MAX_PER_CLIENT || live >= MAX_CONNECTIONS {
            let own_only = from_peer >= MAX_PER_CLIENT;
            let idlest = open
                .values_mut()
                .filter(|c| !c.closing && (!own_only || c.peer == peer))
                .filter(|c| c.activity.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| c.activity.last_ms.load(Ordering::Acquire));
            match idlest {
                Some(c) => {
                    c.closing = true;
                    c.close.notify_one();
                }
                None => return Admission::Refuse,
            }
        }
        *next += 1;
        let activity = Arc::new(Activity::default());
        activity.last_ms.store(self.now_ms(), Ordering::Release);
        let close = Arc::new(Notify::new());
        open.insert(
            *next,
            OpenConnection {
                peer,
                activity: activity.clone(),
                close: close.clone(),
                closing: false,
            },
        );
        Admission::Admit(*next, activity, close)
    }

    fn closed(&self, id: u64) {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.remove(&id);
    }
}

/// Removes a connection from the table when its task ends, however it ends.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.closed(self.id);
    }
}

/// Counts a request as being answered while its handler runs.
struct Busy {
    activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Busy {
    fn new(activity: &Arc<Activity>, connections: &Arc<Connections>) -> Self {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        activity
            .last_ms
            .store(connections.now_ms(), Ordering::Release);
        Self {
            activity: activity.clone(),
            connections: connections.clone(),
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity
            .last_ms
            .store(self.connections.now_ms(), Ordering::Release);
        self.activity.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the feeds on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, feeds: Feeds) {
    serve_with(listener, feeds, None).await
}

/// The configured sites `/probe?target=…` may probe (blackbox_exporter's endpoint, for a
/// Prometheus scrape config that switches by changing the address), and how many such probes
/// may run at once. Anything else is refused: the server is no open proxy.
pub struct ProbeTargets {
    /// The config whose sites may be probed (replaced when it is reloaded).
    config: std::sync::RwLock<Arc<crate::config::Config>>,
    running: tokio::sync::Semaphore,
    /// When each site was last probed here: at most once every `PROBE_EVERY`.
    last: Mutex<HashMap<String, Instant>>,
}

/// Probes `/probe` runs at once; more are answered 429.
const PROBES_AT_ONCE: usize = 4;
/// The shortest time between two `/probe`s of one site (a scrape every few seconds at most).
const PROBE_EVERY: Duration = Duration::from_secs(5);

impl ProbeTargets {
    /// The sites of `config`.
    pub fn new(config: Arc<crate::config::Config>) -> Self {
        Self {
            config: std::sync::RwLock::new(config),
            running: tokio::sync::Semaphore::new(PROBES_AT_ONCE),
            last: Mutex::new(HashMap::new()),
        }
    }

    /// The sites of a reloaded config from now on.
    pub fn replace(&self, config: Arc<crate::config::Config>) {
        *write(&self.config) = config;
    }

    /// Whether `site` may be probed now (and if so, that it was).
    fn may_probe(&self, site: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.get(site).is_some_and(|at| now - *at < PROBE_EVERY) {
            return false;
        }
        // Bounded by the sites of the config: an unknown target never gets here.
        last.insert(site.to_string(), now);
        true
    }

    /// The name and probe settings of the site `target` names: its name, its URL, or its host.
    fn find(&self, target: &str) -> Option<(String, crate::settings::ProbeSettings)> {
        let target = target.trim();
        let bare = target.trim_end_matches('/');
        read(&self.config)
            .sites
            .iter()
            .find(|site| {
                site.name == target
                    || site.probe.target.url().trim_end_matches('/') == bare
                    || site.probe.target.host().eq_ignore_ascii_case(target)
            })
            .map(|site| (site.name.clone(), site.probe.clone()))
    }
}

/// What the server answers from: the feeds, and the sites `/probe` may probe.
#[derive(Clone)]
struct ServerState {
    feeds: Feeds,
    probes: Option<Arc<ProbeTargets>>,
}

/// `serve`, also answering blackbox_exporter's `/probe?target=…&module=…` for `probes`.
pub async fn serve_with(listener: TcpListener, feeds: Feeds, probes: Option<Arc<ProbeTargets>>) {
    let router = Router::new()
        .fallback(respond)
        .with_state(ServerState { feeds, probes });
    let connections = Arc::new(Connections::new());
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
        let (id, activity, close) = match connections.admit(peer.ip()) {
            Admission::Admit(id, activity, close) => (id, activity, close),
            Admission::Refuse => {
                tracing::debug!(%peer, "feed server: too many connections, closed");
                continue;
            }
        };
        let registered = Registered {
            connections: connections.clone(),
            id,
        };
        let inner = TowerToHyperService::new(router.clone());
        let for_requests = connections.clone();
        let service = hyper::service::service_fn(move |request| {
            let busy = Busy::new(&activity, &for_requests);
            let answer = hyper::service::Service::call(&inner, request);
            async move {
                let response = answer.await;
                drop(busy);
                response
            }
        });
        tokio::spawn(async move {
            let _registered = registered;
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
                        // Closes at once when idle between requests; an answer being sent gets
                        // `CLOSE_GRACE` to finish; a client still sending its headers is cut then.
                        told = true;
                        connection.as_mut().graceful_shutdown();
                        lifetime.as_mut().reset(Instant::now() + CLOSE_GRACE);
                    }
                    _ = &mut lifetime => {
                        tracing::debug!(%peer, "feed server: connection lifetime reached");
                        break;
                    }
                }
            }
        });
    }
}

/// blackbox_exporter's modules `/probe` answers for: probe's own probe of a configured site.
const MODULES: [&str; 3] = ["http_2xx", "http", "probe"];

/// `/probe?target=…&module=…`: probes a configured site now and answers its metrics as
/// blackbox_exporter does.
async fn probe(targets: Option<&ProbeTargets>, query: &str) -> Response {
    let Some(targets) = targets else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let mut target = None;
    let mut module = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "target" => target = Some(value.into_owned()),
            "module" => module = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(target) = target.filter(|t| !t.is_empty()) else {
        return plain(StatusCode::BAD_REQUEST, "target parameter is missing\n");
    };
    // What a client sent is not repeated: it is not ours to echo.
    if module.is_some_and(|m| !MODULES.contains(&m.as_str())) {
        return plain(
            StatusCode::BAD_REQUEST,
            "unknown module: probe answers http_2xx (its own probe of a configured site)\n",
        );
    }
    let Some((site, settings)) = targets.find(&target) else {
        return plain(
            StatusCode::FORBIDDEN,
            "not a configured site: /probe answers for the sites of probes.yaml only\n",
        );
    };
    let Ok(_permit) = targets.running.try_acquire() else {
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            "too many probes at once; try again\n",
        );
    };
    if !targets.may_probe(&site) {
        return plain(
            StatusCode::TOO_MANY_REQUESTS,
            "this site was probed here less than 5 s ago\n",
        );
    }
    match crate::engine::probe_site(&settings).await {
        Ok(report) => {
            let mut text = String::new();
            super::metrics::probe_exposition(&report, &mut text);
            let mut response = (StatusCode::OK, text).into_response();
            secure(response.headers_mut());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot probe for /probe");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot probe (see the log)\n",
            )
        }
    }
}

/// Binds the feed server's address (a clear error when it cannot).
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

async fn respond(
    State(state): State<ServerState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let feeds = state.feeds;
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
    if uri.path() == "/probe" {
        return probe(state.probes.as_deref(), uri.query().unwrap_or("")).await;
    }
    let path = match uri.path() {
        "/" => "index.html",
        other => other.strip_prefix('/').unwrap_or(other),
    };
    let Some(entry) = feeds.entry(path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let last_modified = http_date(entry.last_modified);
    let gzip = matches!(entry.held, Held::Gzip(..)) && accepts_gzip(&headers);
    let etag = if gzip {
        entry.gzip_etag()
    } else {
        entry.etag()
    };
    let fresh = match headers.get(header::IF_NONE_MATCH) {
        Some(tags) => tags
            .to_str()
            .is_ok_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*")),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
            .is_some_and(|since| entry.last_modified.unix_timestamp() <= since.unix_timestamp()),
    };
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let body = match &entry.held {
            Held::Plain(bytes) => Body::from(bytes.clone()),
            Held::Badge(name, status) => Body::from(super::html::badge(name, *status)),
            Held::Gzip(bytes, _) if gzip => Body::from(bytes.clone()),
            Held::Gzip(bytes, length) => Body::new(Inflating {
                gzip: flate2::read::GzDecoder::new(std::io::Cursor::new(bytes.clone())),
                remaining: *length,
            }),
        };
        let mut response = Response::new(body);
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(entry.content_type),
        );
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let h = response.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
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

/// Whether the client takes a gzip body: `gzip` listed with a non-zero weight, or, when gzip is
/// not named, `*` with one.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    let codings = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for coding in codings {
        let mut parts = coding.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        let weight = parts
            .find_map(|p| p.strip_prefix("q="))
            .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
        if name.eq_ignore_ascii_case("gzip") {
            gzip = Some(weight > 0.0);
        } else if name == "*" {
            any = Some(weight > 0.0);
        }
    }
    gzip.or(any).unwrap_or(false)
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
        // A file the next rendering does not make is gone with it.
        let gone = FeedFile {
            path: "badge/old.svg".into(),
            ..file("x")
        };
        let with_old = first.next(vec![file("a"), gone], t0);
        assert!(with_old.body("badge/old.svg").is_some());
        assert!(with_old
            .next(vec![file("a")], t1)
            .body("badge/old.svg")
            .is_none());
        let same = first.next(vec![file("a")], t1);
        assert_eq!(same.entry("status.json").unwrap().last_modified, t0);
        let changed = same.next(vec![file("b")], t1);
        assert_eq!(changed.entry("status.json").unwrap().last_modified, t1);
        assert_ne!(
            changed.entry("status.json").unwrap().etag,
            first.entry("status.json").unwrap().etag
        );
    }

    /// A badge is held as the site's state and drawn when asked: the same bytes and ETag as the
    /// file `run --feeds-dir` writes, and a Last-Modified that moves only when the state does.
    #[test]
    fn badges_are_drawn_when_asked_as_the_written_file_holds_them() {
        use crate::feeds::FeedSink as _;
        let t0 = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let t1 = t0 + time::Duration::minutes(1);
        let drawn = |previous: &Published, status, now| {
            let next = previous.copied();
            let mut update = next.update(now);
            update.badge("shop <eu>", status);
            update.finish();
            next
        };
        let first = drawn(&Published::default(), ComponentStatus::Operational, t0);
        let path = "badge/shop%20%3Ceu%3E.svg";
        let written = FeedFile {
            path: path.into(),
            content_type: "image/svg+xml",
            body: crate::feeds::html::badge("shop <eu>", ComponentStatus::Operational).into_bytes(),
        };
        assert_eq!(first.body(path).unwrap(), written.body);
        assert_eq!(first.entry(path).unwrap().etag(), written.etag());
        assert!(matches!(first.entry(path).unwrap().held, Held::Badge(..)));
        let same = drawn(&first, ComponentStatus::Operational, t1);
        assert_eq!(same.entry(path).unwrap().last_modified, t0);
        let down = drawn(&same, ComponentStatus::MajorOutage, t1);
        assert_eq!(down.entry(path).unwrap().last_modified, t1);
        assert_ne!(
            down.entry(path).unwrap().etag,
            first.entry(path).unwrap().etag
        );
        assert!(String::from_utf8(down.body(path).unwrap())
            .unwrap()
            .contains("major outage"));
        // A site gone from the config has its badge gone with the next rendering.
        let gone = down.copied();
        gone.update(t1).finish();
        assert!(gone.entry(path).is_none());
    }

    /// A badge's path names one site, spelled only as `file_name` writes it.
    #[test]
    fn badge_paths_decode_to_their_site_only_as_written() {
        assert_eq!(
            badge_site("badge/shop%20%3Ceu%3E.svg").as_deref(),
            Some("shop <eu>")
        );
        assert_eq!(badge_site("badge/s1.svg").as_deref(), Some("s1"));
        assert_eq!(badge_site("badge/%2E%2E.svg").as_deref(), Some(".."));
        // Another spelling of a name, broken escapes, bytes that are not UTF-8, other folders.
        for path in [
            "badge/%61.svg",
            "badge/a%2.svg",
            "badge/%zz.svg",
            "badge/%C3.svg",
            "badge/a/b.svg",
            "badge/s1.png",
            "status/s1.svg",
        ] {
            assert_eq!(badge_site(path), None, "{path}");
        }
    }

    /// Served to a client that accepts gzip as the held gzip bytes with their own ETag, to one
    /// that does not as the file itself; a conditional request matches its representation's tag.
    #[tokio::test]
    async fn files_are_served_gzip_or_inflated_as_the_client_asks() {
        use http_body_util::BodyExt as _;
        let text = "probe_success{site=\"a\"} 1\n".repeat(2000);
        let t0 = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let published = Published::default().next(
            vec![FeedFile {
                path: "metrics".into(),
                content_type: "text/plain",
                body: text.clone().into_bytes(),
            }],
            t0,
        );
        let held = match &published.entry("metrics").unwrap().held {
            Held::Gzip(bytes, _) => bytes.len(),
            Held::Plain(_) | Held::Badge(..) => usize::MAX,
        };
        assert!(held * 10 < text.len(), "held compressed");
        assert_eq!(published.body("metrics").unwrap(), text.as_bytes());
        let feeds = Arc::new(published);
        let get = |accept: Option<&'static str>, tag: Option<String>| {
            let feeds = feeds.clone();
            async move {
                let mut headers = HeaderMap::new();
                if let Some(accept) = accept {
                    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(accept));
                }
                if let Some(tag) = tag {
                    headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&tag).unwrap());
                }
                let uri: Uri = "/metrics".parse().unwrap();
                let state = ServerState {
                    feeds,
                    probes: None,
                };
                let response = respond(State(state), Method::GET, uri, headers).await;
                let status = response.status();
                let h = response.headers().clone();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, h, body)
            }
        };
        let (status, h, body) = get(None, None).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, text.as_bytes()));
        assert!(h.get(header::CONTENT_ENCODING).is_none());
        let plain_tag = h[header::ETAG].to_str().unwrap().to_string();

        let (status, h, body) = get(Some("br, gzip;q=0.8"), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert_eq!(h[header::VARY], "Accept-Encoding");
        let mut inflated = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut inflated)
            .unwrap();
        assert_eq!(inflated, text.as_bytes());
        let gzip_tag = h[header::ETAG].to_str().unwrap().to_string();
        assert_ne!(gzip_tag, plain_tag);

        let (status, _, _) = get(Some("gzip"), Some(gzip_tag.clone())).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, _, _) = get(None, Some(gzip_tag)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the gzip tag does not match the plain file"
        );
        let (status, h, _) = get(Some("gzip;q=0, identity"), Some(plain_tag)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(h.get(header::CONTENT_ENCODING).is_none());
    }
    /// A small file (a badge) is held and served as it is, gzip or not; `gzip;q=0` wins over `*`.
    #[tokio::test]
    async fn small_files_are_served_as_they_are_and_a_refused_gzip_is_not_sent() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let badge = "<svg/>".repeat(20);
        let published = Published::default().next(
            vec![FeedFile {
                path: "badge/a.svg".into(),
                content_type: "image/svg+xml",
                body: badge.clone().into_bytes(),
            }],
            t0,
        );
        assert!(matches!(
            published.entry("badge/a.svg").unwrap().held,
            Held::Plain(_)
        ));
        let feeds = Arc::new(published);
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let uri: Uri = "/badge/a.svg".parse().unwrap();
        let state = ServerState {
            feeds,
            probes: None,
        };
        let response = respond(State(state), Method::GET, uri, headers).await;
        assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], badge.as_bytes());

        let takes_gzip = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&h)
        };
        assert!(!takes_gzip("*, gzip;q=0"));
        assert!(takes_gzip("*"));
        assert!(takes_gzip("br, GZIP;q=0.5"));
        assert!(!takes_gzip("identity"));
    }
}
