//! Judging across time, on real parts: a real PHP-FPM whose worker dies now and then, a pool whose
//! listen backlog overflows under a burst, and certificates coming close to expiry — each run
//! stamped a minute later (compressed time), mail through a real SMTP server.

mod support;

use probe::config;
use probe::schedule::run::run_once;
use probe::store::{SqliteStore, Store};
use support::lab::{Lab, OriginSettings, STATIC_PATH};
use support::minute;
use support::php_fpm::PoolSettings;
use support::pki::Pki;
use support::servers::{tls_server, Alpn, Behaviour};
use support::smtp::{SmtpServer, PASSWORD, USER};

/// The lab tests here run one at a time: each reads timings (a 502 within 50 ms is nginx not
/// reaching PHP-FPM), and six labs at once on two cores would blur them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `write_config` for a lab and its mail server.
fn lab_config(
    lab: &Lab,
    server: &SmtpServer,
    sites: &str,
    alerts: &str,
    env: &str,
) -> config::Config {
    write_config(
        lab.dir.path(),
        &lab.pki.ca_path,
        sites,
        alerts,
        server.port,
        env,
    )
}

/// A config with `sites` (YAML list entries), `alerts` settings, mail to ops@example.com.
fn write_config(
    dir: &std::path::Path,
    ca: &std::path::Path,
    sites: &str,
    alerts: &str,
    smtp_port: u16,
    password_env: &str,
) -> config::Config {
    let ca = ca.display();
    let text = format!(
        r#"defaults:
  timeout: 3s
  ca_file: {ca}
sites:
{sites}
alerts:
  to: [ops@example.com]
{alerts}
smtp:
  host: 127.0.0.1
  port: {smtp_port}
  security: starttls
  username: {USER}
  password_env: {password_env}
  from: "probe <probe@example.com>"
  ca_file: {ca}
  timeout: 5s
store:
  path: probe.sqlite
"#
    );
    let path = dir.join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}")).config
}

