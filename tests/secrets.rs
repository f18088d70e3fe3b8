//! No secret in any output: a full `probe run` and `probe watch` (feeds served, a reload with a
//! password written where its variable's name belongs), `probe check-config` and an ad-hoc
//! probe, with an SMTP password, a webhook secret, a token in the site's URL and one in the
//! webhook's URL. Every log line, error, feed file, served feed, mail and webhook body is searched
//! for each secret (and for the base64 forms SMTP logins use); the store for those it need not
//! keep. The site itself still gets the token it was configured with.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::pki::TempPki;
use support::servers::{tls_server, Alpn, Behaviour};
use support::smtp::{SmtpServer, PASSWORD, USER};
use support::webhook::Receiver;

const WEBHOOK_SECRET: &str = "webhook-secret-7f3a0c";
const URL_TOKEN: &str = "url-token-51c2b9";
const HOOK_TOKEN: &str = "hook-token-9d8e44";
const STATUS_TOKEN: &str = "status-token-3b6f21";

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form in which a secret could leak: as written, and the SMTP password as AUTH PLAIN
/// and AUTH LOGIN send it.
fn forms() -> Vec<(String, String)> {
    vec![
        ("the SMTP password".into(), PASSWORD.into()),
        (
            "the SMTP password as AUTH PLAIN".into(),
            base64(format!("\0{USER}\0{PASSWORD}").as_bytes()),
        ),
        (
            "the SMTP password in base64".into(),
            base64(PASSWORD.as_bytes()),
        ),
        ("the webhook secret".into(), WEBHOOK_SECRET.into()),
        ("the site URL's token".into(), URL_TOKEN.into()),
        ("the webhook URL's token".into(), HOOK_TOKEN.into()),
        ("the status pages' token".into(), STATUS_TOKEN.into()),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    for (name, secret) in forms() {
        assert!(!text.contains(&secret), "{what} holds {name}:\n{text}");
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write_config(
    path: &Path,
    site: &str,
    smtp_port: u16,
    ca: &str,
    hook_port: u16,
    password_env: &str,
) {
    std::fs::write(
        path,
        format!(
            r#"defaults:
  interval: 2s
  timeout: 1s
  ca_file: {ca}
sites:
  - name: shop
    url: "https://probe.test:{port}/status?token={URL_TOKEN}&page=1"
    edge: "{site}"
    origins: ["{site}"]
    fpm_status: /fpm-status
    status_header: {{name: X-Status-Token, value_env: PROBE_TEST_SECRETS_STATUS}}
alerts:
  to: [ops@example.com]
  confirm_retries: 0
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  username: {USER}
  password_env: {password_env}
  from: probe@example.com
  ca_file: {ca}
  timeout: 5s
webhooks:
  - url: "http://127.0.0.1:{hook_port}/hook?token={HOOK_TOKEN}"
    secret_env: PROBE_TEST_SECRETS_WEBHOOK
  - url: "http://127.0.0.1:{down}/down/{HOOK_TOKEN}?token={HOOK_TOKEN}"
feeds:
  url: https://status.example.com/
store:
  path: probe.sqlite
"#,
            port = site.rsplit(':').next().unwrap(),
            down = support::servers::refused_port().port()
        ),
    )
    .unwrap();
}

fn probe_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_probe"));
    command
        .args(args)
        .env("PROBE_TEST_SECRETS_SMTP", PASSWORD)
        .env("PROBE_TEST_SECRETS_WEBHOOK", WEBHOOK_SECRET)
        .env("PROBE_TEST_SECRETS_STATUS", STATUS_TOKEN)
        .env("PROBE_LOG", "debug");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let pki = TempPki::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let site = tls_server(
        &pki.pki.good(),
        Alpn::H2AndHttp11,
        Behaviour::Record {
            status: 502,
            seen: seen.clone(),
        },
    )
    .await;
    let smtp = SmtpServer::start(pki.dir(), &pki.pki, None);
    let hooks = Receiver::start(pki.dir());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    let address = site.addr.to_string();
    write_config(
        &config,
        &address,
        smtp.port,
        &pki.ca,
        hooks.port,
        "PROBE_TEST_SECRETS_SMTP",
    );
    let config_arg = config.to_str().unwrap().to_string();
    let feeds = dir.path().join("feeds");

    // A full pass: probed, alerted by mail (logged in over STARTTLS) and by two webhooks, one of
    // them unreachable (its error is logged).
    let run = tokio::task::spawn_blocking({
        let (config_arg, feeds) = (config_arg.clone(), feeds.clone());
        move || {
            probe_command(&["run", "-c", &config_arg, "--feeds-dir"])
                .arg(&feeds)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", text(&run));
    assert_no_secret("probe run's output and logs", &text(&run));
    assert!(
        text(&run).contains("not delivered; will retry")
            && text(&run).contains("http://127.0.0.1:"),
        "the unreachable webhook's error is logged, by its host: {}",
        text(&run)
    );
    assert_eq!(smtp.messages().len(), 1, "the mail went out");
    assert_eq!(hooks.received().len(), 1, "the webhook went out");

    // The watch: probes, serves the feeds; then a reload with the
    // password itself written where its variable's name belongs, then SIGTERM.
    let listen = format!("127.0.0.1:{}", support::free_tcp_port());
    let mut watch = probe_command(&["watch", "-c", &config_arg, "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listen: std::net::SocketAddr = listen.parse().unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the feed server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut served = String::new();
    for path in [
        "/",
        "/status.json",
        "/incidents.atom",
        "/metrics",
        "/badge/shop.svg",
    ] {
        let (status, headers, body) =
            tokio::task::spawn_blocking(move || support::http_get(listen, path))
                .await
                .unwrap();
        assert_eq!(status, 200, "{path}");
        served.push_str(&headers.join("\n"));
        served.push_str(&String::from_utf8_lossy(&body));
    }
    assert!(
        served.contains("token=***"),
        "the URL is shown, its token masked"
    );
    assert_no_secret("the served feeds", &served);
    write_config(&config, &address, smtp.port, &pki.ca, hooks.port, PASSWORD);
    let _ = Command::new("kill")
        .arg("-HUP")
        .arg(watch.id().to_string())
        .status();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(watch.id().to_string())
        .status();
    let until = Instant::now() + Duration::from_secs(20);
    while watch.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "watch did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let watch = watch.wait_with_output().unwrap();
    let logs = text(&watch);
    assert!(
        logs.contains("this looks like a secret, not a variable name"),
        "the reload was refused with a reason: {logs}"
    );
    assert_no_secret("probe watch's logs", &logs);

    // check-config on that file, and an ad-hoc probe of the URL (table and JSON).
    let checked = probe_command(&["check-config", "-c", &config_arg])
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(3));
    assert_no_secret("check-config", &text(&checked));
    let url = format!(
        "https://probe.test:{}/status?token={URL_TOKEN}",
        site.addr.port()
    );
    for json in [false, true] {
        let mut args = vec![
            url.as_str(),
            "--edge",
            address.as_str(),
            "--origin",
            address.as_str(),
            "--fpm-status",
            "/fpm-status",
            "--status-header",
            "X-Status-Token=PROBE_TEST_SECRETS_STATUS",
            "--ca-file",
            pki.ca.as_str(),
        ];
        if json {
            args.push("--json");
        }
        let adhoc = tokio::task::spawn_blocking({
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            move || probe_command(&[]).args(&args).output().unwrap()
        })
        .await
        .unwrap();
        assert_eq!(adhoc.status.code(), Some(2), "{}", text(&adhoc));
        assert_no_secret("the ad-hoc probe", &text(&adhoc));
        assert!(text(&adhoc).contains("token=***"), "{}", text(&adhoc));
    }

    // What was written and sent.
    for entry in support::walk(&feeds) {
        assert_no_secret(
            &entry.display().to_string(),
            &std::fs::read_to_string(&entry).unwrap(),
        );
    }
    for mail in smtp.messages() {
        assert_no_secret("a mail", &mail);
    }
    for delivery in hooks.received() {
        // The receiver's own URL carries its token by design; everything probe wrote must not.
        assert_no_secret("a webhook body", delivery["body"].as_str().unwrap());
        let mut headers = delivery["headers"].clone();
        headers.as_object_mut().unwrap().remove("Host");
        assert_no_secret("webhook headers", &headers.to_string());
    }
    // The store and its write-ahead log (the webhook's own URL is kept there, to deliver to it).
    for file in ["probe.sqlite", "probe.sqlite-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        let store = String::from_utf8_lossy(&bytes);
        for secret in [PASSWORD, WEBHOOK_SECRET, URL_TOKEN, STATUS_TOKEN] {
            assert!(!store.contains(secret), "{file} keeps {secret:?}");
        }
    }
    // The site got what it was configured with, on both routes.
    let paths = seen.lock().unwrap().clone();
    assert!(
        paths
            .iter()
            .any(|p| p == &format!("/status?token={URL_TOKEN}&page=1")),
        "{paths:?}"
    );
    assert!(
        paths.iter().any(|p| p == "/fpm-status?json&full"),
        "{paths:?}"
    );
}
