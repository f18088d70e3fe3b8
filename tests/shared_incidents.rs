//! Shared incidents told from recorded reports, one run at a time (`record_site`, as `probe
//! watch` decides each result): two sites on one origin address, alpha's alerts to alice, beta's
//! to bob, a webhook hearing of both. Each destination hears its own sites' story, whole: its
//! end as soon as its sites are over, a site failing again inside the shared incident, a warning
//! that ended because its site went down, a certificate's page closed by its renewal.

mod support;

use probe::config::Config;
use probe::schedule::run;
use probe::store::{Channel, SqliteStore, Store};
use probe::ProbeReport;
use support::{fixture, minute};

fn config(dir: &std::path::Path, extra: &str) -> Config {
    let text = format!(
        r#"sites:
  - {{ name: alpha, url: "https://alpha.example/", origins: ["127.0.0.1"], alert_to: [alice@example.com] }}
  - {{ name: beta, url: "https://beta.example/", origins: ["127.0.0.1"], alert_to: [bob@example.com] }}
alerts:
  confirm_runs: 1
  recover_runs: 1
  confirm_retries: 0
  warning:
    confirm_runs: 1
    recover_runs: 1
webhooks:
  - url: https://hooks.example/x
store:
  path: probe.sqlite
{extra}"#
    );
    let path = dir.join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    probe::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

fn record(config: &Config, store: &mut SqliteStore, site: usize, report: &ProbeReport, m: i64) {
    run::record_site(config, store, &config.sites[site], report, false, minute(m)).unwrap();
}

/// Every queued message: (channel, key, subject, body).
fn outbox(store: &SqliteStore) -> Vec<(Channel, String, String, String)> {
    store
        .due_messages(minute(100_000))
        .unwrap()
        .into_iter()
        .map(|m| (m.channel, m.key, m.subject, m.body_text))
        .collect()
}

fn subjects_to(all: &[(Channel, String, String, String)], to: &str) -> Vec<String> {
    all.iter()
        .filter(|(c, k, _, _)| *c == Channel::Mail && k.ends_with(&format!("#mail-{to}")))
        .map(|(_, _, s, _)| s.clone())
        .collect()
}

#[test]
fn each_destination_hears_its_sites_end_and_a_site_failing_again_is_told_again() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let (down, up) = (fixture("lab_fpm_stopped"), fixture("lab_healthy"));
    record(&config, &mut store, 0, &down, 0);
    record(&config, &mut store, 1, &down, 0);
    // alpha is well again while beta is not: alice's story is over, bob's goes on.
    record(&config, &mut store, 0, &up, 1);
    record(&config, &mut store, 1, &down, 1);
    let all = outbox(&store);
    let alice = subjects_to(&all, "alice@example.com");
    assert_eq!(alice.len(), 2, "{alice:#?}");
    assert!(alice[0].starts_with("[DOWN] alpha: "), "{}", alice[0]);
    assert_eq!(alice[1], "[RECOVERED] alpha after 1 minute");
    assert_eq!(subjects_to(&all, "bob@example.com").len(), 1);
    // alpha fails again while the shared incident goes on: one incident, told again.
    record(&config, &mut store, 0, &down, 2);
    record(&config, &mut store, 1, &down, 2);
    let all = outbox(&store);
    let alice = subjects_to(&all, "alice@example.com");
    assert_eq!(alice.len(), 3, "{alice:#?}");
    assert!(alice[2].starts_with("[DOWN] alpha: "), "{}", alice[2]);
    let alpha = store.alert_state("alpha").unwrap();
    let beta = store.alert_state("beta").unwrap();
    assert_eq!(alpha.incident, beta.incident, "one number");
    assert_eq!(alpha.episode, 1);
    // Its webhooks are two openings, each its own delivery.
    let openings: Vec<&String> = all
        .iter()
        .filter(|(c, k, _, _)| *c == Channel::Webhook && k.starts_with("alpha/"))
        .map(|(_, k, _, _)| k)
        .filter(|k| k.contains("/opened"))
        .collect();
    assert_eq!(openings.len(), 2, "{openings:#?}");
    // The store shows alpha's incident open again.
    let incidents = store.incidents(minute(0)).unwrap();
    assert!(
        incidents
            .iter()
            .any(|i| i.site == "alpha" && i.closed_at.is_none()),
        "{incidents:#?}"
    );
    // Both well: each hears its own end, once.
    record(&config, &mut store, 0, &up, 3);
    record(&config, &mut store, 1, &up, 3);
    let all = outbox(&store);
    let alice = subjects_to(&all, "alice@example.com");
    assert_eq!(alice.len(), 4, "{alice:#?}");
    assert_eq!(alice[3], "[RECOVERED] alpha after 1 minute");
    let bob = subjects_to(&all, "bob@example.com");
    assert_eq!(bob.len(), 2, "{bob:#?}");
    assert_eq!(bob[1], "[RECOVERED] beta after 3 minutes");
}