/// A PHP-FPM worker killed mid-request once every three runs: each failure is hidden by the
/// in-run retry (the run is healthy), yet the history shows it. One blip sends nothing; the
/// third opens one intermittent incident whose diagnosis reads the pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dying_one_request_in_three_opens_one_intermittent_incident() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_DIE", PASSWORD);
    let lab = Lab::start(&OriginSettings::default());
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    // One route only: the planned death meets the one page request of the attempt (with an
    // origin route beside it, either of the two concurrent requests could meet it).
    let address = lab.origin.address();
    let sites = format!(
        "  - {{ name: lab, url: \"https://probe.test/flaky.php\", edge: \"{address}\", static_path: {STATIC_PATH} }}"
    );
    let config = lab_config(
        &lab,
        &server,
        &sites,
        "  confirm_retries: 2\n  retry_spacing: 50ms",
        "PROBE_TEST_SMTP_PASSWORD_JUDGE_DIE",
    );
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();

    let waits = [250, 400, 550, 300, 450, 350, 500];
    let mut sent = Vec::new();
    for m in 0..20 {
        if m % 3 == 1 {
            lab.origin.kill_next_worker_after(waits[(m / 3) as usize]);
        }
        let pass = run_once(&config, &mut store, minute(m)).await.unwrap();
        assert!(
            !lab.origin.worker_kill_pending(),
            "minute {m}: the planned death happened"
        );
        assert_eq!(
            pass.worst(),
            probe::Status::Ok,
            "minute {m}: the retry hides the failure"
        );
        sent.push(pass.mails_sent);
    }
    // Deaths at minutes 1, 4, 7, …: one blip (minute 1) and a second (4) send nothing; the
    // third (7) opens the incident; nothing more while it stays open.
    let mut expected = vec![0; 20];
    expected[7] = 1;
    assert_eq!(sent, expected);
    let subjects = server.subjects();
    assert_eq!(
        subjects,
        ["[INTERMITTENT] lab: a PHP-FPM worker died mid-request (fpm_worker_died)"]
    );
    let mail = &server.messages()[0];
    // The history quoted: 3 failures of the 8 runs so far, first at minute 1, each a 502 after
    // the worker's partial work.
    let first = minute(1);
    let line = format!(
        "3 of the last 8 runs failed, first at {:02}:{:02}; each a 502 after ",
        first.hour(),
        first.minute()
    );
    assert!(mail.contains(&line), "{mail}");
    assert!(
        mail.contains("3 of them hidden by a retry within the run"),
        "{mail}"
    );
    assert!(mail.contains("dmesg -T"), "crash vs OOM commands: {mail}");
    // The failure the retry hid is kept with the stored result of its run (minute 19).
    let latest = store.latest_results().unwrap().remove(0).report;
    let hidden = latest
        .hidden_failure
        .expect("the last run's death is on record");
    assert_eq!(
        (hidden.code, hidden.cause),
        (Some(502), probe::diagnose::Cause::FpmWorkerDied)
    );
    assert!(hidden.wait_ms >= 500.0, "{hidden:?}");

    // The feeds show the intermittent incident apart from outages, though the latest run was
    // fine: a partial outage on the status page, its severity on the incident and the entry.
    let files =
        probe::feeds::render_all(&probe::feeds::snapshot(&config, &store, minute(19)).unwrap());
    let file = |path: &str| {
        let f = files.iter().find(|f| f.path == path).unwrap();
        String::from_utf8(f.body.clone()).unwrap()
    };
    let status: serde_json::Value = serde_json::from_str(&file("status.json")).unwrap();
    assert_eq!(status["components"][0]["status"], "partial_outage");
    assert_eq!(
        status["components"][0]["probe"]["diagnosis"]["status"],
        "ok"
    );
    // Why it reads worse than its latest check, said beside it.
    assert_eq!(status["components"][0]["probe"]["open"], "intermittent");
    let incident = &status["incidents"][0];
    assert_eq!(incident["probe"]["severity"], "intermittent");
    assert_eq!(incident["impact"], "major");
    assert_eq!(
        incident["name"],
        "Intermittent — lab: a PHP-FPM worker died mid-request"
    );
    let atom = file("incidents.atom");
    assert!(
        atom.contains("<title>[INTERMITTENT] lab: a PHP-FPM worker died mid-request (fpm_worker_died)</title>"),
        "{atom}"
    );
    assert!(atom.contains(r#"<category term="intermittent" label="severity"/>"#));
    let page = file("index.html");
    assert!(page.contains(r#"<ul id="open-warnings">"#), "{page}");
    assert!(
        page.contains("Fails now and then: an intermittent incident is open. The latest check: "),
        "a partial outage beside a healthy check says why: {page}"
    );
    assert!(
        !page.contains(r#"<ul id="open-incidents">"#),
        "no outage is open"
    );
}

/// One PHP-FPM worker with a listen backlog of 1, and a site asking for its page 5 times at
/// once: some requests are turned away at once (502) while others are answered — the full
/// backlog, read from the pattern as an intermittent incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_against_a_full_backlog_reads_as_saturation() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_BURST", PASSWORD);
    let settings = OriginSettings {
        pool: PoolSettings {
            max_children: 1,
            listen_backlog: Some(1),
            ..PoolSettings::default()
        },
        ..OriginSettings::default()
    };
    let lab = Lab::start(&settings);
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    let address = lab.origin.address();
    let sites = format!(
        "  - {{ name: lab, url: \"https://probe.test/sleep.php?ms=300\", edge: \"{address}\", origins: [\"{address}\"], static_path: {STATIC_PATH}, burst: 5 }}"
    );
    let config = lab_config(
        &lab,
        &server,
        &sites,
        "  confirm_retries: 0",
        "PROBE_TEST_SMTP_PASSWORD_JUDGE_BURST",
    );
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    for m in 0..4 {
        run_once(&config, &mut store, minute(m)).await.unwrap();
    }
    let latest = store.latest_results().unwrap().remove(0).report;
    let pages: Vec<_> = latest
        .observations
        .iter()
        .filter(|o| o.path_role == probe::observe::PathRole::Page)
        .collect();
    assert_eq!(pages.len(), 10, "5 at once on each route");
    let refused = pages
        .iter()
        .filter(|o| o.response.as_ref().is_some_and(|r| r.status == 502))
        .count();
    assert!(
        refused > 0 && refused < 10,
        "some turned away, some answered: {refused}"
    );
    let subjects = server.subjects();
    assert_eq!(
        subjects,
        ["[INTERMITTENT] lab: PHP-FPM has no free worker (fpm_saturated)"],
        "one incident; the warning the degraded runs would raise is part of it"
    );
    let mail = &server.messages()[0];
    assert!(mail.contains("listen backlog"), "{mail}");
    assert!(
        mail.contains("failed only some of their page requests"),
        "{mail}"
    );
}

/// A certificate seen 13, 6 and 2 days before its expiry (the run's clock compressed: the
/// same certificate, its days running out), then a renewed one: one notice at each threshold of
/// [14, 7, 3, 1] crossed, naming the certificate, then one "renewed" that closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_certificate_threshold_is_noticed_once_and_the_renewal_closes_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_CERT", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let smtp = SmtpServer::start(dir.path(), &pki, None);
    let start = minute(0);
    let day = time::Duration::DAY;
    let names = [support::pki::SITE];
    let expiring = pki.leaf_until(&names, start + day * 13 + time::Duration::hours(12));
    let renewed = pki.leaf_until(&names, start + day * 90);
    let old = tls_server(&expiring, Alpn::H2AndHttp11, Behaviour::ok()).await;
    let new = tls_server(&renewed, Alpn::H2AndHttp11, Behaviour::ok()).await;
    // (days after the start, the server presenting the certificate)
    let runs = [
        (0, &old),
        (0, &old),
        (7, &old),
        (7, &old),
        (11, &old),
        (11, &old),
        (12, &new),
        (12, &new),
    ];
    let mut store: Option<SqliteStore> = None;
    let mut sent = Vec::new();
    for (i, (days, server)) in runs.iter().enumerate() {
        let address = server.addr;
        let sites = format!(
            "  - {{ name: shop, url: \"https://probe.test/\", edge: \"{address}\", origins: [\"{address}\"] }}"
        );
        let config = write_config(
            dir.path(),
            &pki.ca_path,
            &sites,
            "  confirm_retries: 0",
            smtp.port,
            "PROBE_TEST_SMTP_PASSWORD_JUDGE_CERT",
        );
        let store = store
            .get_or_insert_with(|| SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap());
        let at = start + day * *days + time::Duration::minutes(i as i64);
        let pass = run_once(&config, store, at).await.unwrap();
        sent.push(pass.mails_sent);
    }
    assert_eq!(sent, [1, 0, 1, 0, 1, 0, 1, 0]);
    let subjects = smtp.subjects();
    assert_eq!(subjects.len(), 4, "{subjects:#?}");
    for (subject, days) in subjects.iter().zip([13, 6, 2]) {
        assert!(
            subject.starts_with("[WARNING] shop: certificate ")
                && subject.ends_with(&format!(" expires in {days} days (edge and origin route)")),
            "{subject}"
        );
    }
    // A renewal is good news, not a warning.
    assert!(
        subjects[3].starts_with("[RENEWED] shop: certificate ")
            && subjects[3].ends_with(" renewed (edge and origin route)"),
        "{}",
        subjects[3]
    );
    let first = &smtp.messages()[0];
    assert!(first.contains("(the notice at 14 days)"), "{first}");
    assert!(first.contains("issuer: "), "{first}");
    assert!(first.contains("certbot renew"), "{first}");
    let last = &smtp.messages()[3];
    assert!(last.contains("replaced by: "), "{last}");
}

/// Ten sites of one recipient and one of another on one origin whose PHP-FPM stops: the first
/// recipient gets one mail listing the ten, the other their own site's mail; a site failing
/// there a run later is one "also affected" mail; the recovery of all is one mail each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_failing_on_one_origin_are_told_as_one_incident() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_GROUP", PASSWORD);
    let mut lab = Lab::start(&OriginSettings::default());
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    let address = lab.origin.address();
    let site = |name: &str, to: &str| {
        format!(
            "  - {{ name: {name}, url: \"https://probe.test/index.php?site={name}\", edge: \"{address}\", origins: [\"{address}\"], static_path: {STATIC_PATH}, alert_to: [{to}] }}\n"
        )
    };
    let mut sites: String = (1..=10)
        .map(|n| site(&format!("shop{n:02}"), "ops@example.com"))
        .collect();
    sites.push_str(&site("solo", "dev@example.com"));
    let config = |sites: &str| {
        write_config(
            lab.dir.path(),
            &lab.pki.ca_path,
            sites.trim_end(),
            "  confirm_retries: 0",
            server.port,
            "PROBE_TEST_SMTP_PASSWORD_JUDGE_GROUP",
        )
    };
    let first = config(&sites);
    let mut store = SqliteStore::open(first.store.sqlite_path().unwrap()).unwrap();
    run_once(&first, &mut store, minute(0)).await.unwrap();
    lab.origin.fpm.stop();
    run_once(&first, &mut store, minute(1)).await.unwrap();

    let ops = server.messages_for("ops@example.com");
    assert_eq!(ops.len(), 1, "one mail for the ten");
    let subject = support::smtp::subject(&ops[0]);
    assert_eq!(
        subject,
        "[DOWN] 10 sites on 127.0.0.1: the web server cannot reach PHP-FPM"
    );
    let text = support::smtp::decoded(&ops[0]);
    for n in 1..=10 {
        let line = format!(
            "  shop{n:02} https://probe.test/index.php?site=shop{n:02} (fpm_unreachable), failing since "
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(
        text.contains("10 sites on 127.0.0.1 are down together (incident #1)"),
        "{text}"
    );
    assert!(
        text.contains("The first of them, shop01, in full:"),
        "{text}"
    );
    let dev = server.messages_for("dev@example.com");
    assert_eq!(dev.len(), 1);
    assert!(
        support::smtp::subject(&dev[0]).starts_with("[DOWN] solo: "),
        "the other recipient's one site is its own mail: {}",
        dev[0]
    );

    // A site on that origin failing a run later joins the open incident.
    sites.push_str(&site("late", "ops@example.com"));
    let second = config(&sites);
    run_once(&second, &mut store, minute(2)).await.unwrap();
    let ops = server.messages_for("ops@example.com");
    assert_eq!(ops.len(), 2);
    assert_eq!(
        support::smtp::subject(&ops[1]),
        "[DOWN] also affected on 127.0.0.1: late (the web server cannot reach PHP-FPM)"
    );

    // PHP-FPM back: every site recovers after two healthy runs, one mail for all of them.
    lab.origin.fpm = support::php_fpm::PhpFpm::start(lab.dir.path(), &PoolSettings::default());
    // Its workers answer before the pass (a page caught mid-start is another story).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while probe::probe_site(&second.sites[0].probe)
        .await
        .unwrap()
        .status
        != probe::Status::Ok
    {
        assert!(
            std::time::Instant::now() < until,
            "PHP-FPM did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    run_once(&second, &mut store, minute(3)).await.unwrap();
    run_once(&second, &mut store, minute(4)).await.unwrap();
    let ops = server.messages_for("ops@example.com");
    let subjects: Vec<String> = ops.iter().map(|m| support::smtp::subject(m)).collect();
    assert_eq!(subjects.len(), 3, "{subjects:#?}");
    // From the first failing run to the first healthy one.
    assert_eq!(
        subjects[2],
        "[RECOVERED] 11 sites on 127.0.0.1 after 2 minutes"
    );
    let end = support::smtp::decoded(&ops[2]);
    assert!(
        end.contains("Incident #1's cause: the web server cannot reach PHP-FPM (fpm_unreachable)."),
        "{end}"
    );
    assert!(
        end.contains("Down from 2027-01-15 08:01:00 to 08:03:00 UTC: 2 minutes."),
        "{end}"
    );
    assert!(
        end.contains("  late https://probe.test/index.php?site=late: down from 2027-01-15 08:02:00 to 08:03:00 UTC (1 minute)"),
        "{end}"
    );
    // The group's later mails thread under its opening.
    let root = ops[0]
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap();
    for later in &ops[1..] {
        assert!(later.contains(&format!("In-Reply-To: {root}")), "{later}");
    }
    let dev: Vec<String> = server
        .messages_for("dev@example.com")
        .iter()
        .map(|m| support::smtp::subject(m))
        .collect();
    assert_eq!(dev.len(), 2, "{dev:#?}");
    assert!(dev[1].starts_with("[RECOVERED] solo after "), "{}", dev[1]);
    // Each site's incident is recorded, all with the shared incident's one number.
    let incidents = store.incidents(minute(0)).unwrap();
    assert_eq!(incidents.len(), 12);
    assert!(incidents.iter().all(|i| i.closed_at.is_some()));
    assert!(incidents.iter().all(|i| i.number == 1), "{incidents:#?}");
}

/// Five sites behind one edge that fails on its own (its own 502, whatever the origin does):
/// one mail for the five, naming the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_behind_a_failing_edge_are_told_as_one_incident() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_EDGE", PASSWORD);
    let lab = support::lab::EdgeLab::start_custom(&OriginSettings::default(), None, |edge| {
        edge.fails_itself = true;
    })
    .await;
    let server = SmtpServer::start(lab.lab.dir.path(), &lab.lab.pki, None);
    let (edge, origin) = (lab.edge.addr, lab.lab.origin.address());
    let sites: Vec<String> = (1..=5)
        .map(|n| {
            format!(
                "  - {{ name: blog{n}, url: \"https://probe.test/?blog={n}\", edge: \"{edge}\", origins: [\"{origin}\"], cloudflare_edge: true }}"
            )
        })
        .collect();
    let config = write_config(
        lab.lab.dir.path(),
        &lab.lab.pki.ca_path,
        &sites.join("\n"),
        "  confirm_retries: 0",
        server.port,
        "PROBE_TEST_SMTP_PASSWORD_JUDGE_EDGE",
    );
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    run_once(&config, &mut store, minute(0)).await.unwrap();
    let subjects = server.subjects();
    assert_eq!(subjects.len(), 1, "{subjects:#?}");
    assert!(
        subjects[0].starts_with("[DOWN] 5 sites behind the edge (")
            && subjects[0].ends_with("): the edge itself failed"),
        "{}",
        subjects[0]
    );
    let text = support::smtp::decoded(&server.messages()[0]);
    for n in 1..=5 {
        assert!(
            text.contains(&format!(
                "  blog{n} https://probe.test/?blog={n} (edge_internal), failing since "
            )),
            "{text}"
        );
    }
}

/// The origin refusing connections while the edge still serves (here the edge route reaches a
/// working server): a warning, confirmed over three runs, naming the hop; the status page shows
/// degraded performance, not an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_failing_behind_a_serving_edge_is_one_warning() {
    let _serial = ONE_AT_A_TIME.lock().await;
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_JUDGE_WARN", PASSWORD);
    let lab = Lab::start(&OriginSettings::default());
    let server = SmtpServer::start(lab.dir.path(), &lab.pki, None);
    let (edge, refused) = (lab.origin.address(), support::servers::refused_port());
    let site = |origin: &str| {
        format!(
            "  - {{ name: shop, url: \"https://probe.test/\", edge: \"{edge}\", origins: [\"{origin}\"], static_path: {STATIC_PATH} }}"
        )
    };
    let config = |origin: &str| {
        lab_config(
            &lab,
            &server,
            &site(origin),
            "  confirm_retries: 0",
            "PROBE_TEST_SMTP_PASSWORD_JUDGE_WARN",
        )
    };
    // Healthy for a while first: the failures that follow are steady, not now and then.
    let healthy = config(&edge);
    let mut store = SqliteStore::open(healthy.store.sqlite_path().unwrap()).unwrap();
    for m in 0..5 {
        let pass = run_once(&healthy, &mut store, minute(m)).await.unwrap();
        assert_eq!(pass.worst(), probe::Status::Ok);
    }
    let config = config(&refused.to_string());
    let mut sent = Vec::new();
    for m in 5..30 {
        let pass = run_once(&config, &mut store, minute(m)).await.unwrap();
        assert_eq!(pass.worst(), probe::Status::Degraded);
        sent.push(pass.mails_sent);
    }
    let mut expected = vec![0; 25];
    expected[2] = 1;
    assert_eq!(
        sent, expected,
        "confirmed over 3 runs, once; no intermittent incident"
    );
    assert_eq!(
        server.subjects(),
        ["[WARNING] shop: the origin refuses connections (origin_refused)"]
    );
    let text = support::smtp::decoded(&server.messages()[0]);
    assert!(
        text.contains("Visitors are still served through the edge (cached pages, or another origin); behind it: the origin refuses connections"),
        "{text}"
    );
    let files =
        probe::feeds::render_all(&probe::feeds::snapshot(&config, &store, minute(29)).unwrap());
    let status = files.iter().find(|f| f.path == "status.json").unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(status["components"][0]["status"], "degraded_performance");
    assert_eq!(status["incidents"][0]["probe"]["severity"], "warning");
}
