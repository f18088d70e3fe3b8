//! Our DNS lookups against a real DNS server (dnsmasq on a loopback port).

mod support;

use std::time::Duration;

use probe::diagnose::{Cause, Hop};
use probe::engine::resolve::{DnsClient, Nameserver};
use probe::observe::{ErrorKind, Phase};
use probe::Status;
use support::dnsmasq::Dnsmasq;
use support::pki::{Pki, SITE};
use support::run_json;
use support::servers::{tls_server, Alpn, Behaviour};

fn dns() -> Dnsmasq {
    Dnsmasq::start(
        &[
            (SITE, "127.0.0.1"),
            // Exists, but has only an IPv6 address: an A query is answered with no records.
            ("v6only.test", "::1"),
            // Inside Cloudflare's published range; only looked up, never dialled.
            ("cf.test", "104.16.0.1"),
        ],
        // Exists with neither A nor AAAA.
        &[("txtonly.test", "hello")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_name_is_resolved_timed_and_dialled() {
    let dns = dns();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let url = format!("https://{SITE}:{}/", server.addr.port());
    let ca = pki.ca_path.display().to_string();
    let (report, _) =
        run_json(&[&url, "--resolver", &dns.addr.to_string(), "--ca-file", &ca]).await;

    assert_eq!(report.status, Status::Ok, "{:?}", report.diagnosis);
    let resolution = report.resolution.as_ref().expect("DNS was asked");
    assert_eq!(resolution.resolver, dns.addr.to_string());
    assert_eq!(
        resolution.a.addresses,
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(resolution.a.error.is_none());
    assert!(resolution.a.ttl.is_some());
    assert!(!resolution.a.cloudflare);
    assert_eq!(
        resolution.aaaa.error.as_ref().unwrap().kind,
        ErrorKind::NoRecords
    );
    let o = &report.observations[0];
    assert_eq!(o.address, Some(server.addr));
    let dns_ms = o.timings_ms.dns.expect("dns timed");
    assert_eq!(dns_ms, resolution.a.duration_ms);
    assert!(dns_ms > 0.0 && dns_ms < 1000.0, "{dns_ms}");
    assert!(o.timings_ms.total >= dns_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nxdomain_and_no_records_are_recorded_kinds() {
    let dns = dns();
    let resolver = dns.addr.to_string();
    let cases = [
        ("https://missing.test/", ErrorKind::Nxdomain),
        ("https://txtonly.test/", ErrorKind::NoRecords),
    ];
    for (url, kind) in cases {
        let (report, _) = run_json(&[url, "--resolver", &resolver, "--timeout", "3s"]).await;
        let resolution = report.resolution.as_ref().unwrap();
        assert_eq!(
            resolution.a.error.as_ref().map(|e| e.kind),
            Some(kind),
            "{url}"
        );
        assert_eq!(
            resolution.aaaa.error.as_ref().map(|e| e.kind),
            Some(kind),
            "{url}"
        );
        assert_eq!(report.status, Status::Down, "{url}");
        assert_eq!(report.observations.len(), 1, "{url}");
        let o = &report.observations[0];
        assert!(o.address.is_none(), "{url}: nothing to dial");
        let error = o.error.as_ref().unwrap();
        assert_eq!((error.phase, error.kind), (Phase::Dns, kind), "{url}");
        let d = &report.diagnosis;
        assert_eq!(
            (d.hop, d.cause),
            (Hop::Dns, Cause::DnsFailure),
            "{url}: {d:#?}"
        );
        assert!(
            d.evidence[0].starts_with("dns: "),
            "{url}: {:#?}",
            d.evidence
        );
    }

    // A name with only an AAAA record: the A answer says "no records", and the edge route
    // dials the IPv6 address instead (loopback here).
    let (report, _) = run_json(&[
        "https://v6only.test/",
        "--resolver",
        &resolver,
        "--timeout",
        "3s",
    ])
    .await;
    let resolution = report.resolution.as_ref().unwrap();
    assert_eq!(
        resolution.a.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::NoRecords)
    );
    assert_eq!(
        resolution.aaaa.addresses,
        vec!["::1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        report.observations[0].address,
        Some("[::1]:443".parse().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_cloudflare_ranges_are_marked() {
    let dns = dns();
    let client = DnsClient::new(Nameserver::At(dns.addr), Duration::from_secs(3)).unwrap();
    let resolution = client.resolve("cf.test").await;
    assert!(resolution.a.cloudflare);
    assert_eq!(
        resolution.a.addresses,
        vec!["104.16.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let plain = client.resolve(SITE).await;
    assert!(!plain.a.cloudflare);
}
