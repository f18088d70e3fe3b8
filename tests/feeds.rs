//! The status feeds, checked with real tools: a history made on the lab (real nginx + PHP-FPM,
//! compressed time) — one site through an incident that opens, changes cause and resolves, one
//! site down now — rendered to a directory and served over HTTP, then:
//! `promtool check metrics` (Debian's prometheus) on the metrics, Python's feedparser on the Atom
//! feed at each step of the incident, the committed Statuspage-shape schema on status.json,
//! headless Chromium on the HTML page (DOM asserted, screenshot saved under target/), a real
//! Prometheus scraping the served metrics, and the served bytes equal to the written files. The server's hardening is tested on its own.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use probe::config::{self, Config};
use probe::feeds::server::{self as serve, Published};
use probe::feeds::{self, FeedFile};
use probe::schedule::run::run_once;
use probe::store::SqliteStore;
use serde_json::Value;
use support::lab::{Lab, OriginSettings};
use support::{header, http_get, raw_http, require_program};
use time::OffsetDateTime;

fn minute(n: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000 + n * 60).unwrap()
}

fn lab_config(lab: &Lab) -> Config {
    let address = lab.origin.address();
    let refused = support::servers::refused_port();
    let text = format!(
        r#"defaults:
  timeout: 3s
  ca_file: {ca}
sites:
  - name: blog
    url: https://probe.test/switch.php
    edge: "{address}"
    origins: ["{address}"]
  - name: shop
    url: https://shop.probe.test/
    edge: "{refused}"
alerts:
  confirm_retries: 0
  confirm_runs: 1
  recover_runs: 1
store:
  path: probe.sqlite
maintenance:
  - sites: [blog]
    start: 2031-01-01T02:00:00Z
    end: 2031-01-01T03:00:00Z
    reason: database upgrade
feeds:
  title: Lab status
  url: https://status.example.com/
"#,
        ca = lab.pki.ca_path.display(),
    );
    let path = lab.dir.path().join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}")).config
}

fn render(config: &Config, store: &SqliteStore, now: OffsetDateTime) -> Vec<FeedFile> {
    feeds::render_all(&feeds::snapshot(config, store, now).unwrap())
}

fn file<'a>(files: &'a [FeedFile], path: &str) -> &'a FeedFile {
    files
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path}"))
}

/// The Atom feed as Python's feedparser reads it: [(id, title, updated, content)] per entry.
fn parse_atom(atom: &[u8]) -> Vec<(String, String, String, String)> {
    let python = require_program("python3 (Debian's, with feedparser)", "/usr/bin/python3");
    let script = "import sys, json, feedparser\n\
        d = feedparser.parse(sys.stdin.buffer.read())\n\
        assert not d.bozo, d.bozo_exception\n\
        assert d.version == 'atom10', d.version\n\
        print(json.dumps([[e.id, e.title, e.updated, e.content[0].value] for e in d.entries]))";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(atom).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "feedparser: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn schema_validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/status.schema.json"
    ))
    .unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&serde_json::from_str(&text).unwrap())
        .expect("the schema is valid")
}

