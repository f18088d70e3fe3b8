//! Webhooks end to end: the lab's site goes through an incident (opened, cause changed,
//! resolved) while a real HTTP server (Python's http.server) receives the POSTs. The first
//! delivery meets the receiver down (503) and is retried after its backoff; each transition
//! arrives exactly once, in order, signed, with the diagnosis.

mod support;

use probe::config;
use probe::schedule::run::run_once;
use probe::store::SqliteStore;
use serde_json::Value;
use support::lab::{Lab, OriginSettings};
use support::webhook::Receiver;
use time::OffsetDateTime;

const SECRET: &str = "shared webhook secret";

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
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();

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
    assert_eq!(
        resolved["causes"],
        serde_json::json!(["fpm_unreachable", "app_error"]),
        "its causes in turn"
    );
}

/// A delivery its receiver refuses for good (400) is given up on its own: the other deliveries
/// to the same URL go out in the same pass instead of waiting behind it, and it is never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_refused_for_good_does_not_hold_back_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path());
    std::fs::write(
        receiver.inbox.join("refuse-containing"),
        "\"site\":\"poison\"",
    )
    .unwrap();
    let mut text = String::from("defaults:\n  timeout: 1s\nsites:\n");
    for name in ["poison", "fine", "also-fine"] {
        text.push_str(&format!(
            "  - name: {name}\n    url: https://probe.test/\n    edge: \"{}\"\n",
            support::servers::refused_port()
        ));
    }
    text.push_str(&format!(
        "alerts:\n  confirm_retries: 0\n  confirm_runs: 1\nstore:\n  path: probe.sqlite\nwebhooks:\n  - url: http://127.0.0.1:{}/hook\n",
        receiver.port
    ));
    let path = dir.path().join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}")).config;
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();

    let pass = run_once(&config, &mut store, minute(0)).await.unwrap();
    assert_eq!(
        (pass.mails_sent, pass.mails_waiting, pass.mails_given_up),
        (2, 0, 1),
        "the two others delivered in the same pass, the refused one given up"
    );
    let sites: Vec<String> = receiver
        .received()
        .iter()
        .map(|d| {
            let body: Value = serde_json::from_str(d["body"].as_str().unwrap()).unwrap();
            body["site"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(sites, ["fine", "also-fine"]);
    for m in 1..4 {
        let pass = run_once(&config, &mut store, minute(m * 60)).await.unwrap();
        assert_eq!(
            (pass.mails_sent, pass.mails_waiting, pass.mails_given_up),
            (0, 0, 0),
            "hour {m}: never retried"
        );
    }
}

/// A config whose one site is down (its edge refuses connections) and whose one webhook is the
/// receiver's.
fn one_site_config(dir: &std::path::Path, site: &str, receiver: &Receiver) -> std::path::PathBuf {
    let text = format!(
        "defaults:\n  timeout: 1s\nsites:\n  - name: {site}\n    url: https://probe.test/\n    edge: \"{}\"\nalerts:\n  confirm_retries: 0\n  confirm_runs: 1\nstore:\n  path: probe.sqlite\nwebhooks:\n  - url: http://127.0.0.1:{}/hook/secret-token\n",
        support::servers::refused_port(),
        receiver.port
    );
    let path = dir.join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `probe outbox -c FILE`: its output and exit code.
fn outbox_listing(config: &std::path::Path) -> (String, i32) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["outbox", "-c"])
        .arg(config)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// A 404 is the receiver saying this request will never be taken: given up at once, listed by
/// `probe outbox` with the answer, never retried. A 503 is the receiver being down for now: the
/// delivery waits, is listed as queued, and goes out after its backoff once the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_given_up_and_listed_while_a_503_is_retried() {
    let gone = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(gone.path());
    receiver.answer(Some(404));
    let path = one_site_config(gone.path(), "gone", &receiver);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}")).config;
    {
        let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
        let pass = run_once(&config, &mut store, minute(0)).await.unwrap();
        assert_eq!(
            (pass.mails_sent, pass.mails_waiting, pass.mails_given_up),
            (0, 0, 1)
        );
        receiver.answer(None);
        for hour in 1..3 {
            let pass = run_once(&config, &mut store, minute(hour * 60))
                .await
                .unwrap();
            assert_eq!(
                (pass.mails_sent, pass.mails_waiting, pass.mails_given_up),
                (0, 0, 0),
                "hour {hour}: never retried"
            );
        }
    }
    assert!(receiver.received().is_empty());
    let (listing, code) = outbox_listing(&path);
    assert_eq!(code, 2, "something given up is CRITICAL: {listing}");
    assert!(listing.starts_with("FAILED"), "{listing}");
    assert!(listing.contains("answered 404"), "{listing}");
    assert!(listing.contains("incident.opened"), "{listing}");
    assert!(
        !listing.contains("secret-token"),
        "the URL's path is not shown: {listing}"
    );
    assert!(listing.ends_with("0 waiting, 1 given up\n"), "{listing}");

    let down = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(down.path());
    receiver.answer(Some(503));
    let path = one_site_config(down.path(), "later", &receiver);
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}")).config;
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let pass = run_once(&config, &mut store, minute(0)).await.unwrap();
    assert_eq!(
        (pass.mails_sent, pass.mails_waiting, pass.mails_given_up),
        (0, 1, 0)
    );
    drop(store);
    let (listing, code) = outbox_listing(&path);
    assert_eq!(code, 1, "something waiting is WARNING: {listing}");
    assert!(listing.starts_with("QUEUED"), "{listing}");
    assert!(listing.contains("answered 503"), "{listing}");
    receiver.answer(None);
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let pass = run_once(&config, &mut store, minute(2)).await.unwrap();
    assert_eq!(
        (pass.mails_sent, pass.mails_waiting, pass.mails_given_up),
        (1, 0, 0),
        "delivered after its backoff"
    );
    assert_eq!(receiver.received().len(), 1);
    drop(store);
    let (listing, code) = outbox_listing(&path);
    assert_eq!((listing.as_str(), code), ("0 waiting, 0 given up\n", 0));
}
