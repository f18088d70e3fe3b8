//! `probe watch` as a process, on the lab's real nginx + PHP-FPM: it probes each site on its
//! interval, logs JSON, serves the feeds (`--listen`), takes a new config on SIGHUP (keeping the running one when the new file
//! is broken), and on SIGTERM lets the probe in flight finish and stores it before exiting 0.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use probe::store::SqliteStore;
use serde_json::Value;
use support::lab::{Lab, OriginSettings, STATIC_PATH};
use support::watch::{field, WatchProcess};

fn probed(site: &'static str) -> impl Fn(&Value) -> bool {
    move |line| field(line, "message") == "probed" && field(line, "site") == site
}

fn config_text(lab: &Lab, extra_site: &str) -> String {
    let address = lab.origin.address();
    format!(
        r#"defaults:
  interval: 1s
  timeout: 900ms
  ca_file: {ca}
sites:
  - name: lab
    url: https://probe.test/
    edge: "{address}"
    origins: ["{address}"]
    static_path: {STATIC_PATH}
  - name: slow
    url: https://probe.test/sleep.php?ms=600&mark=slow
    edge: "{address}"
    interval: 2s
{extra_site}alerts:
  confirm_retries: 0
store:
  path: probe.sqlite
"#,
        ca = lab.pki.ca_path.display(),
    )
}

fn results(store: &Path, site: &str) -> i64 {
    SqliteStore::open_read_only(store)
        .unwrap()
        .result_count(site)
        .unwrap()
}

