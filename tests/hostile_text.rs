//! Text from the network and from config strings, made safe at every output edge: a certificate
//! whose common name holds terminal escapes, a bell, a forged log line and a bidi override
//! reaches the ad-hoc table, `--json`, `probe run`'s output, its logs, the mail, index.html,
//! incidents.atom and the badge only as visible escapes, and every XML feed stays well-formed.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use probe::feeds::{render_all, FeedSnapshot, LatestFacts, SiteFeed};
use probe::store::{CauseRecord, IncidentRecord};
use support::pki::TempPki;
use support::servers::{tls_server, Alpn, Behaviour};
use support::smtp::{SmtpServer, PASSWORD, USER};
use time::OffsetDateTime;

/// What a hostile server may put in its certificate's common name.
const HOSTILE_CN: &str =
    "evil\x01\x1b[2J\x1b]0;x\x07\n2026-12-01T00:00:00.000000Z  INFO forged: all clear\u{202e}";

/// Every character is safe for a terminal, a log or XML (newlines between lines aside).
fn assert_clean(what: &str, text: &str) {
    let bad: Vec<char> = text
        .chars()
        .filter(|c| *c != '\n' && probe::text::is_unsafe(*c))
        .collect();
    assert!(bad.is_empty(), "{what} holds {bad:?}:\n{text}");
}

