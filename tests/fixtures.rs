//! The diagnosis over recorded observations: each file in tests/fixtures/ is a report the lab
//! produced for real (`PROBE_RECORD_FIXTURES=1 cargo test --test lab --test edge_lab --test witness`
//! records them anew). Offline, the diagnosis must still name the cause the table below expects, and
//! agree with what was recorded.

use std::path::PathBuf;

use probe::diagnose::{diagnose, Cause, DiagnoseSettings};
use probe::{ProbeReport, Status};

/// Fixture → the cause and status it must be diagnosed as.
const EXPECTED: &[(&str, Cause, Status)] = &[
    ("lab_healthy", Cause::Ok, Status::Ok),
    (
        "lab_stale_fastcgi_socket",
        Cause::FpmUnreachable,
        Status::Down,
    ),
    ("lab_fpm_stopped", Cause::FpmUnreachable, Status::Down),
    ("lab_busy_pool", Cause::FpmSaturated, Status::Down),
    ("lab_worker_killed", Cause::FpmWorkerDied, Status::Down),
    // With the server's status pages read (tests/witness.rs).
    ("lab_fpm_status_two_held", Cause::Ok, Status::Ok),
    (
        "lab_fpm_saturated_witnessed",
        Cause::FpmSaturated,
        Status::Down,
    ),
    ("lab_fpm_status_waits", Cause::FpmSaturated, Status::Down),
    (
        "lab_fpm_status_wrong_socket",
        Cause::FpmUnreachable,
        Status::Down,
    ),
    ("lab_slow_page", Cause::OriginSlow, Status::Degraded),
    ("lab_plain_http_to_tls", Cause::Unknown, Status::Unknown),
    (
        "lab_slow_page_witnessed",
        Cause::OriginSlow,
        Status::Degraded,
    ),
    (
        "lab_origin_port_closed",
        Cause::OriginRefused,
        Status::Degraded,
    ),
    ("wordpress_healthy", Cause::Ok, Status::Ok),
    ("wordpress_maintenance", Cause::Maintenance, Status::Down),
    (
        "wordpress_database_down",
        Cause::DatabaseUnreachable,
        Status::Down,
    ),
    ("edge_healthy", Cause::Ok, Status::Ok),
    (
        "edge_stale_fastcgi_socket",
        Cause::FpmUnreachable,
        Status::Down,
    ),
    (
        "edge_origin_cert_expired",
        Cause::OriginCertExpired,
        Status::Down,
    ),
    (
        "edge_origin_cert_untrusted",
        Cause::OriginCertUntrusted,
        Status::Down,
    ),
    (
        "edge_origin_cert_name_mismatch",
        Cause::OriginCertNameMismatch,
        Status::Down,
    ),
    (
        "edge_full_mode_self_signed",
        Cause::OriginCertUntrusted,
        Status::Degraded,
    ),
    (
        "edge_origin_port_closed",
        Cause::OriginRefused,
        Status::Down,
    ),
    (
        "edge_blocked_refused",
        Cause::OriginBlocksEdge,
        Status::Down,
    ),
    (
        "edge_blocked_dropped",
        Cause::OriginBlocksEdge,
        Status::Down,
    ),
    (
        "edge_origin_connect_timeout",
        Cause::OriginTimeout,
        Status::Down,
    ),
    (
        "edge_origin_tls_handshake",
        Cause::OriginTlsHandshake,
        Status::Down,
    ),
    (
        "edge_origin_empty_reply",
        Cause::OriginBadResponse,
        Status::Down,
    ),
    ("edge_origin_slow", Cause::OriginSlow, Status::Down),
    ("edge_busy_pool", Cause::FpmSaturated, Status::Down),
    ("edge_worker_killed", Cause::FpmWorkerDied, Status::Down),
    ("edge_cert_expiring", Cause::CertExpiring, Status::Degraded),
    (
        "edge_origin_dns_failure",
        Cause::OriginDnsFailure,
        Status::Down,
    ),
    ("edge_internal", Cause::EdgeInternal, Status::Down),
    (
        "edge_plain_http_to_tls_origin",
        Cause::OriginTlsHandshake,
        Status::Down,
    ),
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

#[test]
fn recorded_lab_runs_are_diagnosed_as_expected() {
    for (name, cause, status) in EXPECTED {
        let path = fixtures().join(format!("{name}.json"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let recorded: ProbeReport =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let settings = DiagnoseSettings {
            cloudflare_edge_declared: recorded.cloudflare_edge_declared,
            ..DiagnoseSettings::default()
        };
        let d = diagnose(&recorded.host, &recorded.observations, &settings);
        assert_eq!(
            (d.cause, d.status),
            (*cause, *status),
            "{name}: {}\n{:#?}",
            d.summary,
            d.evidence
        );
        let was = &recorded.diagnosis;
        assert_eq!(
            (d.hop, d.cause, d.confidence, d.status),
            (was.hop, was.cause, was.confidence, was.status),
            "{name}: the diagnosis drifted from the recorded one; re-record the fixtures if intended"
        );
        assert_eq!(d.evidence.first(), was.evidence.first(), "{name}");
        // One full stop or question mark ends each sentence, never two.
        for doubled in ["?.", "..", ".?", ". ."] {
            assert!(!d.summary.contains(doubled), "{name}: {}", d.summary);
        }
        // "Also possible" names other causes only; a cause's look-alike forms are said in its
        // summary, unless PHP-FPM's own status page told them apart.
        assert!(
            d.alternatives.iter().all(|a| a.cause != d.cause),
            "{name}: {:?}",
            d.alternatives
        );
        if d.cause == Cause::FpmUnreachable {
            let witnessed = d.summary.contains("PHP-FPM itself runs");
            assert!(
                witnessed != d.summary.contains("its socket was renamed"),
                "{name}: {}",
                d.summary
            );
        }
    }
}

#[test]
fn every_fixture_is_in_the_table() {
    let listed: Vec<&str> = EXPECTED.iter().map(|(name, _, _)| *name).collect();
    for entry in std::fs::read_dir(fixtures()).unwrap() {
        let name = entry
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            listed.contains(&name.as_str()),
            "{name}.json has no expected cause in the table"
        );
    }
}