#[test]
fn watch_probes_on_interval_reloads_on_sighup_and_stops_gracefully_on_sigterm() {
    let mut lab = Lab::start(&OriginSettings::default());
    let config: PathBuf = lab.dir.path().join("probes.yaml");
    let store = lab.dir.path().join("probe.sqlite");
    std::fs::write(&config, config_text(&lab, "")).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", support::free_tcp_port())
        .parse()
        .unwrap();
    let mut watch = WatchProcess::start(
        &config,
        &[format!("--listen={listen}")],
        &[("PROBE_LOG", "probe=debug")],
    );

    // Each site is probed, and probed again on its interval.
    watch.wait_for("`watching`", Duration::from_secs(10), |l| {
        field(l, "message") == "watching"
    });
    // A debug line from inside the probe names its site (the span it runs in).
    let observed = watch.wait_for("an observed line", Duration::from_secs(10), |l| {
        field(l, "message") == "observed" && l.to_string().contains(r#""site":"lab""#)
    });
    assert!(
        observed.to_string().contains(r#""host":"probe.test""#),
        "{observed}"
    );
    let first = watch.wait_for("lab probed", Duration::from_secs(10), probed("lab"));
    assert_eq!(field(&first, "status"), "ok", "{first}");
    watch.wait_for("slow probed", Duration::from_secs(10), probed("slow"));
    for _ in 0..3 {
        watch.wait_for("lab probed again", Duration::from_secs(5), probed("lab"));
    }

    // The feeds are served, and follow the results (rendered again within a few seconds).
    let until = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let (status, _, body) = support::http_get(listen, "/metrics");
        let body = String::from_utf8_lossy(&body).into_owned();
        if status == 200 && body.contains("probe_success{site=\"lab\",route=\"origin\"") {
            break body;
        }
        assert!(
            Instant::now() < until,
            "no lab metrics served: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metrics.contains("probe_diagnosis_info{site=\"lab\",status=\"ok\""),
        "{metrics}"
    );
    let (status, _, body) = support::http_get(listen, "/status.json");
    assert_eq!(status, 200);
    let summary: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(summary["components"][0]["name"], "lab");
    assert_eq!(summary["components"][0]["status"], "operational");

    // An incident is logged with what a person needs — the site, what happened, its severity,
    // cause and number — as a warning while the site is down, and as information once over.
    lab.origin.fpm.stop();
    let alert = |transition: &'static str| {
        move |l: &Value| {
            field(l, "message") == "alert"
                && field(l, "site") == "lab"
                && field(l, "transition") == transition
        }
    };
    let opened = watch.wait_for("lab down", Duration::from_secs(15), alert("opened"));
    assert_eq!(opened["level"], "WARN", "{opened}");
    assert_eq!(
        (field(&opened, "severity"), field(&opened, "cause")),
        ("down", "fpm_unreachable"),
        "{opened}"
    );
    // Its number is the store's next (the slow site's warning may have taken one before).
    let number = opened["fields"]["incident"].as_u64().unwrap_or(0);
    assert!(number >= 1, "{opened}");
    lab.origin.fpm =
        support::php_fpm::PhpFpm::start(lab.dir.path(), &support::php_fpm::PoolSettings::default());
    let recovered = watch.wait_for("lab recovered", Duration::from_secs(15), alert("recovered"));
    assert_eq!(recovered["level"], "INFO", "{recovered}");
    assert_eq!(field(&recovered, "cause"), "fpm_unreachable", "{recovered}");
    assert_eq!(recovered["fields"]["incident"], number, "{recovered}");

    // A broken config is rejected with its file:line:column, and the old one keeps running.
    std::fs::write(
        &config,
        config_text(&lab, "").replace("interval: 1s", "interval: often"),
    )
    .unwrap();
    watch.signal("HUP");
    let rejected = watch.wait_for("reload rejected", Duration::from_secs(10), |l| {
        l["level"] == "ERROR"
    });
    let problem = field(&rejected, "problem");
    assert!(
        problem.starts_with(&format!("{}:2:13: defaults.interval:", config.display())),
        "{rejected}"
    );
    for _ in 0..2 {
        watch.wait_for("lab still probed", Duration::from_secs(5), probed("lab"));
    }

    // A good config with one more site: reloaded, the new site probed.
    let extra = format!(
        "  - name: added\n    url: https://probe.test/\n    edge: \"{}\"\n",
        lab.origin.address()
    );
    std::fs::write(&config, config_text(&lab, &extra)).unwrap();
    watch.signal("HUP");
    let reloaded = watch.wait_for("config reloaded", Duration::from_secs(10), |l| {
        field(l, "message") == "config reloaded"
    });
    assert_eq!(reloaded["fields"]["added"], 1, "{reloaded}");
    assert_eq!(reloaded["fields"]["kept"], 2, "{reloaded}");
    watch.wait_for("added probed", Duration::from_secs(10), probed("added"));

    // SIGTERM while the slow site's request is inside PHP: that probe finishes, is stored, and
    // the process exits 0.
    let mark = lab.dir.path().join("marks/slow");
    let _ = std::fs::remove_file(&mark);
    let until = Instant::now() + Duration::from_secs(10);
    while !mark.exists() {
        assert!(Instant::now() < until, "the slow site was not probed again");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stored_before = results(&store, "slow");
    watch.signal("TERM");
    let stopping = watch.wait_for("stopping", Duration::from_secs(5), |l| {
        field(l, "message").starts_with("stopping")
    });
    assert!(
        stopping["fields"]["in_flight"].as_u64().unwrap() >= 1,
        "{stopping}"
    );
    assert!(
        field(&stopping, "message").contains("within their own deadlines and the grace")
            && field(&stopping, "grace") == "2 seconds",
        "the wait explained: {stopping}"
    );
    watch.wait_for(
        "the slow probe's result",
        Duration::from_secs(5),
        probed("slow"),
    );
    watch.wait_for("stopped", Duration::from_secs(5), |l| {
        field(l, "message") == "stopped"
    });
    let until = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = watch.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "watch did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        results(&store, "slow"),
        stored_before + 1,
        "the probe in flight at SIGTERM was stored"
    );
    assert!(results(&store, "lab") >= 6);
    assert!(results(&store, "added") >= 1);
}
