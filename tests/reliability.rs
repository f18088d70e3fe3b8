//! Alerts sent twice or never, and a watch that stalls, tried on real processes: two `probe run`s
//! at once on one store, a store locked right after the SMTP server's 250, a tarpitting SMTP
//! server beside `probe watch`, and clients that hold every connection of the feed server.

mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use probe::store::SqliteStore;
use support::pki::TempPki;
use support::servers::{refused_port, tls_server, Alpn, Behaviour};
use support::smtp::{SmtpOptions, SmtpServer, PASSWORD, USER};

/// A config with the given sites (YAML list items), alerts by mail to ops@example.com through
/// the SMTP server on `smtp_port` (STARTTLS, AUTH with the password in `password_env`).
fn config(dir: &Path, ca: &str, sites: &str, smtp_port: u16, password_env: &str) -> PathBuf {
    let text = format!(
        r#"defaults:
  interval: 1s
  timeout: 900ms
  ca_file: {ca}
sites:
{sites}alerts:
  to: [ops@example.com]
  confirm_retries: 0
  confirm_runs: 1
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  username: {USER}
  password_env: {password_env}
  from: "probe <probe@example.com>"
  ca_file: {ca}
  timeout: 30s
store:
  path: probe.sqlite
"#
    );
    let path = dir.join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A site whose edge refuses connections: down at once.
fn broken_site() -> String {
    format!(
        "  - name: broken\n    url: https://probe.test/\n    edge: \"{}\"\n",
        refused_port()
    )
}

fn probe(args: &[&str], password_env: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_probe"));
    command
        .args(args)
        .env(password_env, PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Waits at most `within` for `child` to exit; its exit code, or `None` if still running.
fn exit_within(child: &mut Child, within: Duration) -> Option<i32> {
    let until = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut text);
    }
    text
}

/// Item 7: two `probe run` at once on one new store. Each used to deliver every alert, and the
/// two first runs raced the migrations; now the second waits for the first's writer lock, and
/// the alert goes out once.
#[test]
fn two_runs_at_once_on_one_store_deliver_each_alert_once() {
    let pki = TempPki::new();
    let server = SmtpServer::start(pki.dir(), &pki.pki, None);
    for trial in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let path = config(
            dir.path(),
            &pki.ca,
            &broken_site(),
            server.port,
            "PROBE_TEST_TWICE_PASSWORD",
        );
        let before = server.messages().len();
        let run = || {
            probe(
                &["run", "-c", path.to_str().unwrap()],
                "PROBE_TEST_TWICE_PASSWORD",
            )
            .spawn()
            .unwrap()
        };
        let (mut first, mut second) = (run(), run());
        let codes = (
            exit_within(&mut first, Duration::from_secs(40)),
            exit_within(&mut second, Duration::from_secs(40)),
        );
        assert_eq!(
            codes,
            (Some(2), Some(2)),
            "trial {trial}: both runs probe and report the site down (no exit 3)\n{}\n{}",
            stderr_of(&mut first),
            stderr_of(&mut second)
        );
        let store = SqliteStore::open_read_only(&dir.path().join("probe.sqlite")).unwrap();
        assert_eq!(
            store.result_count("broken").unwrap(),
            2,
            "both results kept"
        );
        assert_eq!(
            server.messages().len(),
            before + 1,
            "trial {trial}: one alert, delivered once"
        );
    }
}

