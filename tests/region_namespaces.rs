//! Three regions for real: each a network namespace made here, its `probe watch` started inside
//! it with `ip netns exec`, reaching the sites (and the SMTP server) through its own veth pair
//! on a bridge, and the shared PostgreSQL 15 through its unix socket (the file system is
//! shared). Cutting one namespace's link is a real regional outage; stopping the site is the
//! origin broken for everyone.
//!
//! With `quorum: 2`: one region cut → no incident, the feeds call it regional; the origin broken
//! → exactly one incident and one mail, listing the three regions; the origin back → one
//! recovery mail. Three probers deliver from one outbox: each mail goes out once.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use probe::store::PostgresStore;
use support::pki::TempPki;
use support::postgres::Postgres;
use support::smtp::{SmtpOptions, SmtpServer, PASSWORD, USER};
use support::{wait_until, Killed};

const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The bridge, the namespaces and their links; removed when dropped.
struct Network {
    bridge: String,
    /// The bridge's address: where the site and the SMTP server listen.
    host: String,
    namespaces: Vec<String>,
    /// The host end of each namespace's veth pair (set down to cut the region off).
    links: Vec<String>,
}

impl Network {
    fn new() -> Network {
        let id = std::process::id();
        let subnet = format!("10.231.{}", id % 250);
        let mut network = Network {
            bridge: format!("pbr{id}"),
            host: format!("{subnet}.1"),
            namespaces: Vec::new(),
            links: Vec::new(),
        };
        ip(&["link", "add", &network.bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{subnet}.1/24"),
            "dev",
            &network.bridge,
        ]);
        ip(&["link", "set", &network.bridge, "up"]);
        for (i, region) in REGIONS.iter().enumerate() {
            let namespace = format!("probe-{id}-{region}");
            let (outside, inside) = (format!("pv{id}{i}"), format!("pw{id}{i}"));
            ip(&["netns", "add", &namespace]);
            network.namespaces.push(namespace.clone());
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ]);
            network.links.push(outside.clone());
            ip(&["link", "set", &inside, "netns", &namespace]);
            ip(&["link", "set", &outside, "master", &network.bridge, "up"]);
            let address = format!("{subnet}.{}/24", 10 + i);
            let within = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &namespace, "ip"];
                all.extend_from_slice(args);
                ip(&all);
            };
            within(&["addr", "add", &address, "dev", &inside]);
            within(&["link", "set", &inside, "up"]);
            within(&["link", "set", "lo", "up"]);
        }
        network
    }

    fn cut(&self, region: usize) {
        ip(&["link", "set", &self.links[region], "down"]);
    }

    fn restore(&self, region: usize) {
        ip(&["link", "set", &self.links[region], "up"]);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// Python's http.server on the bridge: the site every region probes.
fn site(host: &str, port: u16, dir: &std::path::Path) -> Killed {
    let server = Killed(
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", host])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the site listens", Duration::from_secs(20), || {
        std::net::TcpStream::connect((host, port)).is_ok()
    });
    server
}

#[test]
fn three_regions_in_namespaces_agree_before_anyone_is_mailed() {
    let pki = TempPki::new();
    let dir = pki.dir().to_path_buf();
    let db = Postgres::start(&dir);
    let network = Network::new();
    let smtp = SmtpServer::start_with(
        &dir.join("smtp"),
        &pki.pki,
        None,
        &SmtpOptions {
            host: Some(network.host.clone()),
            ..SmtpOptions::default()
        },
    );
    let site_dir = dir.join("site");
    std::fs::create_dir_all(&site_dir).unwrap();
    std::fs::write(site_dir.join("index.html"), "hello").unwrap();
    let port = support::free_tcp_port();
    let mut server = Some(site(&network.host, port, &site_dir));
    let config = dir.join("probes.yaml");
    let host = &network.host;
    std::fs::write(
        &config,
        format!(
            "defaults:\n  interval: 1s\n  timeout: 900ms\nsites:\n  - {{ name: shop, url: \"http://{host}:{port}/\" }}\n\
             alerts:\n  to: [ops@example.com]\n  confirm_retries: 0\n  confirm_runs: 2\n  recover_runs: 2\n  quorum: 2\n\
             smtp:\n  host: {host}\n  port: {}\n  security: starttls\n  username: {USER}\n  password_env: PROBE_TEST_NETNS_SMTP\n  from: \"probe <probe@example.com>\"\n  ca_file: {}\n  timeout: 5s\n\
             store:\n  url_env: PROBE_DATABASE_URL\n",
            smtp.port, pki.ca
        ),
    )
    .unwrap();
    let watches: Vec<Killed> = REGIONS
        .iter()
        .zip(&network.namespaces)
        .map(|(region, namespace)| {
            let log = std::fs::File::create(dir.join(format!("{region}.log"))).unwrap();
            Killed(
                Command::new("ip")
                    .args(["netns", "exec", namespace])
                    .arg(env!("CARGO_BIN_EXE_probe"))
                    .args(["watch", "--region", region, "-c"])
                    .arg(&config)
                    .env("PROBE_DATABASE_URL", db.socket_url())
                    .env("PROBE_TEST_NETNS_SMTP", PASSWORD)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let logs = || {
        REGIONS
            .iter()
            .map(|r| std::fs::read_to_string(dir.join(format!("{r}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    };
    wait_until("the store made", Duration::from_secs(30), || {
        db.count("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'probe' AND tablename = 'region_state'") == 1
    });
    let region_count = |region: &str| {
        db.count(&format!(
            "SELECT COUNT(*) FROM probe.results WHERE region = '{region}'"
        ))
    };
    wait_until("every region reports", Duration::from_secs(30), || {
        REGIONS.iter().all(|r| region_count(r) >= 3)
    });
    let phase = |region: &str| {
        db.sql(
            "probe",
            &format!("SELECT state::json->>'phase' FROM probe.region_state WHERE site = 'shop' AND region = '{region}'"),
        )
        .trim()
        .to_string()
    };

    // eu-west loses its route: it confirms the site down on its own; nobody is mailed, and the
    // feeds call it regional.
    network.cut(0);
    wait_until("eu-west confirms it down", Duration::from_secs(20), || {
        phase("eu-west") == "down"
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(phase("us-east"), "ok");
    assert!(
        smtp.messages().is_empty(),
        "a regional failure mails nobody"
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM probe.outbox"), 0);
    let loaded = {
        let mut loaded = probe::config::load(&config).unwrap();
        loaded.config.store = probe::config::StoreLocation::Sqlite("unused".into());
        loaded.config
    };
    let reader = PostgresStore::open(&db.socket_url()).unwrap();
    let snapshot =
        probe::feeds::snapshot(&loaded, &reader, time::OffsetDateTime::now_utc()).unwrap();
    let files = probe::feeds::render_all(&snapshot);
    let status = &files.iter().find(|f| f.path == "status.json").unwrap().body;
    let status: serde_json::Value = serde_json::from_slice(status).unwrap();
    let summary = status["components"][0]["probe"]["diagnosis"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        summary.starts_with("regional: fails from eu-west while"),
        "{summary}"
    );
    drop(reader);

    // Its route back, it recovers on its own.
    network.restore(0);
    wait_until("eu-west sees it again", Duration::from_secs(30), || {
        phase("eu-west") == "ok"
    });

    // The origin breaks for everyone: one incident, one mail with the three regions.
    drop(server.take());
    wait_until("the alert", Duration::from_secs(30), || {
        !smtp.messages_for("ops@example.com").is_empty()
    });
    std::thread::sleep(Duration::from_secs(4));
    let mails = smtp.messages_for("ops@example.com");
    assert_eq!(
        mails.len(),
        1,
        "one mail, whichever region decided it\n{}",
        logs()
    );
    // Quoted-printable soft line breaks joined, so lines read as written.
    let mail = mails[0].replace("=\r\n", "").replace("=\n", "");
    for region in REGIONS {
        assert!(mail.contains(&format!("region {region}: down")), "{mail}");
    }
    assert_eq!(db.count("SELECT COUNT(*) FROM probe.incidents"), 1);

    // The origin back: one recovery mail.
    server = Some(site(&network.host, port, &site_dir));
    wait_until("the recovery", Duration::from_secs(30), || {
        smtp.messages_for("ops@example.com").len() >= 2
    });
    std::thread::sleep(Duration::from_secs(4));
    let mails = smtp.messages_for("ops@example.com");
    assert_eq!(mails.len(), 2, "{}", logs());
    assert!(
        mails[1].contains("Subject: [RECOVERED]") || mails[1].contains("recovered"),
        "{}",
        mails[1]
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM probe.incidents WHERE closed_at IS NOT NULL"),
        1
    );
    assert!(!logs().contains(PASSWORD));
    drop(watches);
    drop(server);
}
