//! Regions sharing one PostgreSQL store (a real PostgreSQL 15 started here): each region
//! confirms a failure on its own, the quorum decides the incident, and however the regions'
//! writes interleave, each transition is notified once.
//!
//! The reports are lab fixtures (real observations of a broken and a healthy site), so what is
//! under test is the judging and the store, not the network; the regions' own networks are the
//! subject of the namespace tests.

mod support;

use std::sync::Barrier;

use probe::alert::AlertPhase;
use probe::config::Config;
use probe::schedule::run;
use probe::store::{PostgresStore, RegionalRun, Store};
use probe::ProbeReport;
use support::postgres::Postgres;
use time::OffsetDateTime;

use support::{fixture as report, minute as at};

/// The config every region runs, as that region.
fn config(url: &str, sites: usize, quorum: u32, region: &str) -> Config {
    let mut text = String::from("sites:\n");
    for i in 0..sites {
        text.push_str(&format!(
            "  - {{ name: shop-{i}, url: \"http://127.0.0.1:9/\" }}\n"
        ));
    }
    text.push_str(&format!(
        "alerts:\n  to: [ops@example.com]\n  confirm_runs: 1\n  recover_runs: 1\n  quorum: {quorum}\nstore:\n  url: \"{url}\"\n"
    ));
    let mut loaded = probe::config::parse("probes.yaml", &text, std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    loaded.config.region = region.to_string();
    loaded.config
}

/// The feeds rendered from the store, by file name.
fn feed_files(
    config: &Config,
    store: &dyn Store,
    now: OffsetDateTime,
) -> std::collections::HashMap<String, Vec<u8>> {
    let snapshot = probe::feeds::snapshot(config, store, now).unwrap();
    probe::feeds::render_all(&snapshot)
        .into_iter()
        .map(|f| (f.path, f.body))
        .collect()
}

/// Every queued notification's key, oldest first (the mail to ops@ only).
fn queued(store: &dyn Store) -> Vec<String> {
    let far = at(0) + time::Duration::days(3650);
    store
        .due_messages(far)
        .unwrap()
        .into_iter()
        .map(|m| m.key.trim_end_matches("#mail-ops@example.com").to_string())
        .collect()
}

#[test]
fn three_regions_with_a_quorum_of_two_open_one_incident_and_close_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let url = db.socket_url();
    let regions = ["eu-west", "us-east", "ap-south"];
    let configs: Vec<Config> = regions.iter().map(|r| config(&url, 1, 2, r)).collect();
    let mut stores: Vec<PostgresStore> = regions
        .iter()
        .map(|_| PostgresStore::open(&url).unwrap())
        .collect();
    let (broken, healthy) = (report("lab_fpm_stopped"), report("lab_healthy"));
    let mut step = |region: usize, minute: i64, down: bool| {
        let config = &configs[region];
        let site = &config.sites[0];
        let report = if down { &broken } else { &healthy };
        run::record_site(config, &mut stores[region], site, report, false, at(minute)).unwrap()
    };
    // One region sees the site down, twice: its own state confirms it, nothing is sent. (The
    // others report first: a region that never reported on a site is not counted, so the very
    // first report of all would decide alone.)
    for minute in 0..2 {
        assert_eq!(step(1, minute, false), 0);
        assert_eq!(step(2, minute, false), 0);
        assert_eq!(step(0, minute, true), 0);
    }
    let reader = PostgresStore::open(&url).unwrap();
    assert_eq!(
        reader.region_state("shop-0", "eu-west").unwrap().phase,
        AlertPhase::Down,
        "the region itself confirmed it"
    );
    assert_eq!(reader.alert_state("shop-0").unwrap().phase, AlertPhase::Ok);
    assert!(queued(&reader).is_empty(), "{:?}", queued(&reader));
    // The feeds call it regional: a warning, each region's line, a label per region.
    let feeds = feed_files(&configs[1], &reader, at(1));
    let status: serde_json::Value = serde_json::from_slice(&feeds["status.json"]).unwrap();
    let component = &status["components"][0];
    // Some visitors fail, not all: a partial outage, not the major one of an incident.
    assert_eq!(component["status"], "partial_outage", "{component}");
    assert_eq!(component["probe"]["diagnosis"]["status"], "degraded");
    let summary = component["probe"]["diagnosis"]["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("regional: fails from eu-west while ap-south, us-east see it well"),
        "{summary}"
    );
    let views = component["probe"]["regions"].as_array().unwrap();
    let shown: Vec<(&str, &str, bool)> = views
        .iter()
        .map(|r| {
            (
                r["region"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["confirms_down"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("ap-south", "ok", false),
            ("eu-west", "down", true),
            ("us-east", "ok", false)
        ]
    );
    let metrics = String::from_utf8(feeds["metrics"].clone()).unwrap();
    assert!(
        metrics.contains("probe_region_success{site=\"shop-0\",region=\"eu-west\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("probe_region_success{site=\"shop-0\",region=\"us-east\"} 1"));
    support::assert_promtool_accepts(&metrics);
    let page = String::from_utf8(feeds["index.html"].clone()).unwrap();
    assert_eq!(page.matches("class=\"region\"").count(), 3, "{page}");
    // A second region confirms: one incident, one mail.
    assert_eq!(step(1, 2, true), 1);
    assert_eq!(step(0, 2, true), 0);
    assert_eq!(step(2, 2, true), 0);
    assert_eq!(queued(&reader), ["shop-0/1/opened"]);
    // The mail shows every region's view, and the one that still sees the site well.
    let mail = reader.due_messages(at(100)).unwrap().remove(0).body_text;
    assert!(
        mail.contains("regions: 2 of 3 live confirm it down (quorum 2)"),
        "{mail}"
    );
    assert!(
        mail.contains("region eu-west: down · fpm_unreachable"),
        "{mail}"
    );
    assert!(mail.contains("region ap-south: ok · ok"), "{mail}");
    assert!(
        mail.contains("regional: fails from eu-west, us-east while ap-south see it well"),
        "{mail}"
    );
    // The feeds: down now that the quorum confirms it.
    let feeds = feed_files(&configs[0], &reader, at(2));
    let status: serde_json::Value = serde_json::from_slice(&feeds["status.json"]).unwrap();
    assert_eq!(status["components"][0]["status"], "major_outage");
    let incident = reader.alert_state("shop-0").unwrap();
    assert_eq!(
        (incident.phase, incident.since),
        (AlertPhase::Down, Some(at(0))),
        "the incident began with the first region's first failure"
    );
    // Two regions recover: below the quorum, one recovery mail.
    assert_eq!(step(0, 3, false), 0);
    assert_eq!(step(1, 3, false), 1);
    assert_eq!(step(2, 3, true), 0);
    assert_eq!(queued(&reader), ["shop-0/1/opened", "shop-0/1/recovered"]);
    let incidents = reader.incidents(at(0)).unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].closed_at, Some(at(3)));
    // Each region's results are kept under its name.
    for region in regions {
        let n = db.count(&format!(
            "SELECT COUNT(*) FROM probe.results WHERE region = '{region}'"
        ));
        assert_eq!(n, 4, "{region}");
    }
}

/// Stores a region's pass over `sites` (in that order) as one batch, as `probe run` does.
fn record_pass(
    config: &Config,
    store: &mut dyn Store,
    sites: &[usize],
    report: &ProbeReport,
    minute: i64,
) {
    let now = at(minute);
    let states: Vec<_> = sites
        .iter()
        .map(|&i| run::judge_region(config, store, &config.sites[i], report, false, now).unwrap())
        .collect();
    let runs: Vec<RegionalRun<'_>> = sites
        .iter()
        .zip(&states)
        .map(|(&i, state)| RegionalRun {
            site: &config.sites[i].name,
            at: now,
            report,
            state: Some(state),
        })
        .collect();
    store
        .record_regional(&config.region, &runs, &mut |n, current, views, ledger| {
            let site = &config.sites[sites[n]];
            run::decide_site(config, site, report, false, now, current, views, ledger)
        })
        .unwrap();
}

#[test]
fn regions_deciding_the_same_transition_together_send_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let url = db.socket_url();
    const SITES: usize = 200;
    let regions = ["eu-west", "us-east", "ap-south"];
    let (broken, healthy) = (report("lab_fpm_stopped"), report("lab_healthy"));
    let configs: Vec<Config> = regions.iter().map(|r| config(&url, SITES, 2, r)).collect();
    let all: Vec<usize> = (0..SITES).collect();
    for config in &configs {
        let mut store = PostgresStore::open(&url).unwrap();
        record_pass(config, &mut store, &all, &healthy, 0);
    }
    // Quorum 2 of 3: two regions see every site fail in the same minute, then recover in the
    // same minute, each pass one batch written and decided at the same moment as the other's
    // (in its own order of sites), the third region healthy throughout. Whichever decides
    // second must see the first: one opening and one recovery per site, never none, never two.
    let barrier = Barrier::new(regions.len());
    std::thread::scope(|scope| {
        for (n, config) in configs.iter().enumerate() {
            let (url, barrier, broken, healthy) = (&url, &barrier, &broken, &healthy);
            scope.spawn(move || {
                let mut store = PostgresStore::open(url).unwrap();
                let mut order: Vec<usize> = (0..SITES).collect();
                order.rotate_left(n * 67);
                for (minute, failing) in [(1, true), (2, false)] {
                    let report = if failing && n < 2 { broken } else { healthy };
                    barrier.wait();
                    record_pass(config, &mut store, &order, report, minute);
                }
            });
        }
    });
    let reader = PostgresStore::open(&url).unwrap();
    let keys = queued(&reader);
    // Each site's incident takes its own number from the store's one count, however the
    // regions raced for it.
    let mut numbers = Vec::new();
    for i in 0..SITES {
        let mine: Vec<&String> = keys
            .iter()
            .filter(|k| k.starts_with(&format!("shop-{i}/")))
            .collect();
        let number = mine
            .first()
            .and_then(|k| k.split('/').nth(1))
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            mine,
            [
                &format!("shop-{i}/{number}/opened"),
                &format!("shop-{i}/{number}/recovered")
            ],
            "site {i}"
        );
        numbers.push(number.parse::<u64>().unwrap());
    }
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), SITES, "one number per incident");
    assert_eq!(keys.len(), 2 * SITES);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM probe.results"),
        (3 * 3 * SITES) as i64
    );
}