/// Item 8: the server accepts the mail, and the store is locked right then (by another program,
/// for 8 s: longer than SQLite's busy timeout). The marking is retried until it is recorded, so
/// the next run does not send the mail again.
#[test]
fn a_mail_accepted_while_the_store_is_locked_is_still_recorded_once() {
    let pki = TempPki::new();
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("probe.sqlite");
    let options = SmtpOptions {
        lock_store: Some((store_path.clone(), 8.0)),
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start_with(pki.dir(), &pki.pki, None, &options);
    let path = config(
        dir.path(),
        &pki.ca,
        &broken_site(),
        server.port,
        "PROBE_TEST_LOCKED_PASSWORD",
    );
    let run = || {
        let mut child = probe(
            &["run", "-c", path.to_str().unwrap()],
            "PROBE_TEST_LOCKED_PASSWORD",
        )
        .spawn()
        .unwrap();
        let code = exit_within(&mut child, Duration::from_secs(60));
        (code, stderr_of(&mut child))
    };
    let (code, stderr) = run();
    assert_eq!(
        code,
        Some(2),
        "the run completes despite the lock: {stderr}"
    );
    assert_eq!(server.messages().len(), 1);
    let sent: Option<i64> = rusqlite::Connection::open(&store_path)
        .unwrap()
        .query_row("SELECT sent_at FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert!(sent.is_some(), "recorded as sent");
    let (code, stderr) = run();
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(server.messages().len(), 1, "not sent a second time");
}

/// Item 13: an SMTP server that waits 20 s before every reply. Delivery runs beside probing, so
/// a healthy site on a 1 s interval keeps being probed; SIGTERM stops within its bounds; a second
/// signal exits at once.
#[test]
fn a_tarpitting_mail_server_stalls_neither_probing_nor_stopping() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pki = TempPki::new();
    let healthy = runtime.block_on(tls_server(
        &pki.pki.good(),
        Alpn::H2AndHttp11,
        Behaviour::ok(),
    ));
    let options = SmtpOptions {
        tarpit_secs: Some(20.0),
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start_with(pki.dir(), &pki.pki, None, &options);
    let sites = format!(
        "  - name: healthy\n    url: https://probe.test:{port}/\n    edge: \"{addr}\"\n{broken}",
        port = healthy.addr.port(),
        addr = healthy.addr,
        broken = broken_site()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        &pki.ca,
        &sites,
        server.port,
        "PROBE_TEST_TARPIT_PASSWORD",
    );
    let store = dir.path().join("probe.sqlite");
    let watch = || {
        probe(
            &["watch", "-c", path.to_str().unwrap()],
            "PROBE_TEST_TARPIT_PASSWORD",
        )
        .spawn()
        .unwrap()
    };
    let results = |site: &str| -> i64 {
        SqliteStore::open_read_only(&store)
            .and_then(|s| s.result_count(site))
            .unwrap_or(0)
    };

    let mut first = watch();
    std::thread::sleep(Duration::from_secs(8));
    let probed = results("healthy");
    assert!(
        probed >= 5,
        "the healthy site was probed {probed} times in 8 s on a 1 s interval while mail waited on the tarpit"
    );
    assert!(results("broken") >= 5, "the failing site too");
    let stopping = Instant::now();
    signal(&first, "TERM");
    let code = exit_within(&mut first, Duration::from_secs(14));
    assert_eq!(
        code,
        Some(0),
        "stopped within the probes' deadline and the delivery grace (took {:?}): {}",
        stopping.elapsed(),
        stderr_of(&mut first)
    );

    // Stopped again, and signalled twice: the second signal ends it at once.
    let mut second = watch();
    std::thread::sleep(Duration::from_secs(3));
    signal(&second, "TERM");
    std::thread::sleep(Duration::from_millis(300));
    let again = Instant::now();
    signal(&second, "TERM");
    let code = exit_within(&mut second, Duration::from_secs(2));
    assert_eq!(
        code,
        Some(128 + 15),
        "the second signal exits at once (waited {:?})",
        again.elapsed()
    );
    drop(healthy);
}

/// A running `probe watch --listen` with one quiet site; killed on drop.
struct FeedServer {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FeedServer {
    fn start() -> FeedServer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("probes.yaml");
        let text = format!(
            "defaults:\n  interval: 1h\n  timeout: 1s\nsites:\n  - name: quiet\n    url: https://probe.test/\n    edge: \"{}\"\nstore:\n  path: probe.sqlite\n",
            refused_port()
        );
        std::fs::write(&path, text).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", support::free_tcp_port())
            .parse()
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["watch", "-c", path.to_str().unwrap()])
            .arg(format!("--listen={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(
            support::wait_for_tcp(addr.port(), &mut child),
            "the feed server did not start"
        );
        FeedServer {
            child,
            addr,
            _dir: dir,
        }
    }
}

/// A keep-alive client from `source`: one HEAD answered, then the connection held open.
async fn hold_connection(
    source: std::net::IpAddr,
    to: SocketAddr,
) -> Option<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source, 0)).ok()?;
    let mut stream = socket.connect(to).await.ok()?;
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nHost: status.test\r\n\r\n")
        .await
        .ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(stream)
}

