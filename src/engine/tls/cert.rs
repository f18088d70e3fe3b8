//! Certificate facts: what a person needs to know about each certificate a server presented,
//! read with x509-parser. Pure functions over DER bytes; no verification happens here.

use std::net::IpAddr;

use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::observe::CertFacts;

/// Issuer OU of Cloudflare Origin CA certificates (RSA and ECC roots both contain it).
const CLOUDFLARE_ORIGIN_OU: &str = "CloudFlare Origin";

/// Reads the facts of one DER certificate. `None` when the bytes are not a certificate: a broken
/// chain is evidence the caller records, not a reason to stop.
pub fn cert_facts(der: &[u8], now: OffsetDateTime) -> Option<CertFacts> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let not_before = cert.validity().not_before.to_datetime();
    let not_after = cert.validity().not_after.to_datetime();
    // Whole days, rounded down: a certificate expiring in 23 hours has 0 days left, an expired
    // one a negative count.
    let days_left = (not_after - now).whole_seconds().div_euclid(86_400);
    let cloudflare_origin_ca = cert.issuer().iter_organizational_unit().any(|ou| {
        ou.as_str()
            .map(|s| s.contains(CLOUDFLARE_ORIGIN_OU))
            .unwrap_or(false)
    });
    Some(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sans: subject_alt_names(&cert),
        not_before: crate::text::rfc3339(not_before),
        not_after: crate::text::rfc3339(not_after),
        days_left,
        self_signed: cert.subject().as_raw() == cert.issuer().as_raw(),
        cloudflare_origin_ca,
        sha256: crate::text::hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
        serial: serial_hex(cert.raw_serial()),
    })
}

/// A serial number as lowercase hex, its leading zero bytes (the DER sign byte) dropped.
fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    crate::text::hex(&raw[first..])
}

/// Whether the certificate's subjectAltNames cover `host` (DNS name with the usual single-label
/// wildcard rule, or IP address). Checked apart from chain validation so that an expired
/// certificate that also names the wrong host shows both problems.
pub fn covers_name(facts: &CertFacts, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return facts
            .sans
            .iter()
            .any(|san| san.parse::<IpAddr>().ok() == Some(ip));
    }
    facts
        .sans
        .iter()
        .any(|san| dns_name_matches(&san.to_ascii_lowercase(), &host))
}

fn dns_name_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == suffix,
            None => false,
        },
        None => pattern == host,
    }
}

fn subject_alt_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cloudflare::ORIGIN_CA_ROOT_PEM;

    fn origin_ca_der() -> Vec<u8> {
        let mut reader = ORIGIN_CA_ROOT_PEM;
        let der = rustls_pemfile::certs(&mut reader).next().unwrap().unwrap();
        der.to_vec()
    }

    #[test]
    fn facts_of_the_cloudflare_origin_ca_root() {
        let now = OffsetDateTime::from_unix_timestamp(1_764_028_800).unwrap(); // 2025-11-25
        let facts = cert_facts(&origin_ca_der(), now).unwrap();
        assert!(facts.self_signed);
        assert!(facts.cloudflare_origin_ca);
        assert!(facts
            .issuer
            .contains("CloudFlare Origin SSL Certificate Authority"));
        assert_eq!(
            facts.sha256,
            "d3c7e85c91707fc0a12abc5d88266747aa4fa8e7b162f633ffb3c9d989947620"
        );
        assert!(
            facts.not_after.starts_with("2029-08-15"),
            "{}",
            facts.not_after
        );
        // 2025-11-25 → 2029-08-15 is 1359 days, minus the part of the last day.
        assert!(
            (1357..=1359).contains(&facts.days_left),
            "{}",
            facts.days_left
        );
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(cert_facts(b"not a certificate", OffsetDateTime::now_utc()).is_none());
    }

    #[test]
    fn name_coverage_follows_the_wildcard_rule() {
        let facts = CertFacts {
            subject: String::new(),
            issuer: String::new(),
            sans: vec![
                "*.example.com".into(),
                "example.com".into(),
                "127.0.0.1".into(),
            ],
            not_before: String::new(),
            not_after: String::new(),
            days_left: 0,
            self_signed: false,
            cloudflare_origin_ca: false,
            sha256: String::new(),
            serial: String::new(),
        };
        assert!(covers_name(&facts, "example.com"));
        assert!(covers_name(&facts, "WWW.Example.com."));
        assert!(!covers_name(&facts, "a.b.example.com"));
        assert!(!covers_name(&facts, "example.org"));
        assert!(covers_name(&facts, "127.0.0.1"));
        assert!(!covers_name(&facts, "127.0.0.2"));
    }
}
