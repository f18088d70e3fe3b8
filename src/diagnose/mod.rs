//! The diagnosis: from what each route saw, which hop of visitor → edge → nginx → PHP-FPM →
//! database broke, why, how sure we are, and what to run to confirm it.
//!
//! Pure functions over recorded observations: no I/O, no clock. The rules run in the order a
//! request travels (DNS, visitor → edge, edge → origin, origin → PHP-FPM → database, the
//! application), and the first that fits names the cause.

mod advice;
pub mod budget;
pub mod certificate;
pub mod pattern;
pub mod recognise;
mod rules;
mod slowness;
mod unexpected;
pub mod witness;

use serde::{Deserialize, Serialize};

use crate::observe::{Observation, Status};

pub use budget::{Budget, BudgetPhase};
pub use rules::DiagnoseSettings;

/// The arrow of the chain that broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hop {
    None,
    Dns,
    VisitorEdge,
    EdgeOrigin,
    OriginFpm,
    FpmDatabase,
    App,
    Unknown,
}

impl Hop {
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::None => "none",
            Hop::Dns => "dns",
            Hop::VisitorEdge => "visitor_edge",
            Hop::EdgeOrigin => "edge_origin",
            Hop::OriginFpm => "origin_fpm",
            Hop::FpmDatabase => "fpm_database",
            Hop::App => "app",
            Hop::Unknown => "unknown",
        }
    }
}

/// Why it broke (DESIGN.md §3; the ids are part of the output contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    Ok,
    DnsFailure,
    EdgeUnreachable,
    EdgeCertInvalid,
    EdgeInternal,
    OriginDnsFailure,
    OriginRefused,
    OriginTimeout,
    OriginBlocksEdge,
    OriginTlsHandshake,
    OriginCertExpired,
    OriginCertUntrusted,
    OriginCertNameMismatch,
    OriginBadResponse,
    FpmUnreachable,
    FpmSaturated,
    FpmWorkerDied,
    OriginSlow,
    DatabaseUnreachable,
    AppError,
    Maintenance,
    CertExpiring,
    Slow,
    Unknown,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Ok => "ok",
            Cause::DnsFailure => "dns_failure",
            Cause::EdgeUnreachable => "edge_unreachable",
            Cause::EdgeCertInvalid => "edge_cert_invalid",
            Cause::EdgeInternal => "edge_internal",
            Cause::OriginDnsFailure => "origin_dns_failure",
            Cause::OriginRefused => "origin_refused",
            Cause::OriginTimeout => "origin_timeout",
            Cause::OriginBlocksEdge => "origin_blocks_edge",
            Cause::OriginTlsHandshake => "origin_tls_handshake",
            Cause::OriginCertExpired => "origin_cert_expired",
            Cause::OriginCertUntrusted => "origin_cert_untrusted",
            Cause::OriginCertNameMismatch => "origin_cert_name_mismatch",
            Cause::OriginBadResponse => "origin_bad_response",
            Cause::FpmUnreachable => "fpm_unreachable",
            Cause::FpmSaturated => "fpm_saturated",
            Cause::FpmWorkerDied => "fpm_worker_died",
            Cause::OriginSlow => "origin_slow",
            Cause::DatabaseUnreachable => "database_unreachable",
            Cause::AppError => "app_error",
            Cause::Maintenance => "maintenance",
            Cause::CertExpiring => "cert_expiring",
            Cause::Slow => "slow",
            Cause::Unknown => "unknown",
        }
    }

    /// The hop a cause belongs to (`cert_expiring` and `slow` degrade a working chain).
    pub fn hop(self) -> Hop {
        match self {
            Cause::Ok | Cause::CertExpiring | Cause::Slow => Hop::None,
            Cause::DnsFailure => Hop::Dns,
            Cause::EdgeUnreachable | Cause::EdgeCertInvalid | Cause::EdgeInternal => {
                Hop::VisitorEdge
            }
            Cause::OriginDnsFailure
            | Cause::OriginRefused
            | Cause::OriginTimeout
            | Cause::OriginBlocksEdge
            | Cause::OriginTlsHandshake
            | Cause::OriginCertExpired
            | Cause::OriginCertUntrusted
            | Cause::OriginCertNameMismatch => Hop::EdgeOrigin,
            Cause::OriginBadResponse
            | Cause::FpmUnreachable
            | Cause::FpmSaturated
            | Cause::FpmWorkerDied
            | Cause::OriginSlow => Hop::OriginFpm,
            Cause::DatabaseUnreachable => Hop::FpmDatabase,
            Cause::AppError | Cause::Maintenance => Hop::App,
            Cause::Unknown => Hop::Unknown,
        }
    }

    /// In a few words, for titles and mail subjects.
    pub fn title(self) -> &'static str {
        match self {
            Cause::Ok => "all routes healthy",
            Cause::DnsFailure => "the site's name does not resolve",
            Cause::EdgeUnreachable => "visitors cannot reach the edge",
            Cause::EdgeCertInvalid => "the certificate visitors get is invalid",
            Cause::EdgeInternal => "the edge itself failed",
            Cause::OriginDnsFailure => "the edge cannot resolve the origin",
            Cause::OriginRefused => "the origin refuses connections",
            Cause::OriginTimeout => "the origin does not answer connections",
            Cause::OriginBlocksEdge => "the origin answers us but not the edge",
            Cause::OriginTlsHandshake => "TLS between edge and origin fails",
            Cause::OriginCertExpired => "the origin certificate has expired",
            Cause::OriginCertUntrusted => "the origin certificate is not trusted",
            Cause::OriginCertNameMismatch => "the origin certificate is for another name",
            Cause::OriginBadResponse => "the origin sends an empty or broken reply",
            Cause::FpmUnreachable => "the web server cannot reach PHP-FPM",
            Cause::FpmSaturated => "PHP-FPM has no free worker",
            Cause::FpmWorkerDied => "a PHP-FPM worker died mid-request",
            Cause::OriginSlow => "the origin answers too slowly",
            Cause::DatabaseUnreachable => "WordPress cannot reach its database",
            Cause::AppError => "the application fails",
            Cause::Maintenance => "WordPress is in maintenance mode",
            Cause::CertExpiring => "a certificate expires soon",
            Cause::Slow => "slow but working",
            Cause::Unknown => "the evidence fits no known cause",
        }
    }
}

/// How far the evidence proves the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// Another cause the evidence does not rule out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub cause: Cause,
    pub why: String,
}

/// The verdict on one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub status: Status,
    pub hop: Hop,
    pub cause: Cause,
    pub confidence: Confidence,
    /// One or two sentences an operator can act on.
    pub summary: String,
    /// The observations that decided it, most telling first.
    pub evidence: Vec<String>,
    /// Commands that confirm it on the server.
    pub next_steps: Vec<String>,
    pub alternatives: Vec<Alternative>,
}

/// Diagnoses one site from everything its routes saw.
pub fn diagnose(
    host: &str,
    observations: &[Observation],
    settings: &DiagnoseSettings,
) -> Diagnosis {
    rules::diagnose(host, observations, settings, &[])
}

/// Diagnoses one site as `diagnose` does, its status pages also compared with what earlier runs
/// read of them (`previous`: each origin's counters, kept in the region's state of the site): a
/// restart, a pool that filled up in between.
pub fn diagnose_since(
    host: &str,
    observations: &[Observation],
    settings: &DiagnoseSettings,
    previous: &[crate::observe::witness::WitnessCounters],
) -> Diagnosis {
    rules::diagnose(host, observations, settings, previous)
}
