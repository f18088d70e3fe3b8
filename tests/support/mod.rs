//! Test helpers: certificates, in-process servers, and real nginx / dnsmasq processes.
//! Everything listens on 127.0.0.1 only and is stopped when its handle is dropped.
#![allow(dead_code)]

pub mod chat;
pub mod dnsmasq;
pub mod edge;
pub mod lab;
pub mod mariadb;
pub mod nginx;
pub mod php_fpm;
pub mod pki;
pub mod postgres;
pub mod servers;
pub mod smtp;
pub mod watch;
pub mod webhook;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use probe::{Cli, ProbeReport, Status};

/// Runs the CLI in-process with `args` and returns the exit status and what it printed.
pub async fn run_cli(args: &[&str]) -> (Status, String) {
    use clap::Parser;
    let cli = Cli::try_parse_from(std::iter::once("probe").chain(args.iter().copied()))
        .expect("arguments parse");
    let mut out = Vec::new();
    let status = probe::run(&cli, &mut out).await.expect("probe runs");
    (status, String::from_utf8(out).unwrap())
}

/// Runs the CLI in-process with `--json` added and returns the parsed report and raw JSON.
pub async fn run_json(args: &[&str]) -> (ProbeReport, serde_json::Value) {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--json");
    let (status, text) = run_cli(&all).await;
    let report: ProbeReport = serde_json::from_str(&text).expect("valid report JSON");
    assert_eq!(report.status, status);
    (report, serde_json::from_str(&text).unwrap())
}

/// A recorded lab report from `tests/fixtures/NAME.json`.
pub fn fixture(name: &str) -> ProbeReport {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fixed moment plus `minute` minutes: the store tests' compressed clock.
pub fn minute(minute: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_800_000_000 + minute * 60).unwrap()
}

/// A child process, killed and reaped when dropped (however the test ends).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `done` every 250 ms until it holds; fails the test, naming `what`, after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Waits (at most 10 s) until 127.0.0.1:`port` accepts TCP, giving up early if `child` exits.
pub fn wait_for_tcp(port: u16, child: &mut Child) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The path of a program the tests need, or a panic that says how to install it.
pub fn require_program(name: &str, usual_path: &str) -> PathBuf {
    let usual = PathBuf::from(usual_path);
    if usual.exists() {
        return usual;
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    panic!("{name} is not installed: run ./scripts/install-test-deps.sh");
}

/// Saves `report` as `tests/fixtures/NAME.json` when `PROBE_RECORD_FIXTURES` is set: the lab's
/// real observations become the recorded fixtures the diagnosis is checked against offline
/// (`tests/fixtures.rs`). Without the variable, it does nothing.
pub fn record_fixture(name: &str, report: &ProbeReport) {
    if std::env::var_os("PROBE_RECORD_FIXTURES").is_none() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let text = probe::report::render_json(report);
    std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
}

/// Ends a server process as its service manager would: SIGTERM, then at most `grace` for a clean
/// shutdown, then SIGKILL.
pub fn stop_gracefully(child: Child, grace: Duration) {
    stop_with_signal(child, "-TERM", grace);
}

/// Sends `signal` (`-TERM`, `-INT`) to `child` and waits up to `grace` for it to end, then
/// kills it.
pub fn stop_with_signal(mut child: Child, signal: &str, grace: Duration) {
    let _ = std::process::Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status();
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// An HTTP/1.1 exchange over a plain TCP connection: sends `request` as written (so tests can
/// send what no client library would) and reads until the server closes. Returns the status, the
/// header lines and the body. Bounded by a 10 s read timeout.
pub fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, Vec<String>, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = answer[split + 4..].to_vec();
    let mut lines = head.lines().map(str::to_string);
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, lines.collect(), body)
}

/// `GET path` with `Connection: close`.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<String>, Vec<u8>) {
    raw_http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: status.test\r\nConnection: close\r\n\r\n"),
    )
}

/// The value of header `name` (case-insensitive) among `headers`.
pub fn header<'a>(headers: &'a [String], name: &str) -> Option<&'a str> {
    headers.iter().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Every file below `dir`, at any depth.
pub fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Asserts that `promtool check metrics` (Debian's prometheus) takes `exposition` without a
/// word of complaint.
pub fn assert_promtool_accepts(exposition: &str) {
    use std::io::Write as _;
    let promtool = require_program("promtool (Debian's prometheus)", "/usr/bin/promtool");
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs");
    check
        .stdin
        .take()
        .expect("its stdin")
        .write_all(exposition.as_bytes())
        .expect("promtool reads");
    let checked = check.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// Starts one of the tests' Python servers (`tests/support/SCRIPT`) with `args`, and returns
/// once it printed "ready".
pub fn start_python_server(script: &str, args: &[&std::ffi::OsStr]) -> Child {
    use std::io::BufRead as _;
    let python = require_program("python3", "/usr/bin/python3");
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script);
    let mut child = std::process::Command::new(python)
        .arg(path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("the server says it is ready");
    assert_eq!(line.trim(), "ready", "{script} did not start");
    child
}