#[test]
fn a_warning_that_ended_because_its_site_went_down_is_not_told_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    record(&config, &mut store, 0, &fixture("lab_slow_page"), 0);
    record(&config, &mut store, 1, &fixture("lab_healthy"), 0);
    record(&config, &mut store, 0, &fixture("lab_fpm_stopped"), 1);
    record(&config, &mut store, 1, &fixture("lab_healthy"), 1);
    let alice = subjects_to(&outbox(&store), "alice@example.com");
    assert_eq!(alice.len(), 2, "{alice:#?}");
    assert!(alice[0].starts_with("[WARNING] alpha: "), "{}", alice[0]);
    assert!(alice[1].starts_with("[DOWN] alpha: "), "{}", alice[1]);
}

#[test]
fn a_shared_warning_reminds_at_the_warnings_pace() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "");
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let (slow, up) = (fixture("lab_slow_page"), fixture("lab_healthy"));
    record(&config, &mut store, 0, &slow, 0);
    record(&config, &mut store, 1, &up, 0);
    // 4 hours later (the outages' pace), still slow: a warning reminds every day.
    record(&config, &mut store, 0, &slow, 241);
    record(&config, &mut store, 1, &up, 241);
    let keys: Vec<String> = outbox(&store).into_iter().map(|(_, k, _, _)| k).collect();
    assert!(!keys.iter().any(|k| k.contains("reminder")), "{keys:#?}");
    record(&config, &mut store, 0, &slow, 24 * 60 + 1);
    let keys: Vec<String> = outbox(&store).into_iter().map(|(_, k, _, _)| k).collect();
    assert!(keys.iter().any(|k| k.contains("reminder")), "{keys:#?}");
}

/// A report whose certificates all end at `not_after`.
fn with_cert(name: &str, not_after: &str) -> ProbeReport {
    let mut value: serde_json::Value = serde_json::to_value(fixture(name)).unwrap();
    for o in value["observations"].as_array_mut().unwrap() {
        if let Some(chain) = o["tls"]["chain"].as_array_mut() {
            if let Some(leaf) = chain.first_mut() {
                leaf["not_after"] = serde_json::json!(not_after);
            }
        }
    }
    serde_json::from_value(value).unwrap()
}

#[test]
fn a_certificates_page_is_closed_by_its_renewal_with_the_key_it_was_opened_with() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("PROBE_TEST_SHARED_PD", "R0UT1NGKEY0000000000000000000000");
    let config = config(
        dir.path(),
        "notify:\n  - {type: pagerduty, routing_key_env: PROBE_TEST_SHARED_PD, url: \"https://pd.example/v2/enqueue\"}\n",
    );
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let expiring = with_cert("edge_cert_expiring", "2027-01-25T08:00:00Z");
    let renewed = with_cert("edge_cert_expiring", "2027-04-25T08:00:00Z");
    for (m, report) in [(0, &expiring), (1, &expiring), (2, &renewed), (3, &renewed)] {
        for site in 0..2 {
            record(&config, &mut store, site, report, m);
        }
    }
    let mut events = Vec::new();
    for (channel, _, _, body) in outbox(&store) {
        if channel == Channel::Chat {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            events.push((v["event_action"].to_string(), v["dedup_key"].to_string()));
        }
    }
    let triggered: Vec<&String> = events
        .iter()
        .filter(|(a, _)| a.contains("trigger"))
        .map(|(_, k)| k)
        .collect();
    let resolved: Vec<&String> = events
        .iter()
        .filter(|(a, _)| a.contains("resolve"))
        .map(|(_, k)| k)
        .collect();
    assert!(!triggered.is_empty() && !resolved.is_empty(), "{events:?}");
    assert!(
        triggered.iter().all(|t| resolved.contains(t)),
        "triggered {triggered:?}, resolved {resolved:?}"
    );
}
