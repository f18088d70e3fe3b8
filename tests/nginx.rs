//! Interoperability with the real thing: Debian's nginx as the origin, TLS + HTTP/2, serving a
//! static file next to the page.

mod support;

use probe::diagnose::Cause;
use probe::Status;
use support::nginx::Nginx;
use support::pki::Pki;
use support::run_json;

const STATIC: &str = "/wp-includes/css/dashicons.min.css";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nginx_over_tls_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let leaf = pki.good();
    let nginx = Nginx::start(
        dir.path(),
        &leaf,
        &[
            ("/index.html", "<h1>probe lab</h1>"),
            (STATIC, ".dashicons{}"),
        ],
        "",
    );
    let address = format!("127.0.0.1:{}", nginx.port);
    let ca = pki.ca_path.display().to_string();
    let (report, _) = run_json(&[
        "https://probe.test/",
        "--edge",
        &address,
        "--origin",
        &address,
        "--static-path",
        STATIC,
        "--ca-file",
        &ca,
    ])
    .await;

    assert_eq!(report.status, Status::Ok, "{:?}", report.diagnosis);
    assert_eq!(
        report.observations.len(),
        4,
        "edge and origin × page and static"
    );
    for o in &report.observations {
        let response = o.response.as_ref().unwrap_or_else(|| panic!("{o:?}"));
        assert_eq!(response.status, 200);
        assert_eq!(response.http_version, "HTTP/2");
        let server = response.headers.server.as_deref().unwrap_or_default();
        assert!(server.starts_with("nginx"), "{server}");
        assert!(response.body_complete);
        let tls = o.tls.as_ref().unwrap();
        assert!(tls.verified, "{:?}", tls.verify_message);
        assert_eq!(tls.alpn.as_deref(), Some("h2"));
        assert_eq!(
            tls.chain.len(),
            2,
            "nginx sends the leaf and the CA from its file"
        );
    }
    let static_obs = report
        .observations
        .iter()
        .find(|o| o.url.ends_with(STATIC))
        .unwrap();
    let response = static_obs.response.as_ref().unwrap();
    assert_eq!(response.body_excerpt, ".dashicons{}");
    assert_eq!(response.headers.content_type.as_deref(), Some("text/css"));
    assert_eq!(response.headers.content_length.as_deref(), Some("12"));
    let page = &report.observations[0]
        .response
        .as_ref()
        .unwrap()
        .body_excerpt;
    assert_eq!(page, "<h1>probe lab</h1>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_static_file_on_real_nginx_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(dir.path(), &pki.good(), &[("/index.html", "ok")], "");
    let address = format!("127.0.0.1:{}", nginx.port);
    let ca = pki.ca_path.display().to_string();
    let (report, _) = run_json(&[
        "https://probe.test/",
        "--edge",
        &address,
        "--static-path",
        STATIC,
        "--ca-file",
        &ca,
    ])
    .await;
    assert_eq!(report.status, Status::Degraded, "{:?}", report.diagnosis);
    assert_eq!(report.diagnosis.cause, Cause::Unknown);
    assert!(
        report.diagnosis.summary.contains("edge static answers 404"),
        "{}",
        report.diagnosis.summary
    );
}

/// With `keepalive_timeout 0`, nginx sends its HTTP/2 GOAWAY before the response headers. Every
/// answer must still arrive. (hyper's HTTP/2 dispatcher lost about one in 600 such answers in the
/// release benchmark — a race this test cannot force; it guards the sequence itself, on the real
/// server that produces it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_goaway_before_the_answer_never_loses_it() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let nginx = Nginx::start(
        dir.path(),
        &pki.good(),
        &[("/index.html", "ok"), (STATIC, ".dashicons{}")],
        "keepalive_timeout 0;",
    );
    let address = format!("127.0.0.1:{}", nginx.port);
    let ca = pki.ca_path.display().to_string();
    let args = [
        "https://probe.test/",
        "--edge",
        &address,
        "--origin",
        &address,
        "--static-path",
        STATIC,
        "--ca-file",
        &ca,
        "--samples",
        "50",
    ];
    let (report, _) = run_json(&args).await;
    assert_eq!(report.observations.len(), 200);
    let lost: Vec<_> = report
        .observations
        .iter()
        .filter_map(|o| o.error.as_ref())
        .collect();
    assert!(
        lost.is_empty(),
        "{} of 200 lost: {:?}",
        lost.len(),
        lost.first()
    );
    assert!(report
        .observations
        .iter()
        .all(|o| o.response.as_ref().unwrap().http_version == "HTTP/2"));
}