#[test]
fn one_region_alone_behaves_as_before_regions() {
    // The default region with the default quorum on PostgreSQL: suspect, opened, recovering,
    // recovered — the states and mail of a single prober.
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let url = db.socket_url();
    let mut config = config(&url, 1, 1, "default");
    config.alerts.confirm_runs = 2;
    config.alerts.recover_runs = 2;
    let mut store = PostgresStore::open(&url).unwrap();
    let (broken, healthy) = (report("lab_fpm_stopped"), report("lab_healthy"));
    let site = config.sites[0].clone();
    let mut sent = Vec::new();
    for (minute, report) in [&broken, &broken, &healthy, &healthy]
        .into_iter()
        .enumerate()
    {
        sent.push(
            run::record_site(&config, &mut store, &site, report, false, at(minute as i64)).unwrap(),
        );
    }
    assert_eq!(sent, [0, 1, 0, 1]);
    assert_eq!(queued(&store), ["shop-0/1/opened", "shop-0/1/recovered"]);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM probe.results WHERE region = 'default'"),
        4
    );
}

/// Results of one site written together (kept through a store outage): each is decided as it
/// happened — a failure that came and went within the batch opens its incident and closes it,
/// on both stores.
#[test]
fn a_batch_with_a_site_several_times_is_decided_run_by_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = Postgres::start(dir.path());
    let (broken, healthy) = (report("lab_fpm_stopped"), report("lab_healthy"));
    let entries = [
        (0, &healthy, at(0)),
        (0, &broken, at(1)),
        (0, &broken, at(2)),
        (0, &healthy, at(3)),
        (0, &healthy, at(4)),
    ];
    let sqlite_path = dir.path().join("probe.sqlite");
    let mut sqlite = probe::store::SqliteStore::open(&sqlite_path).unwrap();
    let mut postgres = PostgresStore::open(&db.socket_url()).unwrap();
    let stores: [(&str, &mut dyn Store); 2] =
        [("sqlite", &mut sqlite), ("postgres", &mut postgres)];
    for (name, store) in stores {
        let config = config(&db.socket_url(), 1, 1, "default");
        run::record_batch(&config, store, &entries, false).unwrap();
        assert_eq!(
            queued(store),
            ["shop-0/1/opened", "shop-0/1/recovered"],
            "{name}"
        );
        let incidents = store.incidents(at(0)).unwrap();
        assert_eq!(
            (incidents[0].opened_at, incidents[0].closed_at),
            (at(1), Some(at(3))),
            "{name}"
        );
    }
}
