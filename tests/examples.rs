//! What ships beside the binary for where operators already are: the Prometheus alerting rules
//! (checked and unit-tested by promtool), the Grafana dashboard (every query names metrics probe
//! really writes), the systemd units (`systemd-analyze verify`) and the Dockerfile (every file
//! the build reads is copied into its build stage).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use probe::feeds;
use probe::schedule::run;
use probe::store::SqliteStore;
use support::{fixture, minute, require_program};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().expect("the tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?}: {text}");
    text
}

/// A real exposition: one site, the recorded reports `names` one a minute, in a store of its
/// own.
fn exposition(names: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        "sites:\n  - name: shop\n    url: https://probe.test/\n    origins: [127.0.0.1]\nstore:\n  path: probe.sqlite\n",
    )
    .unwrap();
    let config = probe::config::load(&path).unwrap().config;
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    for (m, name) in names.iter().enumerate() {
        let report = fixture(name);
        let at = minute(m as i64);
        run::record_site(&config, &mut store, &config.sites[0], &report, false, at).unwrap();
    }
    let files = feeds::render_all(&feeds::snapshot(&config, &store, minute(9)).unwrap());
    let metrics = files.iter().find(|f| f.path == "metrics").unwrap();
    String::from_utf8_lossy(&metrics.body).into_owned()
}

