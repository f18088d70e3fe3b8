//! blackbox_exporter's `/probe?target=…&module=…` on `watch --listen`: a configured site is
//! probed there and then, its metrics answered in blackbox's shape (promtool takes them); any
//! other target is refused (no open proxy), an unknown module too, and more than four probes at
//! once are told to come back.

mod support;

use std::sync::Arc;

use probe::feeds::server::{self as serve, ProbeTargets, Published};
use support::http_get;
use support::pki::TempPki;
use support::servers::{raw_tcp_server, tls_server, Alpn, Behaviour};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_answers_for_configured_sites_only() {
    let pki = TempPki::new();
    let site = tls_server(&pki.pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let silent = raw_tcp_server(None).await;
    let path = pki.dir().join("probes.yaml");
    std::fs::write(
        &path,
        format!(
            "defaults:\n  timeout: 2s\n  ca_file: {ca}\nsites:\n  - name: shop\n    url: https://probe.test/\n    edge: \"{site}\"\n    origins: [\"{site}\"]\n{stuck}",
            ca = pki.ca,
            site = site.addr,
            stuck = (1..=5)
                .map(|n| format!(
                    "  - name: stuck{n}\n    url: https://stuck{n}.probe.test/\n    edge: \"{}\"\n",
                    silent.addr
                ))
                .collect::<String>(),
        ),
    )
    .unwrap();
    let config = Arc::new(probe::config::load(&path).unwrap().config);
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve_with(
        listener,
        Arc::new(Published::default()),
        Some(Arc::new(ProbeTargets::new(config))),
    ));
    let get = |path: String| tokio::task::spawn_blocking(move || http_get(addr, &path));

    // By name, with blackbox's module name: probed now, blackbox's families.
    {
        let target = "shop";
        let (status, headers, body) = get(format!("/probe?target={target}&module=http_2xx"))
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(status, 200, "{target}: {text}");
        assert!(
            support::header(&headers, "content-type").is_some_and(|c| c.starts_with("text/plain")),
            "{headers:?}"
        );
        for line in [
            "probe_success 1",
            "probe_http_status_code 200",
            "probe_http_ssl 1",
            "probe_ip_protocol 4",
            "probe_diagnosis_info{status=\"ok\",hop=\"none\",cause=\"ok\",confidence=\"high\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{target}: {line} missing:\n{text}"
            );
        }
        assert!(
            text.contains("probe_route_success{route=\"origin\""),
            "{text}"
        );
        support::assert_promtool_accepts(&text);
    }
    // The same site again at once (by its URL this time): a scrape every 5 s at most.
    let (status, _, body) = get("/probe?target=https%3A%2F%2Fprobe.test%2F".into())
        .await
        .unwrap();
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));

    // Anything else is refused before a connection is made.
    for (path, expected) in [
        ("/probe?target=https%3A%2F%2Fexample.com%2F", 403),
        ("/probe?target=127.0.0.1%3A22", 403),
        ("/probe?target=shop&module=icmp", 400),
        ("/probe?module=http_2xx", 400),
    ] {
        let (status, _, body) = get(path.to_string()).await.unwrap();
        assert_eq!(
            status,
            expected,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("icmp"),
            "not echoed"
        );
    }

    // Four at once at most: a fifth, while four wait on silent sites, is told to retry (each
    // named by its host).
    let waits: Vec<_> = (1..=5)
        .map(|n| get(format!("/probe?target=stuck{n}.probe.test")))
        .collect();
    let mut statuses = Vec::new();
    for wait in waits {
        statuses.push(wait.await.unwrap().0);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 429], "{statuses:?}");
}
