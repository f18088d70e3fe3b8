//! The `--json` output against the committed JSON Schema (schema/probe-report.schema.json), for
//! reports that exercise every part of it: TLS, responses, errors, DNS answers.

mod support;

use probe::observe::ErrorKind;
use serde_json::Value;
use support::dnsmasq::Dnsmasq;
use support::pki::{Pki, SITE};
use support::run_json;
use support::servers::{refused_port, tls_server, Alpn, Behaviour};

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/probe-report.schema.json"
    ))
    .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the schema is valid")
}

fn assert_valid(validator: &jsonschema::Validator, what: &str, doc: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_match_the_committed_schema() {
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let ca = pki.ca_path.display().to_string();
    let good = tls_server(&pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let expired = tls_server(&pki.expired(), Alpn::Http11Only, Behaviour::CloseMidBody).await;
    let dns = Dnsmasq::start(&[(SITE, "127.0.0.1")], &[]);
    let resolver = dns.addr.to_string();
    let good_url = format!("https://{SITE}:{}/", good.addr.port());

    let runs: Vec<(&str, Vec<String>)> = vec![
        (
            "healthy, via DNS",
            vec![
                good_url.clone(),
                "--resolver".into(),
                resolver.clone(),
                "--ca-file".into(),
                ca.clone(),
                "--static-path".into(),
                "/s.css".into(),
            ],
        ),
        (
            "refused origin, expired cut body, samples",
            vec![
                "https://probe.test/".into(),
                "--edge".into(),
                expired.addr.to_string(),
                "--origin".into(),
                refused_port().to_string(),
                "--ca-file".into(),
                ca.clone(),
                "--samples".into(),
                "2".into(),
            ],
        ),
        (
            "nxdomain",
            vec![
                "https://missing.test/".into(),
                "--resolver".into(),
                resolver.clone(),
            ],
        ),
    ];
    for (what, args) in runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (_, doc) = run_json(&args).await;
        assert_valid(&validator, what, &doc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_rejects_a_document_that_breaks_the_contract() {
    let validator = validator();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = tls_server(&pki.good(), Alpn::H2AndHttp11, Behaviour::ok()).await;
    let ca = pki.ca_path.display().to_string();
    let (_, doc) = run_json(&[
        "https://probe.test/",
        "--edge",
        &server.addr.to_string(),
        "--ca-file",
        &ca,
    ])
    .await;
    assert_valid(&validator, "untouched", &doc);

    let mut missing = doc.clone();
    missing["observations"][0]["timings_ms"]
        .as_object_mut()
        .unwrap()
        .remove("ttfb");
    assert!(
        !validator.is_valid(&missing),
        "a missing phase must be rejected"
    );
    let mut renamed = doc.clone();
    renamed["observations"][0]["route"] = "cdn".into();
    assert!(
        !validator.is_valid(&renamed),
        "an unknown route must be rejected"
    );
    let mut extra = doc.clone();
    extra["surprise"] = 1.into();
    assert!(
        !validator.is_valid(&extra),
        "an undocumented field must be rejected"
    );
}

#[test]
fn every_error_kind_is_in_the_schema() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/probe-report.schema.json"
    ))
    .unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let listed = schema["$defs"]["error_kind"]["enum"].as_array().unwrap();
    let kinds = [
        ErrorKind::Nxdomain,
        ErrorKind::Servfail,
        ErrorKind::NoRecords,
        ErrorKind::Timeout,
        ErrorKind::Refused,
        ErrorKind::Reset,
        ErrorKind::Unreachable,
        ErrorKind::Closed,
        ErrorKind::TlsAlert,
        ErrorKind::CertExpired,
        ErrorKind::CertUntrusted,
        ErrorKind::CertNameMismatch,
        ErrorKind::Protocol,
        ErrorKind::Io,
    ];
    assert_eq!(listed.len(), kinds.len());
    for kind in kinds {
        let serialised = serde_json::to_value(kind).unwrap();
        assert_eq!(
            serialised,
            Value::from(kind.as_str()),
            "serde and as_str agree"
        );
        assert!(
            listed.contains(&serialised),
            "{kind:?} missing from the schema"
        );
    }
}

#[test]
fn recorded_fixtures_match_the_schema() {
    let validator = validator();
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_valid(&validator, &path.display().to_string(), &doc);
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} fixtures");
}
