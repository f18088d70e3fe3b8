//! The engine against in-process TLS servers on loopback: certificates good and bad, HTTP/1.1 and
//! HTTP/2, refused ports, silence, bodies cut short, timing and concurrency.

mod support;

use std::time::{Duration, Instant};

use probe::diagnose::{Cause, Hop};
use probe::observe::{CertProblem, ErrorKind, Phase, Route};
use probe::Status;
use support::pki::{TempPki, SITE};
use support::servers::{raw_tcp_server, refused_port, tls_server, Alpn, Behaviour};
use support::{run_cli, run_json};

const URL: &str = "https://probe.test/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_site_over_http2_and_http11() {
    let lab = TempPki::new();
    let edge = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let origin = tls_server(&lab.pki.good(), Alpn::Http11Only, Behaviour::ok()).await;
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &edge.addr.to_string(),
        "--origin",
        &origin.addr.to_string(),
        "--ca-file",
        &lab.ca,
    ])
    .await;

    assert_eq!(report.status, Status::Ok, "{:?}", report.diagnosis);
    assert!(report.origin_given);
    assert!(report.resolution.is_none(), "--edge means no DNS");
    assert_eq!(report.observations.len(), 2);
    let (e, o) = (&report.observations[0], &report.observations[1]);
    assert_eq!((e.route, o.route), (Route::Edge, Route::Origin));
    assert_eq!(e.address, Some(edge.addr));
    assert_eq!(o.address, Some(origin.addr));

    let response = e.response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.http_version, "HTTP/2");
    assert_eq!(response.headers.server.as_deref(), Some("test-server"));
    assert_eq!(response.body_excerpt, "hello from the test server");
    assert!(response.body_complete);
    assert_eq!(o.response.as_ref().unwrap().http_version, "HTTP/1.1");

    let tls = e.tls.as_ref().unwrap();
    assert!(tls.verified, "{:?}", tls.verify_message);
    assert_eq!(tls.alpn.as_deref(), Some("h2"));
    assert_eq!(tls.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(tls.name_matches, Some(true));
    assert_eq!(tls.chain.len(), 2, "leaf and CA as sent");
    let leaf = tls.leaf().unwrap();
    assert_eq!(leaf.sans, vec![SITE.to_string()]);
    assert!(leaf.issuer.contains("probe test CA"));
    assert_eq!(leaf.days_left, 90);
    assert!(!leaf.self_signed && !leaf.cloudflare_origin_ca);
    assert_eq!(leaf.sha256.len(), 64);
    assert_eq!(o.tls.as_ref().unwrap().alpn.as_deref(), Some("http/1.1"));

    for obs in &report.observations {
        let t = &obs.timings_ms;
        assert!(t.dns.is_none());
        let phases = [t.connect, t.tls, t.ttfb, t.transfer].map(|p| p.expect("phase timed"));
        let sum: f64 = phases.iter().sum();
        assert!(
            sum <= t.total + 0.01,
            "phases {phases:?} exceed total {}",
            t.total
        );
        assert!(obs.error.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_problems_are_recorded_and_the_response_behind_them_still_seen() {
    let lab = TempPki::new();
    let good_edge = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    struct Case {
        name: &'static str,
        leaf: support::pki::Leaf,
        problem: Option<CertProblem>,
        name_matches: bool,
        self_signed: bool,
        status: Status,
        cause: Cause,
    }
    let cases = [
        Case {
            name: "expired",
            leaf: lab.pki.expired(),
            problem: Some(CertProblem::Expired),
            name_matches: true,
            self_signed: false,
            status: Status::Degraded,
            cause: Cause::OriginCertExpired,
        },
        Case {
            name: "self-signed",
            leaf: lab.pki.self_signed(),
            problem: Some(CertProblem::Untrusted),
            name_matches: true,
            self_signed: true,
            status: Status::Degraded,
            cause: Cause::OriginCertUntrusted,
        },
        Case {
            name: "wrong name",
            leaf: lab.pki.wrong_name(),
            problem: Some(CertProblem::NameMismatch),
            name_matches: false,
            self_signed: false,
            status: Status::Degraded,
            cause: Cause::OriginCertNameMismatch,
        },
        Case {
            name: "expiring in 5 days",
            leaf: lab.pki.expiring_in_5_days(),
            problem: None,
            name_matches: true,
            self_signed: false,
            status: Status::Degraded,
            cause: Cause::CertExpiring,
        },
    ];
    for case in cases {
        let origin = tls_server(&case.leaf, Alpn::H2AndHttp11, Behaviour::ok()).await;
        let (report, _) = run_json(&[
            URL,
            "--edge",
            &good_edge.addr.to_string(),
            "--origin",
            &origin.addr.to_string(),
            "--ca-file",
            &lab.ca,
        ])
        .await;
        let o = &report.observations[1];
        let tls = o.tls.as_ref().unwrap();
        assert_eq!(
            tls.verify_error, case.problem,
            "{}: {:?}",
            case.name, tls.verify_message
        );
        assert_eq!(tls.verified, case.problem.is_none(), "{}", case.name);
        assert_eq!(tls.name_matches, Some(case.name_matches), "{}", case.name);
        assert_eq!(
            tls.leaf().unwrap().self_signed,
            case.self_signed,
            "{}",
            case.name
        );
        assert_eq!(
            o.response.as_ref().map(|r| r.status),
            Some(200),
            "{}: the page behind the certificate",
            case.name
        );
        assert_eq!(
            report.status, case.status,
            "{}: {:?}",
            case.name, report.diagnosis
        );
        assert_eq!(
            report.diagnosis.cause, case.cause,
            "{}: {:?}",
            case.name, report.diagnosis
        );
        assert!(
            report.diagnosis.evidence[0]
                .starts_with(&format!("origin {} page: certificate", origin.addr))
                || case.cause == Cause::CertExpiring,
            "{}: {:?}",
            case.name,
            report.diagnosis.evidence
        );
    }

    // The same expired certificate on the edge is what visitors get: down, not degraded.
    let expired_edge = tls_server(&lab.pki.expired(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &expired_edge.addr.to_string(),
        "--ca-file",
        &lab.ca,
    ])
    .await;
    assert_eq!(report.status, Status::Down, "{:?}", report.diagnosis);
    assert_eq!(report.diagnosis.cause, Cause::EdgeCertInvalid);
    let leaf = report.observations[0]
        .tls
        .as_ref()
        .unwrap()
        .leaf()
        .unwrap()
        .clone();
    assert!(leaf.days_left < -29, "{}", leaf.days_left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_ca_is_only_trusted_when_given() {
    let lab = TempPki::new();
    let edge = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let (report, _) = run_json(&[URL, "--edge", &edge.addr.to_string()]).await;
    let tls = report.observations[0].tls.as_ref().unwrap();
    assert!(!tls.verified);
    assert_eq!(tls.verify_error, Some(CertProblem::Untrusted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_origin_behind_a_working_edge_is_degraded_and_named() {
    let lab = TempPki::new();
    let edge = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let closed = refused_port();
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &edge.addr.to_string(),
        "--origin",
        &closed.to_string(),
        "--ca-file",
        &lab.ca,
    ])
    .await;
    let error = report.observations[1].error.as_ref().unwrap();
    assert_eq!(
        (error.phase, error.kind),
        (Phase::Connect, ErrorKind::Refused)
    );
    let d = &report.diagnosis;
    assert_eq!(
        (d.hop, d.cause),
        (Hop::EdgeOrigin, Cause::OriginRefused),
        "{d:?}"
    );
    assert_eq!(
        report.status,
        Status::Degraded,
        "visitors are still served: {d:?}"
    );
    assert!(
        d.evidence[0].starts_with(&format!("origin {closed} page: connect refused")),
        "{d:?}"
    );

    // The same refusal on the only edge address: visitors get nothing.
    let (report, _) = run_json(&[URL, "--edge", &closed.to_string()]).await;
    let d = &report.diagnosis;
    assert_eq!(
        (d.hop, d.cause, report.status),
        (Hop::VisitorEdge, Cause::EdgeUnreachable, Status::Down),
        "{d:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_cut_at_the_deadline_in_the_headers_phase() {
    let lab = TempPki::new();
    let silent = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, Behaviour::Silent).await;
    let started = Instant::now();
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &silent.addr.to_string(),
        "--ca-file",
        &lab.ca,
        "--timeout",
        "1s",
    ])
    .await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1800), "took {elapsed:?}");
    let o = &report.observations[0];
    let error = o.error.as_ref().unwrap();
    assert_eq!(
        (error.phase, error.kind),
        (Phase::Headers, ErrorKind::Timeout)
    );
    assert!(
        (950.0..1500.0).contains(&o.timings_ms.total),
        "{}",
        o.timings_ms.total
    );
    assert!(
        o.tls.as_ref().unwrap().verified,
        "the handshake itself succeeded"
    );
    assert_eq!(report.status, Status::Down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_is_recorded_with_what_arrived() {
    let lab = TempPki::new();
    let server = tls_server(&lab.pki.good(), Alpn::Http11Only, Behaviour::CloseMidBody).await;
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &server.addr.to_string(),
        "--ca-file",
        &lab.ca,
    ])
    .await;
    let o = &report.observations[0];
    let response = o.response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_bytes, 100);
    assert!(!response.body_complete);
    assert_eq!(response.headers.content_length.as_deref(), Some("1000"));
    let error = o.error.as_ref().unwrap();
    assert_eq!(error.phase, Phase::Body);
    assert!(
        matches!(error.kind, ErrorKind::Closed | ErrorKind::Reset),
        "{error:?}"
    );
    assert_eq!(report.status, Status::Down);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_goaway_before_the_answer_does_not_lose_it() {
    let lab = TempPki::new();
    let server = tls_server(
        &lab.pki.good(),
        Alpn::H2AndHttp11,
        Behaviour::GoAwayThenAnswer,
    )
    .await;
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &server.addr.to_string(),
        "--ca-file",
        &lab.ca,
    ])
    .await;
    let o = &report.observations[0];
    assert!(o.error.is_none(), "{:?}", o.error);
    let response = o.response.as_ref().unwrap();
    assert_eq!(response.http_version, "HTTP/2");
    assert_eq!(response.body_excerpt, "answered after GOAWAY");
    assert!(response.body_complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_shows_each_route_and_says_when_the_origin_is_missing() {
    let lab = TempPki::new();
    let edge = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let (status, table) =
        run_cli(&[URL, "--edge", &edge.addr.to_string(), "--ca-file", &lab.ca]).await;
    assert_eq!(status, Status::Ok);
    assert!(table.contains("ROUTE"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("edge "))
        .expect("an edge row");
    for cell in [
        edge.addr.to_string().as_str(),
        "page",
        "200",
        "HTTP/2",
        "test-server",
    ] {
        assert!(row.contains(cell), "{cell} missing in {row}");
    }
    assert!(table.contains("90 days left · verified"), "{table}");
    assert!(table.contains("origin  not given"), "{table}");
    assert!(table.contains("OK  none · ok (high)"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_speaks_tls_is_cut_in_the_tls_phase() {
    let silent = raw_tcp_server(None).await;
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &silent.addr.to_string(),
        "--timeout",
        "500ms",
    ])
    .await;
    let o = &report.observations[0];
    let error = o.error.as_ref().unwrap();
    assert_eq!((error.phase, error.kind), (Phase::Tls, ErrorKind::Timeout));
    assert!(o.timings_ms.connect.is_some());
    assert!(
        (450.0..1000.0).contains(&o.timings_ms.total),
        "{}",
        o.timings_ms.total
    );
    assert!(o.tls.is_none(), "no certificate was ever sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_where_tls_was_expected_is_a_protocol_error() {
    let http = raw_tcp_server(Some(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    ))
    .await;
    let (report, _) = run_json(&[URL, "--edge", &http.addr.to_string()]).await;
    let error = report.observations[0].error.as_ref().unwrap();
    assert_eq!(
        (error.phase, error.kind),
        (Phase::Tls, ErrorKind::Protocol),
        "{}",
        error.message
    );
    assert_eq!(report.status, probe::Status::Down);
}
