//! probes.yaml: the shipped example is valid, every broken file is rejected with file:line:column
//! and the field's path, all semantic problems come out at once, and the committed JSON Schema is
//! the one the types generate.

use std::path::{Path, PathBuf};
use std::process::Command;

use probe::config::{self, ConfigError};

fn shipped() -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("probes.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, text)
}

fn problems(text: &str) -> Vec<String> {
    match config::parse("probes.yaml", text, Path::new(".")) {
        Ok(_) => vec![],
        Err(ConfigError::Invalid { .. }) => {
            let e = config::parse("probes.yaml", text, Path::new(".")).unwrap_err();
            e.to_string().lines().map(str::to_string).collect()
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_shipped_example_is_valid() {
    let (path, _) = shipped();
    let loaded = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    assert_eq!(c.sites.len(), 2);
    assert_eq!(c.sites[0].name, "example.com");
    assert_eq!(c.sites[0].probe.origins[0].to_string(), "203.0.113.10:443");
    assert_eq!(c.sites[1].name, "shop");
    assert_eq!(c.sites[1].probe.origins[0].to_string(), "203.0.113.20:8443");
    assert_eq!(c.sites[1].interval.as_secs(), 30);
    assert_eq!(
        *c.sites[1].alert_to,
        ["shop-oncall@example.com".to_string()]
    );
    assert_eq!(*c.sites[0].alert_to, ["ops@example.com".to_string()]);
    let smtp = c.smtp.as_ref().unwrap();
    assert_eq!(
        (smtp.port, smtp.password_env.as_deref()),
        (587, Some("SMTP_PASSWORD"))
    );
    assert_eq!(c.maintenance.len(), 1);
    assert_eq!(c.control_checks.len(), 2);
}

/// Every mapping of the shipped example (each section, each site, each nested block), with one
/// unknown key added to it in the parsed document: rejected, naming the key, its line and column
/// and the mapping's path. The document is written back as JSON (YAML's subset), one key a line.
#[test]
fn an_unknown_key_anywhere_in_the_shipped_example_is_rejected() {
    let (_, text) = shipped();
    let document: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut mappings = Vec::new();
    mapping_paths(&document, String::new(), &mut mappings);
    assert!(mappings.len() >= 9, "mappings found: {mappings:?}");
    for (pointer, path) in &mappings {
        let mut broken = document.clone();
        broken
            .pointer_mut(pointer)
            .and_then(serde_json::Value::as_object_mut)
            .expect("a mapping")
            .insert("colour".into(), "blue".into());
        let written = serde_json::to_string_pretty(&broken).unwrap();
        let (line, column) = written
            .lines()
            .enumerate()
            .find_map(|(n, l)| l.find("\"colour\"").map(|c| (n + 1, c + 1)))
            .unwrap();
        let got = problems(&written);
        assert_eq!(got.len(), 1, "{path}: {got:?}");
        let field = if path.is_empty() {
            "colour".to_string()
        } else {
            format!("{path}.colour")
        };
        assert!(
            got[0].starts_with(&format!("probes.yaml:{line}:{column}: {field}: ")),
            "{path}: {}",
            got[0]
        );
        assert!(got[0].contains("unknown field `colour`"), "{}", got[0]);
    }
}

/// The JSON pointer and the config path (`sites[1].alert_to`) of every mapping in `value`.
fn mapping_paths(value: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
    let pointer = |path: &str| {
        let mut p = String::new();
        for part in path.split(['.', '[']).filter(|s| !s.is_empty()) {
            p.push('/');
            p.push_str(part.trim_end_matches(']'));
        }
        p
    };
    match value {
        serde_json::Value::Object(map) => {
            out.push((pointer(&path), path.clone()));
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                mapping_paths(child, child_path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                mapping_paths(child, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn broken_files_get_exact_messages() {
    let cases: &[(&str, &str)] = &[
        (
            "sites:\n  - url: example.com\n    origins: [203.0.113.10, db.internal]\n",
            "probes.yaml:3:29: sites[0].origins[1]: \"db.internal\" is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)",
        ),
        (
            "sites:\n  - url: not-a-url\n",
            "probes.yaml:2:10: sites[0].url: \"not-a-url\" is not a fully qualified host name; expected e.g. example.com or https://example.com/",
        ),
        (
            "sites:\n  - url: example.com\n    interval: soon\n",
            "probes.yaml:3:15: sites[0].interval: \"soon\" is not a duration (expected number at 0); write e.g. 30s, 5m, 1h",
        ),
        (
            "sites:\n  - url: example.com\n    url: example.org\n",
            "probes.yaml:3:5: sites[0].url: `url` is written twice here: keep one of them",
        ),
        (
            "sites:\n  - url: example.com\n    origin: [203.0.113.10]\n",
            "probes.yaml:3:5: sites[0].origin: unknown field `origin`: did you mean `origins`? (expected one of name, url, origins, edge, static_path, interval, timeout, resolver, cert_warning_days, samples, burst, expect_status, follow_redirects, redirect_hosts, cloudflare_edge, fpm_status, nginx_status, status_header, budget, alert_to)",
        ),
        (
            "sites:\n  - url: example.com\n    statc_path: /x.css\n",
            "probes.yaml:3:5: sites[0].statc_path: unknown field `statc_path`: did you mean `static_path`? (expected one of name, url, origins, edge, static_path, interval, timeout, resolver, cert_warning_days, samples, burst, expect_status, follow_redirects, redirect_hosts, cloudflare_edge, fpm_status, nginx_status, status_header, budget, alert_to)",
        ),
        (
            "sites:\n  - url: example.com\n   origins: [203.0.113.10]\n",
            "probes.yaml:3:4: sites: this line is out of place in a list — the indentation is likely off here: a list's entries start with `-` at one column, and the keys of one entry line up under its first key",
        ),
        (
            "sites: example.com\n",
            "probes.yaml:1:8: sites: expected a list (e.g. `sites:` with `  - url: example.com` on the line below), found the text \"example.com\"",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n  quorum: 0\n",
            "probes.yaml:4:11: alerts.quorum: must be at least 1 (the number of regions that confirm a site down)",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n  warning:\n    recover_runs: 0\n",
            "probes.yaml:5:19: alerts.warning.recover_runs: must be at least 1 run",
        ),
        (
            "sites:\n  - url: example.com\nstore:\n  url: postgresql://probe:hunter2@db.internal/probe\n",
            "probes.yaml:4:8: store.url: this URL holds a password: put the whole URL in an environment variable and name it with store.url_env (the password never goes in this file)",
        ),
        (
            "sites:\n  - url: example.com\n    budget: {ttfb: soon}\n",
            "probes.yaml:3:20: sites[0].budget.ttfb: \"soon\" is not a duration (expected number at 0); write e.g. 30s, 5m, 1h",
        ),
        (
            "defaults:\n  budget: {dns: 0s}\nsites:\n  - url: example.com\n",
            "probes.yaml:2:17: defaults.budget.dns: \"0s\": must be longer than zero",
        ),
        (
            "sites:\n  - url: example.com\n    budget: {ttbf: 2s}\n",
            "probes.yaml:3:14: sites[0].budget.ttbf: unknown field `ttbf`, expected one of dns, connect, tls, ttfb, total",
        ),
        (
            "sites:\n  - url: example.com\n    timeout: 2m\n",
            "probes.yaml:3:14: sites[0].timeout: the timeout (2 minutes) must be shorter than the interval (1 minute)",
        ),
        (
            "sites:\n  - url: example.com\nsmtp:\n  host: mail.example.com\n  from: probe@example.com\n  password_env: hunter2\n",
            "probes.yaml:6:17: smtp.password_env: this looks like a secret, not a variable name: name the environment variable that holds the password (e.g. SMTP_PASSWORD: A-Z, 0-9 and _); the password itself never goes in this file",
        ),
        (
            "sites:\n  - url: example.com\nsmtp:\n  host: mail.example.com\n  security: plain\n  username: probe\n  password_env: SMTP_PASSWORD\n  from: probe@example.com\n",
            "probes.yaml:7:17: smtp.password_env: security: plain would send the password unencrypted: use security: starttls (587) or tls (465), or, on a network you trust, set allow_plaintext_auth: true",
        ),
        (
            "sites:\n  - url: https://admin:hunter2@example.com/?token=abc\n",
            "probes.yaml:2:10: sites[0].url: \"https://example.com/?token=***\": carries a user name or password; probe does not send credentials from a URL: remove them (secrets come from the environment, never from probes.yaml or the command line)",
        ),
        (
            "sites:\n  - url: example.com\n    origins: [\"127.0.0.1:0\"]\n",
            "probes.yaml:3:15: sites[0].origins[0]: \"127.0.0.1:0\": port 0 is not a port a server can listen on",
        ),
        (
            "sites:\n  - url: example.com\n    static_path: \"/a\\x1bb.css\"\n",
            "probes.yaml:3:18: sites[0].static_path: \"/a\\u{1b}b.css\": holds a space or a control character; percent-encode it (%20)",
        ),
        (
            "sites:\n  - name: \"shop\\neu\"\n    url: example.com\n",
            "probes.yaml:2:11: sites[0].name: \"shop\\neu\": a site name is 1 to 100 characters: letters, digits, spaces and punctuation, with no control or invisible formatting characters, not starting with '@' or a space",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n  to: [\"ops@example.com, dev@example.com\"]\n",
            "probes.yaml:4:8: alerts.to[0]: \"ops@example.com, dev@example.com\" holds several addresses; give each its own list entry",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n  to: [\"ops@@x.example\"]\n",
            "probes.yaml:4:8: alerts.to[0]: \"ops@@x.example\" is not a mail address: it has 2 @ signs; an address has one, between the mailbox and the domain; write e.g. ops@example.com or \"Ops <ops@example.com>\"",
        ),
        (
            "sites:\n  - url: example.com\nsmtp:\n  host: mail.example.com\n  from: \"probe <probe@example.com\"\n",
            "probes.yaml:5:9: smtp.from: \"probe <probe@example.com\" is not a mail address: an angle bracket is not closed (a name goes with an address as \"Ops <ops@example.com>\"); write e.g. ops@example.com or \"Ops <ops@example.com>\"",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n  to: [\"Ops\\e[2J <ops@example.com>\"]\n",
            "probes.yaml:4:8: alerts.to[0]: \"Ops\\u{1b}[2J <ops@example.com>\" holds a control or invisible character; it would go into a mail header",
        ),
        (
            "sites:\n  - url: example.com\nwebhooks:\n  - url: htps://hooks.slack.com/services/T0/B0/XOXSECRET\n",
            "probes.yaml:4:10: webhooks[0].url: not an http(s) URL with a host (the value is not repeated here: webhook URLs often hold a token)",
        ),
        (
            "sites:\n  - url: example.com\nmaintenance:\n  - sites: [shop]\n    start: 2026-12-01T02:00:00Z\n    end: 2026-12-01T01:00:00Z\n",
            "probes.yaml:4:13: maintenance[0].sites[0]: no site is named \"shop\"",
        ),
        ("sites: []\n", "probes.yaml:1:1: sites: no site to probe: add at least one under `sites:`"),
        (
            "sites:\n  - url: example.com\n    cert_warning_days: [14, 0]\n",
            "probes.yaml:3:24: sites[0].cert_warning_days: 0: a threshold is 1 to 400 days before expiry",
        ),
        (
            "defaults:\n  cert_warning_days: two weeks\nsites:\n  - url: example.com\n",
            "probes.yaml:2:3: defaults.cert_warning_days: expected a number of days or a list of them, e.g. [14, 7, 3, 1], found the text \"two weeks\"",
        ),
        (
            "sites:\n  - url: example.com\nfeeds:\n  timezone: Mars/Olympus\n",
            "probes.yaml:4:13: feeds.timezone: \"Mars/Olympus\" is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)",
        ),
        (
            "sites:\n  - url: example.com\n    burst: 6\n",
            "probes.yaml:3:12: sites[0].burst: 6: burst is 1 to 5",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n  intermittent:\n    window_runs: 10\n    min_failures: 11\n",
            "probes.yaml:6:19: alerts.intermittent.min_failures: must be 1 to window_runs (10)",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n  warning:\n    confirm: 2\n",
            "probes.yaml:5:5: alerts.warning.confirm: unknown field `confirm`, expected one of confirm_runs, recover_runs, remind_every",
        ),
        (
            "sites:\n  - url: example.com\n    fpm_status: /fpm-status\n",
            "probes.yaml:3:17: sites[0].fpm_status: needs an origin address: status pages are read on the origin route only (they must not be public)",
        ),
        (
            "sites:\n  - url: example.com\n    origins: [203.0.113.10]\n    nginx_status: nginx_status\n",
            "probes.yaml:4:19: sites[0].nginx_status: \"nginx_status\": must be a path starting with '/', e.g. /nginx_status",
        ),
        (
            "sites:\n  - url: example.com\n    origins: [203.0.113.10]\n    fpm_status: /fpm-status\n    status_header: {name: Host, value_env: FPM_STATUS_TOKEN}\n",
            "probes.yaml:5:27: sites[0].status_header.name: \"Host\": the request sets this header itself; name a header of your own (e.g. X-Status-Token)",
        ),
        (
            "sites:\n  - url: example.com\n    origins: [203.0.113.10]\n    fpm_status: /fpm-status\n    status_header: {name: X-Status-Token, value_env: hunter2}\n",
            "probes.yaml:5:54: sites[0].status_header.value_env: this looks like a secret, not a variable name: name the environment variable that holds the header value (e.g. FPM_STATUS_TOKEN: A-Z, 0-9 and _); the header value itself never goes in this file",
        ),
        (
            "sites:\n  - url: example.com\nnotify:\n  - {type: hipchat, url_env: X}\n",
            "probes.yaml:4:12: notify[0].type: \"hipchat\" is not a channel probe speaks: one of slack, teams, discord, telegram, ntfy, pagerduty, opsgenie",
        ),
        (
            "sites:\n  - url: example.com\nnotify:\n  - {type: slack, url: \"https://hooks.slack.com/services/T0/B0/XOXSECRET\"}\n",
            "probes.yaml:4:24: notify[0].url: a webhook URL holds its token: put it in an environment variable and name it with url_env (the value is not repeated here)",
        ),
        (
            "sites:\n  - url: example.com\nnotify:\n  - {type: telegram, token_env: TG_TOKEN}\n",
            "probes.yaml:4:12: notify[0].chat_id: a telegram channel needs chat_id: the chat the bot writes to (e.g. \"12345\" or \"@channel\")",
        ),
        (
            "sites:\n  - url: example.com\nnotify:\n  - {type: pagerduty, routing_key_env: PD_KEY, severity: [critical]}\n",
            "probes.yaml:4:59: notify[0].severity[0]: \"critical\": a severity is down, warning or intermittent",
        ),
        (
            "sites:\n  - url: example.com\nnotify:\n  - {type: opsgenie}\n",
            "probes.yaml:4:12: notify[0].api_key_env: this opsgenie channel needs api_key_env: the environment variable holding its API key",
        ),
        (
            "defaults:\n  resolver: dns.example\nsites:\n  - url: example.com\n  - url: example.org\n",
            "probes.yaml:2:13: defaults.resolver: \"dns.example\" is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)",
        ),
        (
            "sites:\n  - url: example.com\n    resolver: \"192.0.2.53:0\"\n",
            "probes.yaml:3:15: sites[0].resolver: \"192.0.2.53:0\": port 0 is not a port a server can listen on",
        ),
        (
            "sites:\n  - name: \"@prober\"\n    url: example.com\n",
            "probes.yaml:2:11: sites[0].name: \"@prober\": names starting with '@' are reserved for the prober itself",
        ),
    ];
    for (text, expected) in cases {
        let got = problems(text);
        let first = got.first().map(String::as_str).unwrap_or_default();
        assert_eq!(first, *expected, "{text}\n{got:#?}");
        assert!(
            !first.contains("hunter2") && !first.contains("XOXSECRET"),
            "a secret written into the file is never repeated: {first}"
        );
    }
}

#[test]
fn a_bad_default_is_reported_once_at_its_own_line_and_odd_units_say_how_they_were_read() {
    let got = problems(
        "defaults:\n  interval: 1m\n  timeout: soon\nsites:\n  - url: example.com\n  - url: example.org\n",
    );
    assert_eq!(
        got,
        ["probes.yaml:3:12: defaults.timeout: \"soon\" is not a duration (expected number at 0); write e.g. 30s, 5m, 1h"]
    );
    // A default every site inherits and checks: told once too.
    assert_eq!(
        problems("defaults:\n  expect_status: [999]\nsites:\n  - url: example.com\n  - url: example.org\n"),
        ["probes.yaml:2:19: defaults.expect_status[0]: 999 is not an HTTP status (100-599)"]
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        "defaults:\n  interval: 1 minute\n  timeout: 10 secs\nsites:\n  - url: example.com\n    origins: [203.0.113.10]\n    interval: 1M\n",
    )
    .unwrap();
    let loaded = probe::config::load(&path).unwrap();
    // "1 minute" is read as written: nothing to say about it.
    assert_eq!(
        loaded.warnings,
        [
            "defaults.timeout: \"10 secs\" read as 10 seconds",
            "sites[0].interval: \"1M\" read as 30 days 10 hours 33 minutes 36 seconds"
        ]
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = "sites:\n  - url: example.com\n    origins: [nope]\n    static_path: style.css\n  - url: example.com\nalerts:\n  to: [not-an-address]\n";
    let got = problems(text);
    let paths: Vec<&str> = got
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "sites[0].origins[0]",
            "sites[0].static_path",
            "sites[1].name",
            "alerts.to[0]"
        ],
        "{got:#?}"
    );
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/probes.schema.json"
    ))
    .unwrap();
    assert_eq!(
        committed,
        config::json_schema(),
        "regenerate: probe check-config --schema > schema/probes.schema.json"
    );
}

#[test]
fn check_config_exits_3_and_lists_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        "sites:\n  - url: example.com\n    origins: [nope]\n    interval: soon\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["check-config", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{}:3:15: sites[0].origins[0]:", path.display())),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{}:4:15: sites[0].interval:", path.display())),
        "{stderr}"
    );

    let (shipped, _) = shipped();
    let ok = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["check-config", "-c", shipped.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&ok.stdout).contains(": OK, 2 sites"));
}

#[test]
fn check_config_shows_every_effective_setting_in_words_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        "defaults:\n  budget: {ttfb: 3s, dns: 1s}\n  resolver: 192.0.2.53\nsites:\n  - url: example.com\n    edge: 198.51.100.7\n    origins: [203.0.113.10]\n    cert_warning_days: 10\n    burst: 2\n    cloudflare_edge: true\n    budget: {ttfb: 1500ms, total: 5s}\n  - url: example.org\n    origins: [203.0.113.11]\n    resolver: \"[2001:db8::53]:5353\"\nsmtp:\n  host: mail.example.com\n  security: tls\n  from: probe@example.com\nfeeds:\n  public: false\nalerts:\n  intermittent: {enabled: false}\n",
    )
    .unwrap();
    let run = |json: bool| {
        let mut args = vec!["check-config", "-c", path.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let out = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(false);
    for words in [
        "edge route dials 198.51.100.7:443 (not DNS)",
        "DNS asked of 192.0.2.53:53",
        "DNS asked of [2001:db8::53]:5353",
        "certificate notices at 10 days",
        "page 2 times at once",
        "edge declared Cloudflare",
        "smtp: mail.example.com:465 with TLS",
        "intermittent: off",
        "the operator's view",
        // Phase by phase: the site's own budget over the defaults'.
        "every 1 minute, timeout 10 seconds, budget dns 1 second, ttfb 1 second 500 milliseconds, total 5 seconds",
        "every 1 minute, timeout 10 seconds, budget dns 1 second, ttfb 3 seconds",
    ] {
        assert!(text.contains(words), "{words}:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    let site = &json["sites"][0];
    assert_eq!(site["edge"], "198.51.100.7:443");
    assert_eq!(site["resolver"], "192.0.2.53:53");
    assert_eq!(json["sites"][1]["resolver"], "[2001:db8::53]:5353");
    assert_eq!(site["cert_warning_days"], serde_json::json!([10]));
    assert_eq!(site["burst"], 2);
    assert_eq!(
        site["budget"],
        serde_json::json!({"dns_s": 1.0, "connect_s": null, "tls_s": null, "ttfb_s": 1.5, "total_s": 5.0})
    );
    assert_eq!(json["sites"][1]["budget"]["ttfb_s"], 3.0);
    assert_eq!(json["smtp"]["security"], "tls");
    assert_eq!(json["alerts"]["intermittent"]["enabled"], false);
    assert_eq!(json["feeds"]["public"], false);
}

/// A long site list loads: 100,000 sites, well past the parser's default budget (which stopped
/// at about 19,000 with "budget breached: Nodes").
#[test]
fn a_hundred_thousand_sites_load() {
    let mut text = String::from("defaults:\n  interval: 5m\nsites:\n");
    for i in 0..100_000 {
        text.push_str(&format!(
            "  - {{ name: site{i}, url: \"https://site{i}.example/\", origins: [\"203.0.113.{}\"] }}\n",
            i % 250 + 1
        ));
    }
    let loaded = config::parse("probes.yaml", &text, Path::new("."))
        .unwrap_or_else(|e| panic!("{}", e.to_string().lines().next().unwrap_or_default()));
    assert_eq!(loaded.config.sites.len(), 100_000);
    assert_eq!(loaded.config.sites[99_999].name, "site99999");
}

/// A login over an unencrypted connection is accepted only when the file says so, and then
/// check-config warns that the password crosses the network in the clear.
#[test]
fn plaintext_auth_is_allowed_only_explicitly_and_then_warned_about() {
    let text = "sites:\n  - url: example.com\nsmtp:\n  host: mail.example.com\n  security: plain\n  username: probe\n  password_env: SMTP_PASSWORD\n  allow_plaintext_auth: true\n  from: probe@example.com\n";
    let loaded = config::parse("probes.yaml", text, Path::new(".")).unwrap();
    assert!(loaded.config.smtp.as_ref().unwrap().allow_plaintext_auth);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("the SMTP password crosses the network unencrypted")),
        "{:?}",
        loaded.warnings
    );
}

/// check-config's explanation says counts and durations in words, singular or plural as they
/// are: "every 1 day", "1 retry", "30 days", never "1day", "1 retries" or "run(s)".
#[test]
fn the_explanation_says_counts_and_durations_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        "defaults:\n  interval: 1d\nsites:\n  - url: example.com\n    origins: [203.0.113.10]\n    follow_redirects: 1\n    cert_warning_days: 1\n  - url: example.org\n    origins: [203.0.113.11]\n    interval: 90s\n    timeout: 2500ms\nalerts:\n  to: [ops@example.com]\n  confirm_retries: 1\n  confirm_runs: 1\n  recover_runs: 1\n  remind_every: 1h30m\n  warning: {confirm_runs: 1, recover_runs: 1, remind_every: 1d}\n  intermittent: {window_runs: 2, min_failures: 1}\nsmtp:\n  host: mail.example.com\n  from: probe@example.com\nstore:\n  retention: 30d\nmaintenance:\n  - {start: 2026-12-01T02:00:00Z, end: 2026-12-01T03:00:00Z}\n",
    )
    .unwrap();
    let loaded = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let text = config::explain(&path, &loaded);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    let store = dir.path().join("probe.sqlite");
    assert_eq!(
        lines,
        [
            "  example.com  https://example.com/  origin 203.0.113.10:443  every 1 day, timeout 10 seconds, budget ttfb 2 seconds",
            "    follows up to 1 redirect · certificate notices at 1 day",
            "  example.org  https://example.org/  origin 203.0.113.11:443  every 1 minute 30 seconds, timeout 2 seconds 500 milliseconds, budget ttfb 2 seconds",
            "origins: at most 2 requests at once to each origin address, over every site and route (a status page read takes them all)",
            "alerts: to ops@example.com; a failure counts after 1 retry (5 seconds later) and 1 failing run; recovery after 1 healthy run; reminders every 1 hour 30 minutes",
            "warnings: after 1 degraded run, closed after 1 run without, reminders every 1 day; intermittent: 1 failure in 2 runs; shared failures: one incident for the sites that share one (one number, one message each time)",
            "smtp: mail.example.com:587 with STARTTLS, from probe@example.com",
            &format!("store: {}, results kept 30 days", store.display()),
            "maintenance: 1 window",
            "feeds: \"Status\", public (no server versions, addresses or commands on the page and status.json)",
        ],
        "{text}"
    );
    assert!(text.starts_with(&format!("{}: OK, 2 sites\n", path.display())));
}

/// The new user's file of issue 26: a type error in `alerts`, a misspelt key in a site, a bad
/// value and a type error in `smtp`, a bad address, keys written at the left margin, a store in
/// no directory. Every one is listed in one run, each with file:line:column, its field path,
/// plain words and what to write instead (it took five rounds of check-config).
#[test]
fn a_file_with_mistakes_in_every_section_lists_them_all_in_one_run() {
    let text = "\
sites:
  - url: example.com
    orgins: [203.0.113.10]
    static_path: style.css
  - url: example.org
    samples: many
alerts:
  to: ops@example.com
  confirm_runs: two
  timezone: Mars/Olympus
smtp:
  host: mail.example.com
  port: lots
  from: not an address
feeds:
title: Example status
maintenance:
  - sites: [example.net]
    start: 2026-12-01T02:00:00Z
    end: 2026-12-01T01:00:00Z
";
    assert_eq!(
        problems(text),
        [
            "probes.yaml:3:5: sites[0].orgins: unknown field `orgins`: did you mean `origins`? (expected one of name, url, origins, edge, static_path, interval, timeout, resolver, cert_warning_days, samples, burst, expect_status, follow_redirects, redirect_hosts, cloudflare_edge, fpm_status, nginx_status, status_header, budget, alert_to)",
            "probes.yaml:4:18: sites[0].static_path: \"style.css\": must be a path starting with '/', e.g. /wp-includes/css/dashicons.min.css",
            "probes.yaml:6:14: sites[1].samples: \"many\" is not a whole number (0 or more): write digits, e.g. 3",
            "probes.yaml:9:17: alerts.confirm_runs: \"two\" is not a whole number (0 or more): write digits, e.g. 3",
            "probes.yaml:10:13: alerts.timezone: \"Mars/Olympus\" is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)",
            "probes.yaml:13:9: smtp.port: \"lots\" is not a whole number from 0 to 65535: write digits, e.g. 587",
            "probes.yaml:14:9: smtp.from: \"not an address\" is not a mail address: it has no @ (an address is mailbox@domain); write e.g. ops@example.com or \"Ops <ops@example.com>\"",
            "probes.yaml:16:1: title: `title` is a key of `feeds:` (line 15), not of the top level: indent it under feeds:, two spaces in, like the section's other keys (`  title: …`)",
            "probes.yaml:18:13: maintenance[0].sites[0]: no site is named \"example.net\"",
            "probes.yaml:20:10: maintenance[0].end: must be after start",
        ]
    );
}

/// Several mistakes in one section, and in one site, are each told: the key that does not read
/// is left out and the rest read again. What follows from a key left out (its default read in
/// its place) is not told as a problem of its own.
#[test]
fn every_mistake_in_one_section_or_one_site_is_told() {
    let text = "sites:\n  - url: example.com\n    interval: 5s\n    timeout: [1]\n    colour: blue\n    origins: [db.internal]\nalerts:\n  confirm_runs: two\n  recover_runs: [2]\n  warning:\n    confirm: 2\n  to: [ops@@example]\n";
    assert_eq!(
        problems(text),
        [
            "probes.yaml:4:14: sites[0].timeout: expected one value (e.g. `timeout: 10s`), found a list",
            "probes.yaml:5:5: sites[0].colour: unknown field `colour`, expected one of name, url, origins, edge, static_path, interval, timeout, resolver, cert_warning_days, samples, burst, expect_status, follow_redirects, redirect_hosts, cloudflare_edge, fpm_status, nginx_status, status_header, budget, alert_to",
            "probes.yaml:6:15: sites[0].origins[0]: \"db.internal\" is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)",
            "probes.yaml:8:17: alerts.confirm_runs: \"two\" is not a whole number (0 or more): write digits, e.g. 3",
            "probes.yaml:9:17: alerts.recover_runs: expected one value (e.g. `recover_runs: 2`), found a list",
            "probes.yaml:11:5: alerts.warning.confirm: unknown field `confirm`, expected one of confirm_runs, recover_runs, remind_every",
            "probes.yaml:12:8: alerts.to[0]: \"ops@@example\" is not a mail address: it has 2 @ signs; an address has one, between the mailbox and the domain; write e.g. ops@example.com or \"Ops <ops@example.com>\"",
        ]
    );
}

/// A list a person may write as one value takes one value: `to: ops@example.com` is
/// `to: [ops@example.com]`, each at its own place.
#[test]
fn one_value_stands_for_a_list_of_one() {
    let text = "\
defaults:
  redirect_hosts: www.example.com
  expect_status: 200
sites:
  - name: shop
    url: example.com
    origins: 203.0.113.10
    alert_to: shop@example.com
    follow_redirects: 1
alerts:
  to: ops@example.com
webhooks:
  - url: https://hooks.example.com/probe
    sites: shop
notify:
  - {type: ntfy, url: \"https://ntfy.sh/topic\", sites: shop, severity: down}
maintenance:
  - {sites: shop, start: 2026-12-01T02:00:00Z, end: 2026-12-01T03:00:00Z}
control_checks: https://www.cloudflare.com/
";
    let loaded =
        config::parse("probes.yaml", text, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    let site = &c.sites[0];
    assert_eq!(site.probe.origins[0].to_string(), "203.0.113.10:443");
    assert_eq!(*site.alert_to, ["shop@example.com".to_string()]);
    assert_eq!(site.probe.shared.redirect_hosts, ["www.example.com"]);
    assert_eq!(site.probe.shared.diagnose.expect_status, [200]);
    assert_eq!(c.alerts.to, ["ops@example.com"]);
    assert_eq!(c.webhooks[0].sites, ["shop"]);
    assert_eq!(
        (c.notify[0].sites.clone(), c.notify[0].severities.clone()),
        (vec!["shop".to_string()], vec!["down".to_string()])
    );
    assert_eq!(c.maintenance[0].sites, ["shop"]);
    assert_eq!(c.control_checks[0].url(), "https://www.cloudflare.com/");
    // A problem with the one value is told at its own place.
    assert_eq!(
        problems("sites:\n  - url: example.com\n    origins: db.internal\n"),
        ["probes.yaml:3:14: sites[0].origins[0]: \"db.internal\" is not an IP address with an optional port (e.g. 203.0.113.10 or 203.0.113.10:8443)"]
    );
}

/// Where a list cannot be one value (a list of settings) or a value cannot be a list, the
/// message says what was found and shows what to write; no parser jargon reaches the user.
#[test]
fn what_the_parser_refuses_is_said_in_plain_words_with_an_example() {
    let cases: &[(&str, &str)] = &[
        (
            "sites: example.com\n",
            "probes.yaml:1:8: sites: expected a list (e.g. `sites:` with `  - url: example.com` on the line below), found the text \"example.com\"",
        ),
        (
            "sites:\n  - example.com\n",
            "probes.yaml:2:5: sites[0]: expected an entry's `key: value` settings, its first key after the `- ` (e.g. `- url: example.com`, the site's other keys lined up under `url`), found the text \"example.com\"",
        ),
        (
            "sites:\n  - url: example.com\nnotify: slack\n",
            "probes.yaml:3:9: notify: expected a list (e.g. `notify:` with `  - {type: slack, url_env: SLACK_URL}` on the line below), found the text \"slack\"",
        ),
        (
            "sites:\n  - url: example.com\nstore: /var/lib/probe/probe.sqlite\n",
            "probes.yaml:3:8: store: expected `key: value` settings written below it, indented (e.g. `store:` with `  path: probe.sqlite` on the line below), found the text \"/var/lib/probe/probe.sqlite\"",
        ),
        (
            "sites:\n  - url: example.com\nsmtp:\n  host: [mail.example.com]\n  from: probe@example.com\n",
            "probes.yaml:4:9: smtp.host: expected one value (e.g. `host: smtp.example.com`), found a list",
        ),
        (
            "sites:\n  - url: example.com\nsmtp:\n  host: mail.example.com\n  from: probe@example.com\n  security: ssl\n",
            "probes.yaml:6:13: smtp.security: \"ssl\" is not one of starttls, tls, plain",
        ),
        (
            "sites:\n  - url: example.com\nsmtp:\n  from: probe@example.com\n",
            "probes.yaml:4:3: smtp: `host` is missing: add it (e.g. `host: smtp.example.com`)",
        ),
        (
            "sites:\n  - url: example.com\n    cloudflare_edge: maybe\n",
            "probes.yaml:3:22: sites[0].cloudflare_edge: \"maybe\" is not true or false",
        ),
        (
            "sites:\n  - url: example.com\nalerts:\n\tto: ops@example.com\n",
            "probes.yaml:4:2: alerts: a tab character here: YAML indents with spaces only (a value holding a tab needs quotes)",
        ),
        (
            "sites:\n  - url: example.com\n    name: \"shop\n",
            "probes.yaml:3:11: sites: a quoted value that is not closed: add the closing quote",
        ),
        (
            "sites:\n  - url: example.com\n    origins: [203.0.113.10\n",
            "probes.yaml:3:14: sites: this `[` is never closed: add `]`",
        ),
        (
            "- url: example.com\n",
            "probes.yaml:1:1: (top): expected the file's sections as `key: value` lines (e.g. `sites:` with `  - url: example.com` on the line below), found a list",
        ),
    ];
    for (text, expected) in cases {
        let got = problems(text);
        assert_eq!(
            got.first().map(String::as_str),
            Some(*expected),
            "{text}\n{got:#?}"
        );
        for line in &got {
            for jargon in [
                "sequence",
                "mapping",
                "scalar",
                "invalid type",
                "variant",
                "Invalid input",
                "while parsing",
                "block collection",
            ] {
                assert!(!line.contains(jargon), "{jargon}: {line}");
            }
        }
    }
}

/// Keys written at the left margin under a section (its indentation forgotten) are each said
/// to belong under it, with the section's line.
#[test]
fn keys_of_a_section_at_the_left_margin_are_told_to_indent_under_it() {
    let text = "sites:\n  - url: example.com\nalerts:\nto: ops@example.com\nsmtp:\nhost: mail.example.com\nport: 587\nfrom: probe@example.com\n";
    assert_eq!(
        problems(text),
        [
            "probes.yaml:4:1: to: `to` is a key of `alerts:` (line 3), not of the top level: indent it under alerts:, two spaces in, like the section's other keys (`  to: …`)",
            "probes.yaml:6:1: host: `host` is a key of `smtp:` (line 5), not of the top level: indent it under smtp:, two spaces in, like the section's other keys (`  host: …`)",
            "probes.yaml:7:1: port: `port` is a key of `smtp:` (line 5), not of the top level: indent it under smtp:, two spaces in, like the section's other keys (`  port: …`)",
            "probes.yaml:8:1: from: `from` is a key of `smtp:` (line 5), not of the top level: indent it under smtp:, two spaces in, like the section's other keys (`  from: …`)",
        ]
    );
    // A site's key at the left margin; a section's key with no section above it; a typo.
    assert_eq!(
        problems("interval: 5m\nsites:\n  - url: example.com\norigins: [203.0.113.10]\nsite: x\n"),
        [
            "probes.yaml:1:1: interval: `interval` is a key of `defaults:`, not of the top level: indent it under defaults:, two spaces in, like the section's other keys (`  interval: …`)",
            "probes.yaml:4:1: origins: `origins` is a key of each entry of `sites:` (line 2), not of the top level: indent it under sites:, in an entry that starts with `- ` (e.g. `  - origins: …`)",
            "probes.yaml:5:1: site: unknown field `site`: did you mean `sites`? (expected one of defaults, sites, alerts, smtp, store, maintenance, feeds, webhooks, notify, control_checks)",
        ]
    );
}

/// A syntax error ends the reading (nothing after it can be placed), but what was found before
/// it is still told with it.
#[test]
fn a_syntax_error_is_told_with_the_mistakes_found_before_it() {
    let text = "alerts:\n  confirm_runs: two\nsites:\n  - url: example.com\n    name: \"shop\nsmtp:\n  port: lots\n";
    assert_eq!(
        problems(text),
        [
            "probes.yaml:2:17: alerts.confirm_runs: \"two\" is not a whole number (0 or more): write digits, e.g. 3",
            "probes.yaml:5:11: sites: a quoted value that is not closed: add the closing quote",
        ]
    );
}

/// A long list with mistakes far apart: each is found (the list still read a site at a time).
#[test]
fn mistakes_far_apart_in_a_long_site_list_are_each_found() {
    let mut text = String::from("sites:\n");
    for i in 0..5_000 {
        let extra = match i {
            7 => ", burst: lots",
            2_500 => ", orgins: [203.0.113.1]",
            4_999 => ", timeout: soon",
            _ => "",
        };
        text.push_str(&format!(
            "  - {{ url: \"https://site{i}.example/\"{extra} }}\n"
        ));
    }
    let got = problems(&text);
    let paths: Vec<&str> = got
        .iter()
        .map(|l| l.split(": ").nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        paths,
        [
            "sites[7].burst",
            "sites[2500].orgins",
            "sites[4999].timeout"
        ],
        "{got:#?}"
    );
}

/// The SQLite store must be makeable where the file puts it: check-config (and run, watch)
/// say so when its directory does not exist, is no directory, or is not writable by this user,
/// at store.path's line, and create nothing. `probe outbox` only reads the store, and the text
/// alone (a ConfigMap checked elsewhere) is not judged by this machine.
#[test]
fn the_store_s_directory_must_exist_and_be_writable_here() {
    let dir = tempfile::tempdir().unwrap();
    let check = |store: &str| {
        let path = dir.path().join("probes.yaml");
        std::fs::write(
            &path,
            format!("sites:\n  - url: example.com\nstore:\n  path: {store}\n"),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["check-config", "-c", path.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr)
            .replace(&path.display().to_string(), "probes.yaml");
        (out.status.code(), stderr.trim_end().to_string())
    };
    assert_eq!(
        check("/no/such/dir/probe.sqlite"),
        (Some(3), "probes.yaml:4:9: store.path: the directory /no/such/dir does not exist: create it (probe makes the store's file, not its directory), or give a path in a directory that exists".to_string())
    );
    assert!(!Path::new("/no/such/dir").exists(), "nothing is created");
    std::fs::write(dir.path().join("a-file"), "").unwrap();
    let (code, said) = check("a-file/probe.sqlite");
    assert_eq!(code, Some(3));
    assert!(said.ends_with("a-file is not a directory"), "{said}");
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let (code, said) = check("state");
    assert_eq!(code, Some(3));
    assert!(
        said.contains("state is a directory: give the store's file, e.g. "),
        "{said}"
    );
    // A directory that exists and is writable: fine, and the store is not made by checking.
    assert_eq!(check("state/probe.sqlite").0, Some(0));
    assert!(!dir.path().join("state/probe.sqlite").exists());
    // Not writable: root may write anywhere, so this is seen as another user only.
    // SAFETY: geteuid(2) takes nothing and cannot fail.
    #[cfg(unix)]
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt as _;
        let locked = dir.path().join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let (code, said) = check("locked/probe.sqlite");
        assert_eq!(code, Some(3));
        assert!(
            said.contains("locked is not writable by this user (uid "),
            "{said}"
        );
        assert!(
            said.ends_with("SQLite writes the store and its -wal and -shm files there"),
            "{said}"
        );
    }
    // `probe outbox` reads the store only: no store there is nothing queued.
    let path = dir.path().join("probes.yaml");
    std::fs::write(
        &path,
        "sites:\n  - url: example.com\nstore:\n  path: /no/such/dir/probe.sqlite\n",
    )
    .unwrap();
    let outbox = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["outbox", "-c", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        outbox.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&outbox.stderr)
    );
    assert!(String::from_utf8_lossy(&outbox.stdout)
        .contains("no store yet at /no/such/dir/probe.sqlite"));
    // The text alone is checked without this machine's directories.
    let text = "sites:\n  - url: example.com\nstore:\n  path: /no/such/dir/probe.sqlite\n";
    assert!(config::parse("probes.yaml", text, Path::new("/etc/probe")).is_ok());
}

/// What was found is repeated in a message only when it cannot be a secret: a URL by its
/// endpoint alone, a value holding `user:password@` not at all.
#[test]
fn a_secret_in_the_wrong_place_is_not_repeated() {
    let text = "sites:\n  - url: example.com\nnotify: https://hooks.slack.com/services/T0/B0/XOXSECRET\nstore: postgresql://probe:hunter2@db.internal/probe\nsmtp:\n  host: mail.example.com\n  from: probe@example.com\n  port: probe:hunter2@db\n";
    assert_eq!(
        problems(text),
        [
            "probes.yaml:3:9: notify: expected a list (e.g. `notify:` with `  - {type: slack, url_env: SLACK_URL}` on the line below), found the URL https://hooks.slack.com/…",
            "probes.yaml:4:8: store: expected `key: value` settings written below it, indented (e.g. `store:` with `  path: probe.sqlite` on the line below), found the URL postgresql://db.internal/…",
            "probes.yaml:8:9: smtp.port: a value (not repeated here: it may be a secret) is not a whole number from 0 to 65535: write digits, e.g. 587",
        ]
    );
}

/// Each mistake costs a reading of the file: past 32 readings the list stops, and says so.
#[test]
fn a_file_of_very_many_mistakes_stops_after_32_readings_and_says_so() {
    let mut text = String::from("sites:\n");
    for i in 0..40 {
        text.push_str(&format!("  - {{ url: site{i}.example, burst: lots }}\n"));
    }
    let got = problems(&text);
    // One reading for the sections, then one a mistake in the site list: 31 of them told,
    // and the note last.
    assert_eq!(got.len(), 32, "{got:#?}");
    assert!(
        got[30].starts_with("probes.yaml:32:35: sites[30].burst: "),
        "{}",
        got[30]
    );
    assert_eq!(
        got[31],
        "probes.yaml:1:1: (top): stopped after reading the file 32 times, once for each of the problems above: fix them and check again for the rest"
    );
}
