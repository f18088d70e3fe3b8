//! Webhooks end to end: the lab's site goes through an incident (opened, cause changed,
//! resolved) while a real HTTP server (Python's http.server) receives the POSTs. The first
//! delivery meets the receiver down (503) and is retried after its backoff; each transition
//! arrives exactly once, in order, signed, with the diagnosis.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use probe::config;
use probe::schedule::run_once;
use probe::store::SqliteStore;
use serde_json::Value;
use support::lab::{Lab, OriginSettings};
use time::OffsetDateTime;

const SECRET: &str = "shared webhook secret";

struct Receiver {
    child: Child,
    port: u16,
    inbox: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start(dir: &Path) -> Receiver {
        let python = support::require_program("python3", "/usr/bin/python3");
        let inbox = dir.join("hooks");
        std::fs::create_dir_all(&inbox).unwrap();
        let port = support::free_tcp_port();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/webhook_receiver.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .arg(&inbox)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Receiver { child, port, inbox }
    }

    fn answer(&self, status: Option<u16>) {
        let flag = self.inbox.join("answer");
        match status {
            Some(s) => std::fs::write(flag, s.to_string()).unwrap(),
            None => std::fs::remove_file(flag).unwrap(),
        }
    }

    fn received(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.inbox)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

fn minute(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000 + n * 60).unwrap()
}

fn header<'a>(delivery: &'a Value, name: &str) -> &'a str {
    delivery["headers"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_incident_transition_is_posted_once_signed_and_retried_while_the_receiver_is_down() {
    std::env::set_var("PROBE_TEST_WEBHOOK_SECRET", SECRET);
    let mut lab = Lab::start(&OriginSettings::default());
    let receiver = Receiver::start(lab.dir.path());
    let address = lab.origin.address();
    let text = format!(
        r#"defaults:
  timeout: 3s
  ca_file: {ca}
sites:
  - name: lab
    url: https://probe.test/switch.php
    edge: "{address}"
    origins: ["{address}"]
alerts:
  confirm_retries: 0
  confirm_runs: 1
  recover_runs: 1
store:
  path: probe.sqlite
webhooks:
  - url: http://127.0.0.1:{port}/hooks/probe?token=abc
    secret_env: PROBE_TEST_WEBHOOK_SECRET
"#,
        ca = lab.pki.ca_path.display(),
        port = receiver.port
    );
    let path = lab.dir.path().join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}")).config;
    let mut store = SqliteStore::open(&config.store_path).unwrap();

    run_once(&config, &mut store, minute(0)).await.unwrap();
    assert!(receiver.received().is_empty(), "healthy: nothing to say");

    // Opened while the receiver answers 503: it waits, and goes out once after its backoff.
    receiver.answer(Some(503));
    lab.origin.fpm.stop();
    let pass = run_once(&config, &mut store, minute(1)).await.unwrap();
    assert_eq!((pass.mails_sent, pass.mails_waiting), (0, 1));
    receiver.answer(None);
    let pass = run_once(&config, &mut store, minute(2)).await.unwrap();
    assert_eq!((pass.mails_sent, pass.mails_waiting), (1, 0));

    // The cause changes, then the site recovers.
    lab.origin.fail_with(Some(500));
    lab.origin.fpm = support::php_fpm::PhpFpm::start(lab.dir.path(), &Default::default());
    run_once(&config, &mut store, minute(3)).await.unwrap();
    lab.origin.fail_with(None);
    run_once(&config, &mut store, minute(4)).await.unwrap();
    for m in 5..8 {
        let pass = run_once(&config, &mut store, minute(m)).await.unwrap();
        assert_eq!((pass.mails_sent, pass.mails_waiting), (0, 0), "minute {m}");
    }

    let got = receiver.received();
    let events: Vec<&str> = got.iter().map(|d| header(d, "X-Probe-Event")).collect();
    assert_eq!(
        events,
        [
            "incident.opened",
            "incident.cause_changed",
            "incident.resolved"
        ]
    );
    for delivery in &got {
        assert_eq!(delivery["path"], "/hooks/probe?token=abc");
        assert_eq!(header(delivery, "Content-Type"), "application/json");
        let body = delivery["body"].as_str().unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = ring::hmac::sign(&key, body.as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            header(delivery, "X-Probe-Signature"),
            format!("sha256={hex}")
        );
    }
    assert!(header(&got[0], "X-Probe-Delivery").starts_with("lab-1-opened-webhook-"));
    let ids: std::collections::HashSet<&str> =
        got.iter().map(|d| header(d, "X-Probe-Delivery")).collect();
    assert_eq!(ids.len(), 3, "one delivery id per transition");
    let opened: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(opened["event"], "incident.opened");
    assert_eq!(opened["site"], "lab");
    assert_eq!(opened["incident"], 1);
    assert_eq!(opened["diagnosis"]["cause"], "fpm_unreachable");
    assert_eq!(opened["diagnosis"]["hop"], "origin_fpm");
    assert!(!opened["diagnosis"]["next_steps"]
        .as_array()
        .unwrap()
        .is_empty());
    let changed: Value = serde_json::from_str(got[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&changed["previous_cause"], &changed["diagnosis"]["cause"]),
        (&Value::from("fpm_unreachable"), &Value::from("app_error"))
    );
    let resolved: Value = serde_json::from_str(got[2]["body"].as_str().unwrap()).unwrap();
    assert_eq!(resolved["duration_seconds"], 180);
}
