//! Statuspage's public v2 endpoints, read by a real consumer: the `statuspage.io` client library
//! from npm, its API URL pointed at probe's served feeds. A recorded outage that opened and was
//! resolved, one still open, and a maintenance window to come; then `run --feeds-dir` writes the
//! same documents at the same relative paths, and history.rss reads in Python's feedparser.

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use probe::feeds::server::{self as serve, Published};
use probe::feeds::{self, FeedFile};
use probe::schedule::run;
use probe::store::SqliteStore;
use serde_json::Value;
use support::{fixture, minute, require_program};

async fn serve_files(files: Vec<FeedFile>) -> std::net::SocketAddr {
    let published = Published::default().next(files, time::OffsetDateTime::now_utc());
    let listener = serve::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(listener, Arc::new(published)));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statuspage_client_reads_probe_unchanged() {
    let modules =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/node/node_modules");
    assert!(
        modules.join("statuspage.io/package.json").exists(),
        "the statuspage.io library is missing: run ./scripts/install-test-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        "sites:\n  - name: shop\n    url: https://shop.example/\n    origins: [127.0.0.1]\n  - name: blog\n    url: https://blog.example/\n    origins: [127.0.0.1]\n\
         alerts:\n  confirm_runs: 1\n  recover_runs: 1\n\
         maintenance:\n  - sites: [blog]\n    start: 2031-01-01T02:00:00Z\n    end: 2031-01-01T03:00:00Z\n    reason: database upgrade\n\
         feeds:\n  title: Example status\n  url: https://status.example/\nstore:\n  path: probe.sqlite\n",
    )
    .unwrap();
    let config = probe::config::load(&path).unwrap().config;
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let (shop, blog) = (&config.sites[0], &config.sites[1]);
    for (m, site, name) in [
        (0, shop, "lab_fpm_stopped"),
        (1, shop, "lab_healthy"),
        (2, blog, "lab_healthy"),
        (3, blog, "wordpress_database_down"),
    ] {
        run::record_site(&config, &mut store, site, &fixture(name), false, minute(m)).unwrap();
    }
    let snapshot = feeds::snapshot(&config, &store, minute(4)).unwrap();
    let files = feeds::render_all(&snapshot);
    let addr = serve_files(files.clone()).await;

    let node = require_program("node (Debian's nodejs)", "/usr/bin/node");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/statuspage_consumer.js"
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(node)
            .arg(script)
            .arg(format!("http://{addr}"))
            .env("NODE_PATH", modules)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();

    // Every document starts with the page.
    for doc in [
        "summary",
        "status",
        "components",
        "incidents",
        "unresolved",
        "maintenances",
        "upcoming",
    ] {
        assert_eq!(read[doc]["page"]["name"], "Example status", "{doc}");
        assert_eq!(read[doc]["page"]["url"], "https://status.example/", "{doc}");
    }
    // status: the rollup, the same as the summary's; blog's database is down.
    assert_eq!(read["status"]["status"], read["summary"]["status"]);
    assert_ne!(read["status"]["status"]["indicator"], "none");
    // components: both sites, blog in an outage.
    let components = read["components"]["components"].as_array().unwrap();
    let status_of = |name: &str| {
        components
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["status"].clone())
            .unwrap()
    };
    assert_eq!(
        (status_of("shop"), status_of("blog")),
        (Value::from("operational"), Value::from("major_outage"))
    );
    // incidents: both, newest first; shop's resolved with its update; unresolved: blog's only.
    let all = read["incidents"]["incidents"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all[0]["name"].as_str().unwrap().starts_with("blog: "),
        "{}",
        all[0]["name"]
    );
    let resolved = &all[1];
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolved_at"], "2027-01-15T08:01:00Z");
    assert_eq!(resolved["incident_updates"][0]["status"], "resolved");
    let unresolved = read["unresolved"]["incidents"].as_array().unwrap();
    assert_eq!(unresolved.len(), 1);
    assert_eq!(unresolved[0]["components"][0]["name"], "blog");
    assert_eq!(
        read["summary"]["incidents"],
        read["unresolved"]["incidents"]
    );
    // maintenances: the window to come, scheduled, in both lists.
    let upcoming = read["upcoming"]["scheduled_maintenances"]
        .as_array()
        .unwrap();
    assert_eq!(upcoming.len(), 1);
    assert_eq!(upcoming[0]["name"], "database upgrade");
    assert_eq!(upcoming[0]["status"], "scheduled");
    assert_eq!(
        read["maintenances"]["scheduled_maintenances"],
        read["upcoming"]["scheduled_maintenances"]
    );

    // sla.json: each site's availability this calendar month (one run down of two each).
    let sla: Value = serde_json::from_slice(
        &files
            .iter()
            .find(|f| f.path == "api/v1/sla.json")
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(sla["months"][0], "2027-01");
    assert_eq!(sla["months"].as_array().unwrap().len(), 4);
    for site in sla["sites"].as_array().unwrap() {
        let month = &site["months"][0];
        assert_eq!(
            (
                &month["availability"],
                &month["results"],
                &month["down_results"]
            ),
            (&Value::from(0.5), &Value::from(2), &Value::from(1)),
            "{site}"
        );
        assert_eq!(site["months"][1]["availability"], Value::Null);
    }
    let page = files.iter().find(|f| f.path == "index.html").unwrap();
    let page = String::from_utf8_lossy(&page.body);
    assert!(
        page.contains("<table id=\"monthly-availability\">") && page.contains("<td>50.00%</td>"),
        "{page}"
    );

    // `run --feeds-dir` writes the same documents at the same relative paths.
    let out = tempfile::tempdir().unwrap();
    feeds::render_into_dir(&snapshot, out.path()).unwrap();
    for file in files
        .iter()
        .filter(|f| f.path.starts_with("api/v2/") || f.path.starts_with("history."))
    {
        let written = std::fs::read(out.path().join(&file.path))
            .unwrap_or_else(|e| panic!("{}: {e}", file.path));
        assert_eq!(written, file.body, "{}", file.path);
    }
    assert!(out.path().join("api/v2/incidents/unresolved.json").exists());
    assert!(
        out.path().join("status.json").exists(),
        "today's files stay where they are"
    );

    // history.rss: RSS 2.0 that feedparser reads without complaint, one item per incident.
    let rss = files.iter().find(|f| f.path == "history.rss").unwrap();
    let python = require_program("python3 (Debian's, with feedparser)", "/usr/bin/python3");
    let mut child = Command::new(python)
        .arg("-c")
        .arg("import sys, json, feedparser\nd = feedparser.parse(sys.stdin.buffer.read())\nassert not d.bozo, d.bozo_exception\nassert d.version == 'rss20', d.version\nprint(json.dumps([e.title for e in d.entries]))")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&rss.body).unwrap();
    let parsed = child.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let titles: Vec<String> = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(titles.len(), 2, "{titles:?}");
    assert!(
        titles.iter().any(|t| t.starts_with("[RESOLVED] shop")),
        "{titles:?}"
    );
}