/// `GET /status.json` from `source`, closing after; the status, or `None` when closed without
/// an answer (within 5 s).
async fn get_from(source: [u8; 4], to: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(source.into(), 0)).ok()?;
    let mut stream = socket.connect(to).await.ok()?;
    stream
        .write_all(b"GET /status.json HTTP/1.1\r\nHost: status.test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1)?.parse().ok()
}

/// Whether the server still holds `stream` open (no end of file within a moment).
async fn still_open(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf))
        .await
        .is_err()
}

/// The number of file descriptors `pid` holds.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Item 14: 260 keep-alive clients from 260 addresses took the 256 slots for their whole
/// lifetime and everyone else was closed without an answer. Now the idlest connection makes room;
/// one address holds at most 32 (making room from its own); and clients that never finish their
/// headers cannot make the server hold more than a bounded number of sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_holding_every_connection_cannot_lock_the_feed_server_out() {
    use tokio::io::AsyncWriteExt;
    let feeds = FeedServer::start();
    let addr = feeds.addr;
    let baseline = open_files(feeds.child.id());
    // 260 clients, one address each (all of 127.0.0.0/8 is this machine).
    let mut held = Vec::new();
    for i in 0..260u32 {
        let source = std::net::Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8);
        if let Some(stream) = hold_connection(source.into(), addr).await {
            held.push(stream);
        }
    }
    assert_eq!(held.len(), 260, "each was answered once");
    let answered = get_from([127, 0, 0, 3], addr).await;
    assert_eq!(
        answered,
        Some(200),
        "a newcomer is answered while 260 hold connections"
    );
    drop(held);

    // One address holding connections: every one is answered, at most 32 stay open.
    let mut greedy = Vec::new();
    for _ in 0..40 {
        if let Some(stream) = hold_connection([127, 0, 0, 2].into(), addr).await {
            greedy.push(stream);
        }
    }
    assert_eq!(greedy.len(), 40, "each answered");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut open = 0;
    for stream in &mut greedy {
        if still_open(stream).await {
            open += 1;
        }
    }
    assert!((1..=32).contains(&open), "{open} held from one address");
    assert_eq!(get_from([127, 0, 0, 3], addr).await, Some(200));
    drop(greedy);

    // 400 clients that never finish their headers, each from its own address: the server holds
    // a bounded number of sockets, and still answers a newcomer.
    let mut trickling = Vec::new();
    for i in 0..400u32 {
        let source = std::net::Ipv4Addr::new(127, 0, 10 + (i / 250) as u8, 1 + (i % 250) as u8);
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            continue;
        };
        if socket.bind(SocketAddr::new(source.into(), 0)).is_err() {
            continue;
        }
        if let Ok(mut stream) = socket.connect(addr).await {
            let _ = stream
                .write_all(b"GET / HTTP/1.1\r\nHost: status.test\r\n")
                .await;
            trickling.push(stream);
        }
    }
    let held_files = open_files(feeds.child.id());
    assert!(
        held_files <= baseline + 256 + 64 + 8,
        "{held_files} file descriptors held (baseline {baseline})"
    );
    // Those made to close are cut within a quarter of a second; then a newcomer gets in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_from([127, 0, 0, 3], addr).await, Some(200));
    drop(trickling);
}
