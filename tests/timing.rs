//! Timing: phase durations against known server waits, and routes running concurrently. Kept in
//! a test binary of their own so no other test of this suite competes for the two cores while
//! they measure.

mod support;

use std::time::{Duration, Instant};

use probe::observe::Route;
use support::pki::TempPki;
use support::run_json;
use support::servers::{tls_server, Alpn, Behaviour};

const URL: &str = "https://probe.test/";

/// The tests of this file measure time: they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttfb_measures_the_server_wait_and_connect_stays_small() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = TempPki::new();
    let slow = Behaviour::Answer {
        status: 200,
        body: "slow",
        server: "test-server",
        delay: Duration::from_millis(300),
    };
    let server = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, slow).await;
    let (report, _) = run_json(&[
        URL,
        "--edge",
        &server.addr.to_string(),
        "--ca-file",
        &lab.ca,
    ])
    .await;
    let t = &report.observations[0].timings_ms;
    let ttfb = t.ttfb.unwrap();
    assert!((300.0..330.0).contains(&ttfb), "ttfb {ttfb} ms");
    let connect = t.connect.unwrap();
    assert!(connect < 5.0, "connect {connect} ms on loopback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_and_origin_run_concurrently_and_samples_one_after_another() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let lab = TempPki::new();
    let slow = Behaviour::Answer {
        status: 200,
        body: "slow",
        server: "test-server",
        delay: Duration::from_millis(400),
    };
    let edge = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, slow.clone()).await;
    let origin = tls_server(&lab.pki.good(), Alpn::H2AndHttp11, slow).await;
    let args = [
        URL,
        "--edge",
        &edge.addr.to_string(),
        "--origin",
        &origin.addr.to_string(),
        "--ca-file",
        &lab.ca,
    ];
    let started = Instant::now();
    let (report, _) = run_json(&args).await;
    let once = started.elapsed();
    assert_eq!(report.observations.len(), 2);
    assert!(
        once < Duration::from_millis(750),
        "edge and origin took {once:?}: not concurrent"
    );

    let mut with_samples = args.to_vec();
    with_samples.extend(["--samples", "2"]);
    let started = Instant::now();
    let (report, _) = run_json(&with_samples).await;
    let twice = started.elapsed();
    let samples: Vec<(Route, u32)> = report
        .observations
        .iter()
        .map(|o| (o.route, o.sample))
        .collect();
    assert_eq!(
        samples,
        [
            (Route::Edge, 1),
            (Route::Edge, 2),
            (Route::Origin, 1),
            (Route::Origin, 2)
        ]
    );
    assert!(
        twice >= Duration::from_millis(800),
        "two samples of 400 ms in sequence took {twice:?}"
    );
    assert!(
        twice < Duration::from_millis(1300),
        "routes not concurrent: {twice:?}"
    );
}