/// Parses `path` with Python's strict XML parser; panics with its complaint when ill-formed.
fn assert_well_formed_xml(path: &Path) {
    let python = support::require_program("python3", "/usr/bin/python3");
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} is not well-formed XML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text and HTML parts of a received mail, decoded (quoted-printable, base64) by Python's
/// email package.
fn mail_parts(eml: &str) -> String {
    let python = support::require_program("python3", "/usr/bin/python3");
    let mut child = Command::new(python)
        .args([
            "-c",
            "import sys, email\nm = email.message_from_string(sys.stdin.read())\nfor p in m.walk():\n    if p.get_content_maintype() == 'text':\n        sys.stdout.write(p.get_payload(decode=True).decode('utf-8'))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(eml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `probe watch -c config ARGS` until the site `hostile` has two more results in `db`, then
/// stops it; returns its logs.
fn watch_two_probes(config: &Path, db: &Path, args: &[&str]) -> String {
    let results = || {
        probe::store::SqliteStore::open_read_only(db)
            .and_then(|s| s.result_count("hostile"))
            .unwrap_or(0)
    };
    let before = results();
    let watch = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["watch", "-c", config.to_str().unwrap()])
        .args(args)
        .env("PROBE_TEST_HOSTILE_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while results() < before + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "watch did not probe"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(watch.id().to_string())
        .status();
    String::from_utf8(watch.wait_with_output().unwrap().stderr).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_certificate_name_reaches_no_output_raw() {
    let pki = TempPki::new();
    let leaf = pki
        .pki
        .leaf_named(&["probe.test"], HOSTILE_CN, -1, 90, true);
    let server = tls_server(&leaf, Alpn::H2AndHttp11, Behaviour::ok()).await;
    let url = format!("https://probe.test:{}/", server.addr.port());
    let edge = server.addr.to_string();

    // The ad-hoc table shows the name escaped, as `\x1b[2J`, on its own line.
    let (_, table) = support::run_cli(&[&url, "--edge", &edge]).await;
    assert_clean("the table", &table);
    assert!(
        table.contains("evil\\x01\\x1b[2J\\x1b]0;x\\x07\\x0a2026"),
        "{table}"
    );
    assert!(
        !table.lines().any(|l| l.starts_with("2026-12-01")),
        "{table}"
    );
    // --json keeps the name as it was, escaped by JSON itself.
    let (report, _) = support::run_json(&[&url, "--edge", &edge]).await;
    let (_, json) = support::run_cli(&[&url, "--edge", &edge, "--json"]).await;
    assert_clean("--json", &json);
    let leaf_subject = &report.observations[0].tls.as_ref().unwrap().chain[0].subject;
    assert!(leaf_subject.contains("\x1b[2J"), "{leaf_subject:?}");

    // `probe run`: its output, its logs, the mail and every feed.
    std::env::set_var("PROBE_TEST_HOSTILE_PASSWORD", PASSWORD);
    let smtp = SmtpServer::start(pki.dir(), &pki.pki, None);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    std::fs::write(
        &config,
        format!(
            "sites:\n  - name: hostile\n    url: {url}\n    edge: \"{edge}\"\n    interval: 2s\n    timeout: 1s\nalerts:\n  to: [ops@example.com]\n  confirm_retries: 0\nsmtp:\n  host: 127.0.0.1\n  port: {}\n  username: {USER}\n  password_env: PROBE_TEST_HOSTILE_PASSWORD\n  from: probe@example.com\n  ca_file: {}\n  timeout: 5s\nstore:\n  path: probe.sqlite\nfeeds:\n  public: false\n",
            smtp.port, pki.ca
        ),
    )
    .unwrap();
    let feeds = dir.path().join("feeds");
    let out = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["run", "-c", config.to_str().unwrap(), "--feeds-dir"])
        .arg(&feeds)
        .env("PROBE_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the site is down");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_clean("probe run's output", &stdout);
    assert!(stdout.contains("evil\\x01\\x1b[2J"), "{stdout}");
    assert_clean("probe run's logs", &stderr);
    for line in stderr.lines() {
        assert!(
            line.starts_with("20") && !line.contains("INFO forged"),
            "a log line that is not one of ours: {line:?}"
        );
    }
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    let body = mail_parts(&mails[0]).replace("\r\n", "\n");
    assert_clean("the mail", &body);
    assert!(body.contains("evil\\x01\\x1b[2J"), "{body}");
    for file in [
        "index.html",
        "incidents.atom",
        "status.json",
        "badge/hostile.svg",
    ] {
        let text = std::fs::read_to_string(feeds.join(file)).unwrap();
        assert_clean(file, &text);
    }
    assert!(std::fs::read_to_string(feeds.join("incidents.atom"))
        .unwrap()
        .contains("evil\\x01\\x1b[2J"));
    assert_well_formed_xml(&feeds.join("incidents.atom"));
    assert_well_formed_xml(&feeds.join("badge/hostile.svg"));
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(feeds.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["components"][0]["name"], "hostile");

    // `probe watch` logs each probe with its summary, the name in it: still one line per event.
    let db = dir.path().join("probe.sqlite");
    let logs = watch_two_probes(&config, &db, &[]);
    assert!(logs.contains("evil\\x01\\x1b[2J"), "{logs}");
    assert_clean("probe watch's logs", &logs);
    for line in logs.lines() {
        assert!(
            line.starts_with("20"),
            "a log line that is not one of ours: {line:?}"
        );
    }

    // The same as JSON log lines: each one JSON, nothing raw in the text, the name kept as data.
    let logs = watch_two_probes(&config, &db, &["--log-format", "json"]);
    assert_clean("probe watch's JSON logs", &logs);
    let mut named = false;
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        named |= value["fields"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains('\u{202e}') && s.contains("\x1b[2J"));
    }
    assert!(named, "the summary keeps the name as data: {logs}");

    // check-config shows what the file says, escaped.
    let hostile_config = dir.path().join("hostile.yaml");
    std::fs::write(
        &hostile_config,
        "sites:\n  - url: example.com\nsmtp:\n  host: \"smtp\\e[2J\\a.example.com\"\n  from: probe@example.com\n",
    )
    .unwrap();
    let checked = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["check-config", "-c", hostile_config.to_str().unwrap()])
        .output()
        .unwrap();
    let shown = String::from_utf8(checked.stdout).unwrap();
    assert_clean("check-config", &shown);
    assert!(
        shown.contains("smtp: smtp\\x1b[2J\\x07.example.com:587"),
        "{shown}"
    );
}

/// A site name that got into the store before names were checked, or any other hostile string in
/// a feed, cannot make incidents.atom or a badge ill-formed.
#[test]
fn feeds_stay_well_formed_xml_whatever_the_names_hold() {
    let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
    let name = "shop\x01\x0b\u{fffe}<eu>&\x1b[31m";
    let mut report: probe::ProbeReport = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/lab_fpm_stopped.json"
        ))
        .unwrap(),
    )
    .unwrap();
    report.diagnosis.summary = format!("summary with {HOSTILE_CN}");
    let snapshot = FeedSnapshot {
        generated_at: now,
        title: format!("Status {HOSTILE_CN}"),
        url: None,
        // The operator's view: every text the server sent goes through.
        public: false,
        zone: Default::default(),
        sites: vec![SiteFeed {
            name,
            url: "https://shop.example/",
            latest: Some(LatestFacts {
                at: now,
                diagnosis: report.diagnosis.clone().into(),
                requests: Box::new([]),
            }),
            in_maintenance: false,
            counts: [(1, 0); 4],
            days: Vec::new().into(),
            regions: Box::new([]),
            open_lighter: None,
            months: Default::default(),
        }],
        incidents: vec![IncidentRecord {
            also: Vec::new(),
            site: name.into(),
            number: 1,
            severity: probe::alert::Severity::Down,
            group: Some(format!("origin {name}")),
            opened_at: now,
            closed_at: None,
            causes: vec![CauseRecord {
                at: now,
                cause: "fpm_unreachable".into(),
                summary: report.diagnosis.summary.clone(),
                evidence: vec![HOSTILE_CN.into()],
            }],
        }],
        maintenance: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    for file in render_all(&snapshot) {
        let text = String::from_utf8(file.body.clone()).unwrap();
        assert_clean(&file.path, &text);
        let path = dir.path().join(file.path.replace('/', "_"));
        std::fs::write(&path, &file.body).unwrap();
        if file.path.ends_with(".atom") || file.path.ends_with(".svg") {
            assert_well_formed_xml(&path);
        }
    }
}
