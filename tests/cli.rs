//! The `probe` binary as a user runs it: exit codes follow the monitoring-plugins convention and
//! every unusable argument is one clear line naming it.

mod support;

use std::process::{Command, Output};

use support::pki::Pki;
use support::servers::{refused_port, tls_server, Alpn, Behaviour};

fn probe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr_line(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one line expected: {text}"
    );
    text.trim_end().to_string()
}

#[test]
fn unusable_arguments_exit_3_with_one_line_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (&["not-a-url"], "probe: UNKNOWN: target \"not-a-url\""),
        (
            &["example.com", "--origin", "origin.example.com"],
            "probe: UNKNOWN: --origin \"origin.example.com\"",
        ),
        (
            &["example.com", "--ca-file", "/nonexistent/ca.pem"],
            "probe: UNKNOWN: --ca-file: cannot read CA file /nonexistent/ca.pem",
        ),
        (
            &["example.com", "--timeout", "forever"],
            "probe: UNKNOWN: --timeout \"forever\"",
        ),
        // Port 0 is never dialled (it used to be, and reported DOWN).
        (
            &["example.com", "--origin", "127.0.0.1:0"],
            "probe: UNKNOWN: --origin \"127.0.0.1:0\": port 0 is not a port a server can listen on",
        ),
        (
            &["https://example.com:0/"],
            "probe: UNKNOWN: target \"https://example.com:0/\": port 0 is not a port",
        ),
        // A control character in a path is an argument error (it used to make the site degraded).
        (
            &["example.com", "--static-path", "/style\u{7}.css"],
            "probe: UNKNOWN: --static-path \"/style\\u{7}.css\": holds a space or a control character",
        ),
        // Credentials in a URL are refused, and never repeated, even when the URL does not parse.
        (
            &["https://admin:hunter2@example.com/?token=abc"],
            "probe: UNKNOWN: target \"https://example.com/?token=***\": carries a user name or password",
        ),
        (
            &["https://admin:hunter2@exa mple.com/?token=abc"],
            "probe: UNKNOWN: target \"https://exa mple.com/?token=***\": not a URL",
        ),
        // Not a file, or far too large for one: refused before reading (it used to read
        // /dev/zero until memory ran out).
        (
            &["example.com", "--ca-file", "/dev/zero"],
            "probe: UNKNOWN: --ca-file: CA file /dev/zero is not a regular file",
        ),
    ];
    for (args, expected) in cases {
        let output = probe(args);
        assert_eq!(output.status.code(), Some(3), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
        let line = stderr_line(&output);
        assert!(line.starts_with(expected), "{args:?}: {line}");
        assert!(
            !line.contains("hunter2") && !line.contains("=abc"),
            "{line}"
        );
    }
}

