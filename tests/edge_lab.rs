//! End-to-end behind a Cloudflare-faithful edge: visitor → edge → nginx → PHP-FPM, each break
//! reproduced for real, and the diagnosis naming the hop and cause from what both routes saw.

mod support;

use std::time::Duration;

use probe::diagnose::{Cause, Confidence, Hop};
use probe::observe::Route;
use probe::{ProbeReport, Status};
use support::edge::{OriginTarget, SslMode};
use support::lab::{EdgeLab, OriginSettings};
use support::php_fpm::PoolSettings;
use support::pki::Pki;
use support::run_json;
use support::servers::{black_hole, raw_tcp_server, refused_port, tls_server, Alpn, Behaviour};

/// Makes an origin certificate from the lab's CA.
type MakeLeaf = fn(&Pki) -> support::pki::Leaf;

/// Probes, and records the report as fixture `name` when asked to (see `record_fixture`).
async fn probe(name: &str, args: &[String]) -> ProbeReport {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = run_json(&args).await.0;
    support::record_fixture(name, &report);
    report
}

/// Replaces the value of `flag` in `args`.
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

fn assert_diagnosis(report: &ProbeReport, want: (Status, Hop, Cause), evidence: &str) {
    let d = &report.diagnosis;
    assert_eq!(
        (report.status, d.hop, d.cause),
        want,
        "{}\n{:#?}",
        d.summary,
        d.evidence
    );
    assert!(
        d.evidence.iter().take(2).any(|e| e.contains(evidence)),
        "the decisive observation ({evidence:?}) should lead the evidence: {:#?}",
        d.evidence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_site_behind_the_edge_is_ok_fifty_times_in_a_row() {
    let lab = EdgeLab::start(&OriginSettings::default(), None, SslMode::Strict, None).await;
    for run in 0..50 {
        let report = probe("edge_healthy", &lab.probe_args("/")).await;
        assert_eq!(
            (report.status, report.diagnosis.cause),
            (Status::Ok, Cause::Ok),
            "run {run}: {:#?}",
            report.diagnosis
        );
        let edge = report.observations[0].response.as_ref().unwrap();
        assert_eq!(edge.headers.server.as_deref(), Some("cloudflare"));
        assert!(edge
            .headers
            .cf_ray
            .as_deref()
            .is_some_and(|r| r.ends_with("-LHR")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fastcgi_socket_behind_the_edge_is_fpm_unreachable_with_cloudflares_page_as_evidence(
) {
    let settings = OriginSettings {
        fastcgi_pass: Some("/run/php/php7.4-fpm.sock".into()),
        ..OriginSettings::default()
    };
    let lab = EdgeLab::start(&settings, None, SslMode::Strict, None).await;
    let report = probe("edge_stale_fastcgi_socket", &lab.probe_args("/")).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::OriginFpm, Cause::FpmUnreachable),
        "Cloudflare branded error page 502, host box = error",
    );
    assert_eq!(report.diagnosis.confidence, Confidence::High);
    assert!(
        report
            .diagnosis
            .evidence
            .iter()
            .any(|e| e.contains("static 200")),
        "{:#?}",
        report.diagnosis.evidence
    );
    let edge = &report.observations[0];
    let details = edge
        .cloudflare_error
        .as_ref()
        .expect("Cloudflare's JSON asked for");
    assert_eq!(
        (details.error_code, details.error_category.as_deref()),
        (Some(502), Some("origin"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_certificates_refused_by_full_strict_are_named() {
    let cases: [(MakeLeaf, Cause); 3] = [
        (Pki::expired, Cause::OriginCertExpired),
        (Pki::self_signed, Cause::OriginCertUntrusted),
        (Pki::wrong_name, Cause::OriginCertNameMismatch),
    ];
    for (leaf, cause) in cases {
        let lab = EdgeLab::start(
            &OriginSettings::default(),
            Some(leaf),
            SslMode::Strict,
            None,
        )
        .await;
        let report = probe(&format!("edge_{}", cause.as_str()), &lab.probe_args("/")).await;
        assert_diagnosis(
            &report,
            (Status::Down, Hop::EdgeOrigin, cause),
            "edge page 526",
        );
        assert_eq!(report.diagnosis.confidence, Confidence::High, "{cause:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bad_certificate_under_full_mode_still_serves_but_is_flagged() {
    let lab = EdgeLab::start(
        &OriginSettings::default(),
        Some(Pki::self_signed),
        SslMode::Full,
        None,
    )
    .await;
    let report = probe("edge_full_mode_self_signed", &lab.probe_args("/")).await;
    assert_diagnosis(
        &report,
        (
            Status::Degraded,
            Hop::EdgeOrigin,
            Cause::OriginCertUntrusted,
        ),
        "(issuer CN=probe.test) is self-signed (issued by itself)",
    );
}

/// The edge speaks plain HTTP (Cloudflare's Flexible mode) to the origin's TLS port: nginx
/// answers its 400 "The plain HTTP request was sent to HTTPS port", which visitors get through
/// the edge. Recognised and said with the fix, while the origin answers us over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_speaking_plain_http_to_the_origins_tls_port_is_named() {
    let lab = EdgeLab::start(&OriginSettings::default(), None, SslMode::Flexible, None).await;
    let report = probe("edge_plain_http_to_tls_origin", &lab.probe_args("/")).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::EdgeOrigin, Cause::OriginTlsHandshake),
        "nginx's page \"The plain HTTP request was sent to HTTPS port\"",
    );
    let d = &report.diagnosis;
    assert_eq!(d.confidence, Confidence::High, "{d:#?}");
    assert!(
        d.summary
            .contains("the edge speaks plain HTTP to an origin port where nginx expects TLS")
            && d.summary.contains("Flexible")
            && d.summary
                .ends_with("or send it to the origin's plain-HTTP port."),
        "{}",
        d.summary
    );
    assert!(
        d.next_steps[0].contains("SSL/TLS → Overview"),
        "{:#?}",
        d.next_steps
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_port_closed_to_everyone_is_origin_refused() {
    let closed = refused_port();
    let lab = EdgeLab::start(
        &OriginSettings::default(),
        None,
        SslMode::Strict,
        Some(closed),
    )
    .await;
    let report = probe(
        "edge_origin_port_closed",
        &with(lab.probe_args("/"), "--origin", &closed.to_string()),
    )
    .await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::EdgeOrigin, Cause::OriginRefused),
        "edge page 521",
    );
    assert_eq!(report.diagnosis.confidence, Confidence::High);
    let details = report.observations[0].cloudflare_error.as_ref().unwrap();
    assert_eq!(details.error_code, Some(521));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_refuses_only_the_edge_blocks_the_edge() {
    // The edge's way to the origin is closed (a firewall rejecting Cloudflare's ranges); ours is
    // open: the probe reaches nginx directly.
    let lab = EdgeLab::start(
        &OriginSettings::default(),
        None,
        SslMode::Strict,
        Some(refused_port()),
    )
    .await;
    let report = probe("edge_blocked_refused", &lab.probe_args("/")).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::EdgeOrigin, Cause::OriginBlocksEdge),
        "edge page 521",
    );
    assert_eq!(report.diagnosis.confidence, Confidence::High);

    // The same answers from an edge nobody declared, at an address outside Cloudflare's ranges:
    // its `server: cloudflare` and 521 page are a claim anyone can make, so the same cause is at
    // most medium, and the evidence says why.
    let undeclared: Vec<String> = lab
        .probe_args("/")
        .into_iter()
        .filter(|a| a != "--cloudflare-edge")
        .collect();
    let undeclared: Vec<&str> = undeclared.iter().map(String::as_str).collect();
    let claimed = run_json(&undeclared).await.0;
    assert_eq!(claimed.diagnosis.cause, Cause::OriginBlocksEdge);
    assert_eq!(claimed.diagnosis.confidence, Confidence::Medium);
    assert!(
        claimed.diagnosis.evidence.iter().any(|e| e
            .contains("edge 127.0.0.1 is not in Cloudflare's published ranges: its Cloudflare headers are a claim, not proof")),
        "{:#?}",
        claimed.diagnosis.evidence
    );

    let silent = black_hole().await;
    let lab = EdgeLab::start(
        &OriginSettings::default(),
        None,
        SslMode::Strict,
        Some(silent.addr),
    )
    .await;
    let report = probe("edge_blocked_dropped", &lab.probe_args("/")).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::EdgeOrigin, Cause::OriginBlocksEdge),
        "edge page 522",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_timeout_to_everyone_is_origin_timeout() {
    let silent = black_hole().await;
    let lab = EdgeLab::start(
        &OriginSettings::default(),
        None,
        SslMode::Strict,
        Some(silent.addr),
    )
    .await;
    let args = with(
        with(lab.probe_args("/"), "--origin", &silent.addr.to_string()),
        "--timeout",
        "2s",
    );
    let report = probe("edge_origin_connect_timeout", &args).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::EdgeOrigin, Cause::OriginTimeout),
        "edge page 522",
    );
    assert_eq!(report.diagnosis.confidence, Confidence::High);
    let origin = report
        .observations
        .iter()
        .find(|o| o.route == Route::Origin)
        .unwrap();
    assert_eq!(
        origin
            .error
            .as_ref()
            .map(|e| (e.phase.as_str(), e.kind.as_str())),
        Some(("connect", "timeout"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tls_handshake_at_the_origin_is_525() {
    // Something that is not TLS on the origin's TLS port (a plain-HTTP vhost bound to 443).
    let plain = raw_tcp_server(Some(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    ))
    .await;
    let lab = EdgeLab::start(
        &OriginSettings::default(),
        None,
        SslMode::Strict,
        Some(plain.addr),
    )
    .await;
    let report = probe(
        "edge_origin_tls_handshake",
        &with(lab.probe_args("/"), "--origin", &plain.addr.to_string()),
    )
    .await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::EdgeOrigin, Cause::OriginTlsHandshake),
        "edge page 525",
    );
    assert_eq!(report.diagnosis.confidence, Confidence::High);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_reply_from_the_origin_is_520() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let closing = tls_server(&pki.good(), Alpn::Http11Only, Behaviour::CloseWithoutAnswer).await;
    let lab = EdgeLab::start(
        &OriginSettings::default(),
        None,
        SslMode::Full,
        Some(closing.addr),
    )
    .await;
    let args = with(lab.probe_args("/"), "--origin", &closing.addr.to_string());
    let args = [
        args,
        vec!["--ca-file".into(), pki.ca_path.display().to_string()],
    ]
    .concat();
    let report = probe("edge_origin_empty_reply", &args).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::OriginFpm, Cause::OriginBadResponse),
        "edge page 520",
    );
    assert_eq!(report.diagnosis.confidence, Confidence::High);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_slower_than_the_edge_waits_is_origin_slow() {
    let lab = EdgeLab::start(&OriginSettings::default(), None, SslMode::Strict, None).await;
    let args = with(lab.probe_args("/sleep.php?ms=3500"), "--timeout", "3s");
    let report = probe("edge_origin_slow", &args).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::OriginFpm, Cause::OriginSlow),
        "edge page 524",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_pool_behind_the_edge_is_fpm_saturated() {
    let settings = OriginSettings {
        pool: PoolSettings {
            max_children: 1,
            ..PoolSettings::default()
        },
        fastcgi_read_timeout: Duration::from_secs(1),
        ..OriginSettings::default()
    };
    let lab = EdgeLab::start(&settings, None, SslMode::Strict, None).await;
    let holder = lab.lab.origin.hold_a_worker(4000);
    let report = probe("edge_busy_pool", &lab.probe_args("/")).await;
    drop(holder);
    assert_diagnosis(
        &report,
        (Status::Down, Hop::OriginFpm, Cause::FpmSaturated),
        "Cloudflare branded error page 504, host box = error",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_behind_the_edge_is_fpm_worker_died() {
    let lab = EdgeLab::start(&OriginSettings::default(), None, SslMode::Strict, None).await;
    let report = probe("edge_worker_killed", &lab.probe_args("/die.php?ms=400")).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::OriginFpm, Cause::FpmWorkerDied),
        "Cloudflare branded error page 502, host box = error",
    );
    assert!(
        report
            .diagnosis
            .evidence
            .iter()
            .any(|e| e.contains("page 502 in 4")),
        "{:#?}",
        report.diagnosis.evidence
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_certificate_expiring_soon_is_a_warning() {
    let lab = EdgeLab::start(&OriginSettings::default(), None, SslMode::Strict, None).await;
    let expiring = tls_server(
        &lab.lab.pki.expiring_in_5_days(),
        Alpn::H2AndHttp11,
        Behaviour::ok(),
    )
    .await;
    let report = probe(
        "edge_cert_expiring",
        &with(lab.probe_args("/"), "--edge", &expiring.addr.to_string()),
    )
    .await;
    assert_diagnosis(
        &report,
        (Status::Degraded, Hop::None, Cause::CertExpiring),
        "expires in 5 days",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_name_that_does_not_resolve_is_origin_dns_failure() {
    // The site's DNS record at Cloudflare points to a host name that no longer exists.
    let dns = support::dnsmasq::Dnsmasq::start(&[], &[]);
    let lab = EdgeLab::start_custom(&OriginSettings::default(), None, |edge| {
        edge.origin = OriginTarget::Name {
            name: "origin-gone.test".into(),
            port: 443,
            resolver: dns.addr,
        };
    })
    .await;
    let report = probe("edge_origin_dns_failure", &lab.probe_args("/")).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::EdgeOrigin, Cause::OriginDnsFailure),
        "edge page 530",
    );
    let details = report.observations[0].cloudflare_error.as_ref().unwrap();
    assert_eq!(
        (details.error_code, details.error_category.as_deref()),
        (Some(1016), Some("dns"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_failing_itself_is_edge_internal() {
    let lab = EdgeLab::start_custom(&OriginSettings::default(), None, |edge| {
        edge.fails_itself = true
    })
    .await;
    let report = probe("edge_internal", &lab.probe_args("/")).await;
    assert_diagnosis(
        &report,
        (Status::Down, Hop::VisitorEdge, Cause::EdgeInternal),
        "Cloudflare's own plain error page",
    );
    // The origin answers us directly: the fault is not behind the edge.
    assert!(
        report
            .diagnosis
            .evidence
            .iter()
            .any(|e| e.contains("origin") && e.contains(" 200 ")),
        "{:#?}",
        report.diagnosis.evidence
    );
}