/// Serves `files` in-process as `probe watch --listen` does; returns the address.
async fn serve_files(files: Vec<FeedFile>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let published = Published::default().next(files, OffsetDateTime::now_utc());
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve::serve(listener, Arc::new(published)));
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_of_a_real_history_pass_real_consumers() {
    let lab = Lab::start(&OriginSettings::default());
    let config = lab_config(&lab);
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let atom_at = |store: &SqliteStore, now| {
        let files = render(&config, store, now);
        parse_atom(&file(&files, "incidents.atom").body)
    };

    // blog: healthy, then PHP-FPM stops (incident opens), then PHP fails (cause changes), then it
    // answers again (resolved). shop: down from the start.
    run_once(&config, &mut store, minute(0)).await.unwrap();
    let mut lab = lab;
    lab.origin.fpm.stop();
    run_once(&config, &mut store, minute(10)).await.unwrap();
    let entries = atom_at(&store, minute(10));
    let blog: Vec<_> = entries.iter().filter(|e| e.1.contains("blog")).collect();
    assert_eq!(blog.len(), 1, "{entries:#?}");
    assert!(blog[0].1.starts_with("[DOWN] blog: "), "{}", blog[0].1);
    assert!(blog[0].1.contains("fpm_unreachable"));
    assert_eq!(blog[0].2, "2030-03-17T17:56:40Z", "updated when it opened");

    lab.origin.fail_with(Some(500));
    lab.origin.fpm = support::php_fpm::PhpFpm::start(lab.dir.path(), &Default::default());
    run_once(&config, &mut store, minute(20)).await.unwrap();
    let entries = atom_at(&store, minute(20));
    let blog = entries.iter().find(|e| e.1.contains("blog")).unwrap();
    assert!(blog.1.contains("app_error"), "{}", blog.1);
    assert_eq!(
        blog.2, "2030-03-17T18:06:40Z",
        "updated by the cause change"
    );
    let same_id = blog.0.clone();

    lab.origin.fail_with(None);
    run_once(&config, &mut store, minute(30)).await.unwrap();
    let now = minute(30);
    let files = render(&config, &store, now);
    let entries = parse_atom(&file(&files, "incidents.atom").body);
    assert_eq!(entries.len(), 2, "one entry per incident: {entries:#?}");
    let blog = entries.iter().find(|e| e.1.contains("blog")).unwrap();
    assert_eq!(blog.0, same_id, "the same entry, updated");
    assert!(blog.1.starts_with("[RESOLVED] blog: "), "{}", blog.1);
    assert_eq!(blog.2, "2030-03-17T18:16:40Z", "updated by the resolution");
    assert!(
        blog.3.contains("fpm_unreachable") && blog.3.contains("app_error"),
        "both causes in the content: {}",
        blog.3
    );
    // Public (the default): the causes, not the servers' words — no version, no address.
    for private in ["nginx/", "127.0.0.1", "fastcgi"] {
        assert!(
            !blog.3.contains(private),
            "{private} in the public feed: {}",
            blog.3
        );
    }
    let shop = entries.iter().find(|e| e.1.contains("shop")).unwrap();
    assert!(shop.1.starts_with("[DOWN] shop: "), "{}", shop.1);

    // status.json: the Statuspage summary shape, blog operational, shop in a major outage.
    let status: Value = serde_json::from_slice(&file(&files, "status.json").body).unwrap();
    let errors: Vec<String> = schema_validator()
        .iter_errors(&status)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(status["page"]["name"], "Lab status");
    assert_eq!(status["status"]["indicator"], "major");
    let components = status["components"].as_array().unwrap();
    let component = |name: &str| components.iter().find(|c| c["name"] == name).unwrap();
    assert_eq!(component("blog")["status"], "operational");
    assert_eq!(component("shop")["status"], "major_outage");
    assert_eq!(
        component("shop")["probe"]["diagnosis"]["cause"],
        "edge_unreachable"
    );
    // Four runs of blog, one of them down (minute 10) and one failing in PHP (minute 20): 2 of 4.
    assert_eq!(component("blog")["probe"]["uptime"]["24h"], 0.5);
    let incidents = status["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "only unresolved incidents");
    assert!(incidents[0]["name"].as_str().unwrap().starts_with("shop: "));
    let maintenance = &status["scheduled_maintenances"][0];
    assert_eq!(
        (
            &maintenance["name"],
            &maintenance["status"],
            &maintenance["components"][0]["name"]
        ),
        (
            &Value::from("database upgrade"),
            &Value::from("scheduled"),
            &Value::from("blog")
        )
    );

    // metrics: promtool accepts them; blackbox names with our labels; the same uptime figure.
    let metrics = &file(&files, "metrics").body;
    let metrics = String::from_utf8_lossy(metrics);
    support::assert_promtool_accepts(&metrics);
    let address = lab.origin.address();
    for line in [
        format!("probe_success{{site=\"blog\",route=\"edge\",address=\"{address}\"}} 1"),
        format!("probe_success{{site=\"blog\",route=\"origin\",address=\"{address}\"}} 1"),
        format!("probe_http_status_code{{site=\"blog\",route=\"edge\",address=\"{address}\"}} 200"),
        "probe_uptime_ratio{site=\"blog\",window=\"24h\"} 0.5".to_string(),
        "probe_diagnosis_info{site=\"shop\",status=\"down\",hop=\"visitor_edge\",cause=\"edge_unreachable\",confidence=\"high\"} 1".to_string(),
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line}\n{metrics}");
    }
    assert!(metrics.contains("probe_ssl_earliest_cert_expiry{site=\"blog\""));
    assert!(metrics.contains("probe_http_duration_seconds{site=\"blog\",route=\"edge\""));

    // Written to a directory and served: the same bytes. `run --feeds-dir` writes each file
    // as it is rendered; what lands is what the list holds.
    let dir = tempfile::tempdir().unwrap();
    feeds::write_dir(dir.path(), &files).unwrap();
    let streamed = tempfile::tempdir().unwrap();
    feeds::render_into_dir(
        &feeds::snapshot(&config, &store, now).unwrap(),
        streamed.path(),
    )
    .unwrap();
    for f in &files {
        let written = std::fs::read(streamed.path().join(&f.path)).unwrap();
        assert!(
            written == f.body,
            "{}: streamed and rendered differ",
            f.path
        );
    }
    let (addr, server) = serve_files(files.clone()).await;
    let served = tokio::task::spawn_blocking(move || {
        let mut served = Vec::new();
        for path in [
            "/",
            "/status.json",
            "/incidents.atom",
            "/metrics",
            "/badge/blog.svg",
            "/badge/shop.svg",
        ] {
            let (status, headers, body) = http_get(addr, path);
            assert_eq!(status, 200, "{path}");
            served.push((
                path,
                header(&headers, "content-type").unwrap_or("").to_string(),
                body,
            ));
        }
        served
    })
    .await
    .unwrap();
    for (path, content_type, body) in &served {
        let name = if *path == "/" {
            "index.html"
        } else {
            path.trim_start_matches('/')
        };
        let written = std::fs::read(dir.path().join(name)).unwrap();
        assert!(written == *body, "{path}: served and written differ");
        assert_eq!(*content_type, file(&files, name).content_type, "{path}");
    }
    let mut written: Vec<String> = support::walk(dir.path())
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    written.sort();
    assert_eq!(
        written,
        [
            "api/v1/sla.json",
            "api/v2/components.json",
            "api/v2/incidents.json",
            "api/v2/incidents/unresolved.json",
            "api/v2/scheduled-maintenances.json",
            "api/v2/scheduled-maintenances/active.json",
            "api/v2/scheduled-maintenances/upcoming.json",
            "api/v2/status.json",
            "api/v2/summary.json",
            "badge/blog.svg",
            "badge/shop.svg",
            "history.atom",
            "history.rss",
            "incidents.atom",
            "index.html",
            "metrics",
            "status.json"
        ],
        "every feed, no temporary file left"
    );

    // The page in a real browser: each site with its state, the open incident; a screenshot at
    // phone size kept as an artifact.
    let chromium = require_program("chromium (Debian's)", "/usr/bin/chromium");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let shot = shots.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let url = format!("http://{addr}/");
    let browser = |extra: &[String]| {
        let profile = tempfile::tempdir().unwrap();
        let mut command = Command::new(&chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url);
        let out = run_bounded(command, Duration::from_secs(60));
        (out, profile)
    };
    let (dom, _) = browser(&["--dump-dom".to_string()]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("<h1>Lab status</h1>"), "{dom}");
    assert!(
        dom.contains(r#"<li class="site" data-site="blog" data-status="operational" data-hop="none" data-cause="ok">"#),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<li class="site" data-site="shop" data-status="major_outage""#),
        "{dom}"
    );
    // One vocabulary: the banner says what status.json's indicator says, in Statuspage's words;
    // a site shows its URL, words not ids, and (public by default) no server version, address
    // or command; each bar's colour is in the legend; times without fractions of a second.
    let description = status["status"]["description"].as_str().unwrap();
    assert!(
        dom.contains(&format!(
            r#"data-indicator="{}" style="background:#cf222e">{description}</p>"#,
            status["status"]["indicator"].as_str().unwrap()
        )),
        "{dom}"
    );
    assert!(
        dom.contains(r#"<a class="url" href="https://shop.probe.test/">"#),
        "{dom}"
    );
    for private in ["nginx/", "127.0.0.1", "<code>", "none · ok", "grep "] {
        assert!(
            !dom.contains(private),
            "{private} on the public page: {dom}"
        );
    }
    assert!(dom.contains(r#"<p class="legend" id="legend">"#), "{dom}");
    for words in [
        "100%",
        "99% or more",
        "90–99%",
        "50–90%",
        "under 50%",
        "no data",
    ] {
        assert!(dom.contains(words), "legend {words}: {dom}");
    }
    let footer = dom.split("<footer>Updated ").nth(1).unwrap();
    let stamp: String = footer.chars().take(30).collect();
    assert!(
        stamp.contains(" UTC ·"),
        "no fractions of a second: {footer}"
    );
    assert!(
        !footer.contains(r#"href="metrics""#),
        "metrics name addresses: not linked from a public page"
    );
    let open = dom
        .split(r#"<ul id="open-incidents">"#)
        .nth(1)
        .and_then(|rest| rest.split("</ul>").next())
        .unwrap_or_else(|| panic!("no open incidents list: {dom}"));
    assert!(
        open.contains(r#"data-site="shop""#) && !open.contains(r#"data-site="blog""#),
        "{open}"
    );
    let bars = dom
        .split(r#"class="bars""#)
        .skip(1)
        .map(|b| b.split("</div>").next().unwrap());
    let days: usize = bars
        .map(|b| {
            ["up", "blip", "minor", "major", "down"]
                .iter()
                .map(|c| b.matches(&format!("<span class=\"{c}\"")).count())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(days, 2, "one day of history per site");
    browser(&[
        format!("--screenshot={}", shot.display()),
        "--window-size=412,915".to_string(),
    ]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );

    // A real Prometheus scrapes the served metrics and answers a query on them.
    let samples = tokio::task::spawn_blocking(move || {
        prometheus_query(addr, "probe_success{route=\"edge\"}")
    })
    .await
    .unwrap();
    let by_site: Vec<(String, String)> = samples
        .iter()
        .map(|s| {
            (
                s["metric"]["site"].as_str().unwrap().to_string(),
                s["value"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        by_site.contains(&("blog".into(), "1".into())),
        "{by_site:?}"
    );
    assert!(
        by_site.contains(&("shop".into(), "0".into())),
        "{by_site:?}"
    );
    server.abort();
}

/// Starts Debian's Prometheus scraping `target`/metrics every second and returns the result of
/// `query` once the scrape has succeeded (bounded: 30 s).
fn prometheus_query(target: SocketAddr, query: &str) -> Vec<Value> {
    let prometheus = require_program("prometheus (Debian's)", "/usr/bin/prometheus");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             scrape_configs:\n  - job_name: probe\n    static_configs: [{{ targets: ['{target}'] }}]\n"
        ),
    )
    .unwrap();
    let port = support::free_tcp_port();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(child);
    let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let encoded: String = query
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(api).is_ok() {
            let (status, _, body) = http_get(api, &format!("/api/v1/query?query={encoded}"));
            if status == 200 {
                let answer: Value = serde_json::from_slice(&body).unwrap();
                let result = answer["data"]["result"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if !result.is_empty() {
                    return result;
                }
            }
        }
        assert!(Instant::now() < until, "Prometheus never had the metrics");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs a command to completion, killing it after `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> std::process::Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(child.wait_with_output());
    });
    match receive.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
            panic!("{command:?} did not finish within {limit:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_server_is_read_only_and_bounded() {
    let files = vec![FeedFile {
        path: "status.json".into(),
        content_type: "application/json",
        body: b"{\"page\":{}}\n".to_vec(),
    }];
    let (addr, server) = serve_files(files).await;
    tokio::task::spawn_blocking(move || {
        let request = |text: &str| raw_http(addr, text);
        // GET and HEAD only.
        let (status, headers, _) = request("POST /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert_eq!((status, header(&headers, "allow")), (405, Some("GET, HEAD")));
        let (status, headers, body) = request("HEAD /status.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-length"), Some("12"));
        assert!(body.is_empty());
        // No body, no path outside the feeds, nothing but the feeds.
        let (status, _, _) = request("GET /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
        assert_eq!(status, 413);
        for path in ["/../status.json", "/%2e%2e/etc/passwd", "/badge/../../Cargo.toml", "/status.json/", "//status.json", "/etc/passwd"] {
            let (status, _, body) = request(&format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
            assert_eq!(status, 404, "{path}");
            assert_eq!(body, b"not found\n", "{path}");
        }
        let long = format!("/{}", "a".repeat(3000));
        assert_eq!(http_get(addr, &long).0, 414);
        // Caching: ETag and Last-Modified, answered with 304.
        let (_, headers, _) = http_get(addr, "/status.json");
        let etag = header(&headers, "etag").unwrap().to_string();
        let modified = header(&headers, "last-modified").unwrap().to_string();
        assert!(header(&headers, "cache-control").unwrap().contains("max-age"));
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
        let (status, _, body) = request(&format!("GET /status.json HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"));
        assert_eq!((status, body.len()), (304, 0));
        let (status, _, _) = request(&format!("GET /status.json HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {modified}\r\nConnection: close\r\n\r\n"));
        assert_eq!(status, 304);
        // Oversized headers are refused; a client that trickles its headers is cut off.
        let huge = format!("GET /status.json HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n", "b".repeat(64 * 1024));
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = stream.write_all(huge.as_bytes());
        let mut answer = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut answer);
        assert!(!String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "oversized headers served");
        let started = Instant::now();
        let mut slow = std::net::TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        slow.write_all(b"GET /status.json HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut rest = Vec::new();
        let _ = std::io::Read::read_to_end(&mut slow, &mut rest);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(4) && waited < Duration::from_secs(10), "closed after {waited:?}");
        assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
    })
    .await
    .unwrap();
    server.abort();
}