/// A named pipe as the CA file: refused at once (opening it would wait for a writer forever).
#[test]
fn a_ca_file_that_is_a_pipe_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.fifo");
    assert!(Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap()
        .success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_probe"))
        .args(["example.com", "--ca-file", path.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("probe waited on the pipe");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr_line(&output).contains("is not a regular file"));
}

#[test]
fn a_ca_file_larger_than_any_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.pem");
    std::fs::write(&path, vec![b'A'; 2 << 20]).unwrap();
    let output = probe(&["example.com", "--ca-file", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    let line = stderr_line(&output);
    assert!(
        line.contains("is 2097152 bytes; a CA file is at most 1 MiB"),
        "{line}"
    );
}

#[test]
fn a_ca_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.pem");
    std::fs::write(&path, "not a certificate\n").unwrap();
    let output = probe(&["example.com", "--ca-file", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr_line(&output).contains("holds no PEM certificate"));
}

#[test]
fn unknown_flags_are_unknown_not_critical() {
    let output = probe(&["example.com", "--frobnicate"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--frobnicate"));
    let help = probe(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--origin"));
}

#[test]
fn exit_codes_follow_the_site() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let ca = pki.ca_path.display().to_string();
    let good = runtime.block_on(tls_server(&pki.good(), Alpn::H2AndHttp11, Behaviour::ok()));
    let expiring = runtime.block_on(tls_server(
        &pki.expiring_in_5_days(),
        Alpn::H2AndHttp11,
        Behaviour::ok(),
    ));
    let closed = refused_port();

    let ok = probe(&[
        "https://probe.test/",
        "--edge",
        &good.addr.to_string(),
        "--ca-file",
        &ca,
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let warning = probe(&[
        "https://probe.test/",
        "--edge",
        &expiring.addr.to_string(),
        "--ca-file",
        &ca,
    ]);
    assert_eq!(
        warning.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&warning.stdout)
    );
    let critical = probe(&["https://probe.test/", "--edge", &closed.to_string()]);
    assert_eq!(
        critical.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&critical.stdout)
    );
    let json = probe(&[
        "https://probe.test/",
        "--edge",
        &closed.to_string(),
        "--json",
    ]);
    assert_eq!(json.status.code(), Some(2));
    let doc: serde_json::Value =
        serde_json::from_slice(&json.stdout).expect("--json prints JSON only");
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["status"], "down");
}

#[test]
fn a_saved_report_is_diagnosed_again_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let closed = refused_port();
    let live = probe(&[
        "https://probe.test/",
        "--edge",
        &closed.to_string(),
        "--json",
    ]);
    assert_eq!(live.status.code(), Some(2));
    let saved = dir.path().join("run.json");
    std::fs::write(&saved, &live.stdout).unwrap();

    let replay = probe(&["diagnose", saved.to_str().unwrap(), "--json"]);
    assert_eq!(
        replay.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let live: serde_json::Value = serde_json::from_slice(&live.stdout).unwrap();
    let again: serde_json::Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(again["diagnosis"], live["diagnosis"]);
    assert_eq!(again["diagnosis"]["cause"], "edge_unreachable");
    assert_eq!(again["observations"], live["observations"]);

    let table = probe(&["diagnose", saved.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("DOWN  visitor_edge · edge_unreachable (high)"),
        "{text}"
    );

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"schema\": 1, \"observations\": 3}").unwrap();
    let output = probe(&["diagnose", broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3));
    let line = stderr_line(&output);
    assert!(
        line.starts_with(&format!(
            "probe: UNKNOWN: {}: not a `probe --json` report",
            broken.display()
        )),
        "{line}"
    );
    let missing = probe(&["diagnose", "/nonexistent/run.json"]);
    assert_eq!(missing.status.code(), Some(3));
    assert!(stderr_line(&missing).contains("/nonexistent/run.json: cannot read it"));
}

/// `probe watch --listen` takes `localhost:PORT` (the loopback address) and `:PORT` (every
/// interface) as well as `IP:PORT`, and serves the feeds there; nonsense is one clear line,
/// UNKNOWN.
#[test]
fn watch_listens_on_localhost_or_every_interface() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("probes.yaml");
    std::fs::write(
        &config,
        format!(
            "defaults:\n  interval: 1h\n  timeout: 1s\nsites:\n  - name: quiet\n    url: https://probe.test/\n    edge: \"{}\"\nstore:\n  path: probe.sqlite\n",
            refused_port()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    for form in ["localhost:{port}", ":{port}"] {
        let port = support::free_tcp_port();
        let listen = form.replace("{port}", &port.to_string());
        let mut watch = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["watch", "-c", config, "--listen", &listen])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let serving = support::wait_for_tcp(port, &mut watch);
        let status = serving.then(|| http_get_status(port, "/status.json"));
        let _ = watch.kill();
        let output = watch.wait_with_output().unwrap();
        assert!(
            serving,
            "{listen}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(status, Some(200), "{listen}");
    }
    let cases: &[(&str, &str)] = &[
        (
            "status.example.com:80",
            "\"status.example.com\" is not an IP address (host names other than localhost are not looked up)",
        ),
        ("9115", "\"9115\" has no port"),
        (":0", "\":0\": port 0 would pick a port at random"),
    ];
    for (listen, expected) in cases {
        let output = probe(&["watch", "-c", config, "--listen", listen]);
        assert_eq!(output.status.code(), Some(3), "{listen}");
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(
            text.starts_with(&format!(
                "error: invalid value '{listen}' for '--listen <ADDR:PORT>': {expected}"
            )),
            "{listen}: {text}"
        );
    }
}

/// The status code of a plain HTTP GET to 127.0.0.1:`port`.
fn http_get_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// `PROBE_LOG=debug` lines carry plain values (the address, the status number, the error's
/// kind), never `Some(…)` or `None`: a field with nothing to say is left out.
#[test]
fn debug_lines_carry_plain_values() {
    let closed = refused_port();
    let lines = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(args)
            .env("PROBE_LOG", "debug")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let refused = lines(&["https://probe.test/", "--edge", &closed.to_string()]);
    let observed = refused
        .lines()
        .find(|l| l.contains(" observed "))
        .expect(&refused);
    assert!(
        observed.contains(&format!("address={closed}")),
        "{observed}"
    );
    assert!(
        observed.contains("error_phase=\"connect\" error=\"refused\""),
        "{observed}"
    );
    assert!(
        !observed.contains("status="),
        "no status without a response: {observed}"
    );
    // A page that answers: its status as a number, and no error field.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let good = runtime.block_on(tls_server(&pki.good(), Alpn::H2AndHttp11, Behaviour::ok()));
    let ca = pki.ca_path.display().to_string();
    let served = lines(&[
        "https://probe.test/",
        "--edge",
        &good.addr.to_string(),
        "--ca-file",
        &ca,
    ]);
    let observed = served
        .lines()
        .find(|l| l.contains(" observed "))
        .expect(&served);
    assert!(
        observed.contains(&format!("address={} status=200 ", good.addr)),
        "{observed}"
    );
    assert!(
        !observed.contains("error"),
        "no error when there is none: {observed}"
    );
    // Our own DNS queries to a server that does not answer.
    let unanswered = lines(&[
        "https://probe.test/",
        "--resolver",
        "127.0.0.1:1",
        "--timeout",
        "1s",
    ]);
    let resolved = unanswered
        .lines()
        .find(|l| l.contains(" resolved "))
        .expect(&unanswered);
    assert!(
        resolved.contains("name=probe.test resolver=127.0.0.1:1"),
        "{resolved}"
    );
    assert!(
        !resolved.contains(" a=") && !resolved.contains(" aaaa="),
        "no address: {resolved}"
    );
    for line in refused
        .lines()
        .chain(unanswered.lines())
        .chain(served.lines())
    {
        assert!(!line.contains("Some(") && !line.contains("None"), "{line}");
    }
}