/// The metric families probe writes: a site down, then up.
fn metric_families() -> BTreeSet<String> {
    exposition(&["edge_stale_fastcgi_socket", "edge_healthy"])
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The `probe_…` metric names a text mentions.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("probe_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let promtool = require_program("promtool (Debian's prometheus)", "/usr/bin/promtool");
    let dir = repo("examples/prometheus");
    let checked = run_ok(
        Command::new(&promtool)
            .args(["check", "rules", "rules.yml"])
            .current_dir(&dir),
    );
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = run_ok(
        Command::new(&promtool)
            .args(["test", "rules", "rules.test.yml"])
            .current_dir(&dir),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[test]
fn the_rules_and_the_dashboard_name_only_metrics_probe_writes() {
    let written = metric_families();
    assert!(written.contains("probe_diagnosis_info"), "{written:?}");
    let rules = std::fs::read_to_string(repo("examples/prometheus/rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(repo("examples/grafana/probe.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert_eq!(parsed["uid"], "probe-sites");
    let panels = parsed["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Status per site",
        "phases per route",
        "certificate",
        "Diagnosis over time",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "{wanted} missing: {titles:?}"
        );
    }
    let queries: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n");
    for (what, text) in [
        ("rules.yml", rules.as_str()),
        ("probe.json", queries.as_str()),
    ] {
        let used = names_in(text);
        assert!(!used.is_empty(), "{what} names no metric");
        let unknown: Vec<&String> = used.difference(&written).collect();
        assert!(
            unknown.is_empty(),
            "{what} names metrics probe never writes: {unknown:?}"
        );
    }
}

#[test]
fn the_systemd_units_verify() {
    let analyze = require_program(
        "systemd-analyze (Debian's systemd)",
        "/usr/bin/systemd-analyze",
    );
    let dir = tempfile::tempdir().unwrap();
    // Verified as installed: the binary where ExecStart names it, the units side by side.
    for unit in [
        "probe-run.service",
        "probe-run.timer",
        "probe-watch.service",
    ] {
        let text = std::fs::read_to_string(repo(&format!("deploy/systemd/{unit}"))).unwrap();
        let text = text.replace("/usr/local/bin/probe", env!("CARGO_BIN_EXE_probe"));
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let units: Vec<PathBuf> = [
        "probe-run.service",
        "probe-run.timer",
        "probe-watch.service",
    ]
    .iter()
    .map(|u| dir.path().join(u))
    .collect();
    let output = Command::new(analyze)
        .arg("verify")
        .args(&units)
        .env("SYSTEMD_LOG_LEVEL", "warning")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Lines about the units themselves; the host's own units may be noisy in a container.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("probe-")).collect();
    assert!(output.status.success() && ours.is_empty(), "{text}");
}

/// The files a `COPY` of the Dockerfile's build stage brings in.
fn build_stage_copies(dockerfile: &str) -> Vec<String> {
    let stage: String = dockerfile
        .split("\nFROM ")
        .find(|stage| {
            stage
                .lines()
                .next()
                .unwrap_or_default()
                .ends_with(" AS build")
        })
        .expect("a build stage")
        .to_string();
    stage
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|p| p.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_dockerfile_copies_everything_the_build_reads() {
    let dockerfile = std::fs::read_to_string(repo("Dockerfile")).unwrap();
    let copied = build_stage_copies(&dockerfile);
    let is_copied = |path: &str| {
        copied
            .iter()
            .any(|c| path == c || path.starts_with(&format!("{c}/")))
    };
    // What cargo reads: the manifest, the lock, the sources, and every file the sources
    // include at compile time (include_str!/include_bytes!).
    let mut needed: BTreeSet<String> = ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"]
        .map(String::from)
        .into();
    for file in support::walk(&repo("src")) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for macro_name in ["include_str!(", "include_bytes!("] {
            let mut rest = text.as_str();
            while let Some(at) = rest.find(macro_name) {
                rest = &rest[at + macro_name.len()..];
                let Some(start) = rest.find('"') else { break };
                let Some(len) = rest[start + 1..].find('"') else {
                    break;
                };
                let literal = &rest[start + 1..start + 1 + len];
                let joined = file.parent().unwrap().join(literal);
                let resolved = normalize(&joined);
                let relative = resolved
                    .strip_prefix(repo(""))
                    .unwrap_or(&resolved)
                    .display()
                    .to_string();
                needed.insert(relative);
            }
        }
    }
    let build_rs = repo("build.rs");
    if build_rs.exists() {
        needed.insert("build.rs".into());
    }
    let missing: Vec<&String> = needed.iter().filter(|n| !is_copied(n)).collect();
    assert!(
        missing.is_empty(),
        "the build stage does not copy {missing:?} (copies {copied:?})"
    );
    // Each copied path exists (a COPY of nothing fails the build).
    for c in &copied {
        assert!(
            repo(c).exists(),
            "the Dockerfile copies {c}, which does not exist"
        );
    }
    // The runtime stage ships the example config it names.
    assert!(dockerfile.contains("COPY probes.yaml /etc/probe/probes.yaml"));
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_kubernetes_manifests_validate_and_carry_a_working_config() {
    let tool = repo("target/test-tools/venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "kubernetes-validate is missing: run ./scripts/install-test-deps.sh"
    );
    let dir = repo("deploy/kubernetes");
    let manifests = [
        "configmap.yaml",
        "secret.yaml",
        "pvc.yaml",
        "deployment.yaml",
        "service.yaml",
        "cronjob.yaml",
    ];
    // Strict: a misspelt or misplaced field fails, against a Kubernetes still supported.
    let checked = run_ok(
        Command::new(&tool)
            .args(["--strict", "-k", "1.29.0"])
            .args(manifests)
            .current_dir(&dir),
    );
    assert_eq!(
        checked.matches(" passed for resource ").count(),
        manifests.len(),
        "{checked}"
    );
    // kustomization.yaml lists files that exist.
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    for line in kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
    {
        assert!(dir.join(line).exists(), "kustomization.yaml lists {line}");
    }
    // The ConfigMap's probes.yaml is a config probe accepts, its store on the volume.
    let configmap = std::fs::read_to_string(dir.join("configmap.yaml")).unwrap();
    let embedded: String = configmap
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("probes.yaml: |"))
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let loaded = probe::config::parse("probes.yaml", &embedded, Path::new("/etc/probe"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.config.store.sqlite_path().unwrap(),
        Path::new("/var/lib/probe/probe.sqlite")
    );
    // The variables it names are the Secret's keys.
    let secret = std::fs::read_to_string(dir.join("secret.yaml")).unwrap();
    for var in ["SMTP_PASSWORD", "SLACK_URL"] {
        assert!(
            embedded.contains(var) && secret.contains(&format!("{var}:")),
            "{var}"
        );
    }
}

/// The sample lines of `family` in an exposition.
fn samples<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .collect()
}

#[test]
fn the_blackbox_names_are_written_with_their_label_sets() {
    let healthy = exposition(&["edge_healthy"]);
    // promtool takes the whole exposition.
    support::assert_promtool_accepts(&healthy);
    let origin = |family: &str| -> String {
        samples(&healthy, family)
            .into_iter()
            .find(|l| l.contains("route=\"origin\""))
            .unwrap_or_else(|| panic!("no origin sample of {family}:\n{healthy}"))
            .to_string()
    };
    assert!(
        origin("probe_http_version").ends_with(" 2"),
        "{}",
        origin("probe_http_version")
    );
    assert!(origin("probe_http_ssl").ends_with(" 1"));
    assert!(origin("probe_http_redirects").ends_with(" 0"));
    assert!(origin("probe_ip_protocol").ends_with(" 4"));
    let hash = origin("probe_ip_addr_hash");
    assert!(
        hash.rsplit(' ').next().unwrap().parse::<u64>().is_ok(),
        "{hash}"
    );
    assert!(origin("probe_tls_version_info").contains("version=\"TLS 1.3\""));
    assert!(
        origin("probe_tls_cipher_info").contains("cipher=\"TLS_"),
        "{}",
        origin("probe_tls_cipher_info")
    );
    let chain = origin("probe_ssl_last_chain_info");
    for label in [
        "fingerprint_sha256=\"",
        "subject=\"CN=probe.test\"",
        "issuer=\"CN=probe test CA\"",
        "subjectalternative=\"probe.test\"",
        "serialnumber=\"",
    ] {
        assert!(chain.contains(label), "{label} in {chain}");
    }
    assert!(samples(&healthy, "probe_ssl_last_chain_expiry_timestamp_seconds").len() >= 2);
    // Nothing failed: no failure series.
    assert!(
        samples(&healthy, "probe_failure_info").is_empty(),
        "{healthy}"
    );

    // A 502 on both routes: the reason, per route.
    let failing = exposition(&["edge_stale_fastcgi_socket"]);
    let reasons = samples(&failing, "probe_failure_info");
    assert!(
        reasons
            .iter()
            .any(|l| l.contains("route=\"origin\"") && l.contains("reason=\"status_502\"")),
        "{reasons:#?}"
    );
}

/// The code block after `marker` in README.md, without its fences.
fn readme_block(readme: &str, marker: &str) -> String {
    let after = &readme[readme
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in README"))..];
    let start = after.find("```").unwrap();
    let body = &after[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").unwrap()].to_string()
}

/// README's first ten minutes show a minimal probes.yaml and what `probe check-config` says of
/// it: exactly what it says.
#[test]
fn the_readmes_minimal_config_is_explained_as_the_readme_shows() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let yaml = readme_block(&readme, "<!-- the minimal probes.yaml");
    let shown = readme_block(&readme, "<!-- its check-config -->");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probes.yaml"), yaml).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["check-config", "-c", "probes.yaml"])
        .current_dir(dir.path())
        .env_remove("SMTP_PASSWORD")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), shown);
}

/// The world README's first ten minutes start for trying probe: it starts, probe's run over it
/// is healthy and sends nothing, and PHP-FPM stopped is one mail in its mailbox naming both
/// sites; then it stops.
#[test]
fn the_try_it_locally_world_starts_and_tells_a_stopped_php_fpm() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("world");
    let script = repo("scripts/try-locally.sh");
    let (nginx, smtp) = (support::free_tcp_port(), support::free_tcp_port());
    let started = run_ok(
        Command::new(&script)
            .arg("start")
            .arg(&world)
            .env("TRY_LOCALLY_NGINX_PORT", nginx.to_string())
            .env("TRY_LOCALLY_SMTP_PORT", smtp.to_string()),
    );
    struct Stop(PathBuf, PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new(&self.0).arg("stop").arg(&self.1).output();
        }
    }
    let _stop = Stop(script.clone(), world.clone());
    assert!(started.contains("A WordPress world runs in"), "{started}");
    let config = world.join("probes.yaml");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_probe"))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap()
    };
    let healthy = run();
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&healthy.stdout)
    );
    let pid = std::fs::read_to_string(world.join("php-fpm.pid")).unwrap();
    run_ok(Command::new("kill").arg(pid.trim()));
    let mut mails = Vec::new();
    for _ in 0..4 {
        let down = run();
        assert_eq!(down.status.code(), Some(2), "{down:?}");
        mails = std::fs::read_dir(world.join("mail/new"))
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        if !mails.is_empty() {
            break;
        }
    }
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert_eq!(
        support::smtp::subject(&mails[0]),
        "[DOWN] 2 sites on 127.0.0.1: the web server cannot reach PHP-FPM",
        "{}",
        mails[0]
    );
}
