//! Certificates in words, from the facts the handshake recorded (dates, names, issuer): "expired
//! on 2025-04-01 (616 days ago)", "is for other.test, not for the site's name example.com". The
//! TLS library's own message stays in the observation (`verify_message`) and never reaches a
//! summary or an evidence line. Also what renews a certificate: the one list of steps the
//! diagnosis and the notices share.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::observe::{CertFacts, CertProblem, Observation, TlsFacts};

/// Names of a certificate listed before "and N more".
const NAMES_SHOWN: usize = 4;

/// What is wrong with the certificate `o` was answered with, as the end of a sentence starting
/// "the certificate …": "expired on 2025-04-01 (616 days ago)". `None` when it verified.
pub(super) fn problem(o: &Observation) -> Option<String> {
    let tls = o.tls.as_ref().filter(|t| !t.verified)?;
    let host = site_name(o);
    let mismatch =
        tls.name_matches == Some(false) || tls.verify_error == Some(CertProblem::NameMismatch);
    let main = match tls.verify_error {
        Some(CertProblem::Expired) => expired(tls, &o.started_at),
        Some(CertProblem::NotYetValid) => not_yet_valid(tls, &o.started_at),
        Some(CertProblem::NameMismatch) => for_other_names(tls, &host),
        Some(CertProblem::Untrusted) => untrusted(tls),
        Some(CertProblem::Revoked) => "has been revoked by the CA that issued it".to_string(),
        // The chain passed every other check, and the names do not cover the site.
        _ if mismatch => for_other_names(tls, &host),
        _ => "is not valid (malformed, meant for another purpose, or signed in a way that is not supported)".to_string(),
    };
    // An expired (or untrusted) certificate for the wrong name has both problems: say both.
    if mismatch
        && tls.verify_error != Some(CertProblem::NameMismatch)
        && !main.starts_with("is for")
    {
        return Some(format!("{main}, and {}", for_other_names(tls, &host)));
    }
    Some(main)
}

/// A certificate's days left in words: "90 days left", "less than a day left", "expired 616 days
/// ago" (never a negative count).
pub fn days_left(days: i64) -> String {
    match days {
        d if d < 0 => format!("expired {}", ago(-d)),
        0 => "less than a day left".to_string(),
        1 => "1 day left".to_string(),
        d => format!("{d} days left"),
    }
}

/// When a certificate within its warning window expires: "expires in 10 days, on 2026-12-17".
pub(super) fn expires(cert: &CertFacts) -> String {
    let when = match cert.days_left {
        d if d <= 0 => "expires within a day".to_string(),
        1 => "expires in 1 day".to_string(),
        d => format!("expires in {d} days"),
    };
    format!("{when}, on {}", date(&cert.not_after))
}

/// One evidence line for an invalid certificate: who saw it, which it is, and what is wrong.
pub(super) fn evidence(who: &str, o: &Observation) -> Option<String> {
    let leaf = o.tls.as_ref()?.leaf()?;
    Some(format!(
        "{who}: certificate {} (issuer {}) {}",
        leaf.subject,
        leaf.issuer,
        problem(o)?
    ))
}

fn expired(tls: &TlsFacts, at: &str) -> String {
    // The leaf first: an intermediate that expired is named as such.
    let Some((index, cert)) = tls.chain.iter().enumerate().find(|(_, c)| c.days_left < 0) else {
        return "has expired".to_string();
    };
    let when = format!(
        "expired on {} ({})",
        date(&cert.not_after),
        if same_day(&cert.not_after, at) {
            "today".to_string()
        } else {
            ago(-cert.days_left)
        }
    );
    if index == 0 {
        when
    } else {
        format!(
            "comes with an expired certificate in its chain: {} {when}",
            cert.subject
        )
    }
}

fn not_yet_valid(tls: &TlsFacts, at: &str) -> String {
    let Some(start) = parse(at) else {
        return "is not valid yet".to_string();
    };
    let later = tls.chain.iter().find_map(|c| {
        let from = parse(&c.not_before)?;
        (from > start).then_some((c, (from - start).whole_days()))
    });
    match later {
        Some((cert, 0)) => format!(
            "is not valid before {} (later today)",
            date(&cert.not_before)
        ),
        Some((cert, 1)) => format!("is not valid before {} (tomorrow)", date(&cert.not_before)),
        Some((cert, days)) => format!(
            "is not valid before {} (in {days} days)",
            date(&cert.not_before)
        ),
        None => "is not valid yet (is the server's or our clock wrong?)".to_string(),
    }
}

fn for_other_names(tls: &TlsFacts, host: &str) -> String {
    let Some(leaf) = tls.leaf() else {
        return format!("is not for the site's name {host}");
    };
    if leaf.sans.is_empty() {
        return format!(
            "names no host (only its subject, {}), not the site's name {host}",
            leaf.subject
        );
    }
    let mut names: Vec<&str> = leaf
        .sans
        .iter()
        .take(NAMES_SHOWN)
        .map(String::as_str)
        .collect();
    let more = leaf.sans.len().saturating_sub(NAMES_SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    names.dedup();
    format!(
        "is for {}{more}, not for the site's name {host}",
        names.join(", ")
    )
}

fn untrusted(tls: &TlsFacts) -> String {
    match tls.leaf() {
        Some(leaf) if leaf.self_signed => "is self-signed (issued by itself), so no CA vouches for it".to_string(),
        Some(leaf) => format!(
            "is issued by {}, a CA that is not trusted here (a private CA, or a chain sent without its intermediate certificate)",
            leaf.issuer
        ),
        None => "is not issued by a trusted CA".to_string(),
    }
}

/// The name the request asked for (Host and SNI).
fn site_name(o: &Observation) -> String {
    url::Url::parse(&o.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn ago(days: i64) -> String {
    if days == 1 {
        "1 day ago".to_string()
    } else {
        format!("{days} days ago")
    }
}

fn parse(rfc3339: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(rfc3339, &Rfc3339).ok()
}

/// The date of an RFC 3339 time (`2025-04-01`), or the text as it is when it is not one.
fn date(rfc3339: &str) -> String {
    match parse(rfc3339) {
        Some(t) => t.date().to_string(),
        None => rfc3339.to_string(),
    }
}

fn same_day(a: &str, b: &str) -> bool {
    matches!((parse(a), parse(b)), (Some(a), Some(b)) if a.date() == b.date())
}

/// What to run for a certificate `o`'s route presented that expires soon: look at it where probe
/// dialled, then renew it the way its issuer calls for.
pub(super) fn expiring_steps(o: &Observation, cert: &CertFacts) -> Vec<String> {
    let host = site_name(o);
    let address = o
        .address
        .map_or_else(|| format!("{host}:443"), |a| a.to_string());
    let mut steps = vec![format!(
        "echo | openssl s_client -connect {address} -servername {host} 2>/dev/null | openssl x509 -noout -subject -issuer -dates    # the certificate the {} route presents",
        o.route.as_str()
    )];
    let behind_cdn = o.cloudflare_address
        || o.response
            .as_ref()
            .is_some_and(super::recognise::via_cloudflare);
    steps.extend(renewal_steps(&RenewalFacts {
        on_edge: o.route == crate::observe::Route::Edge,
        behind_cdn,
        issuer: &cert.issuer,
        cloudflare_origin_ca: cert.cloudflare_origin_ca,
    }));
    steps
}

/// What the steps to renew a certificate depend on.
#[derive(Debug, Clone, Copy)]
pub struct RenewalFacts<'a> {
    /// The certificate visitors get (seen on the edge route), not only the origin's.
    pub on_edge: bool,
    /// The edge route's answers came through a CDN (Cloudflare's headers or address): the
    /// certificate visitors get is the CDN's own.
    pub behind_cdn: bool,
    pub issuer: &'a str,
    /// Issued by Cloudflare's Origin CA (`cloudflare_origin_ca` of the certificate's facts).
    pub cloudflare_origin_ca: bool,
}

/// How to renew a certificate, by who issues it: Cloudflare's Origin CA (its dashboard), the
/// CDN for the edge's own certificate, an ACME client (certbot) for Let's Encrypt and the like,
/// else the CA named in it.
pub fn renewal_steps(cert: &RenewalFacts<'_>) -> Vec<String> {
    if cert.cloudflare_origin_ca {
        return vec![
            "a Cloudflare Origin CA certificate: create a new one in the Cloudflare dashboard (SSL/TLS → Origin Server → Create Certificate), install it in nginx (ssl_certificate, ssl_certificate_key), then: nginx -t && systemctl reload nginx".to_string(),
        ];
    }
    let issuer = cert.issuer.to_ascii_lowercase();
    // The CAs Cloudflare's edge certificates come from.
    let cdn_issuer = ["cloudflare", "google trust", "ssl.com"]
        .iter()
        .any(|ca| issuer.contains(ca));
    if cert.on_edge && (cert.behind_cdn || cdn_issuer) {
        return vec![
            "the edge's own certificate, managed by the CDN: Cloudflare renews it itself; if the date does not move within days, look at the dashboard (SSL/TLS → Edge Certificates: a validation paused or failing, e.g. a CAA record that leaves out its CA)".to_string(),
        ];
    }
    let acme = ["let's encrypt", "zerossl", "buypass"]
        .iter()
        .any(|ca| issuer.contains(ca));
    let mut steps = vec![
        "certbot certificates    # which certificate this is, its names and its expiry".to_string(),
        "systemctl list-timers | grep -i certbot; journalctl -u certbot -n 50    # the renewal timer runs twice a day: did it, and why did it not renew?".to_string(),
        "certbot renew --dry-run && certbot renew && nginx -t && systemctl reload nginx".to_string(),
    ];
    if !acme {
        steps.insert(
            0,
            format!(
                "issued by {}: renew it with that CA (or move it to Let's Encrypt with certbot), install it, then nginx -t && systemctl reload nginx",
                cert.issuer
            ),
        );
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{PathRole, PhaseTimings, Route};

    fn cert(
        subject: &str,
        sans: &[&str],
        not_before: &str,
        not_after: &str,
        days: i64,
    ) -> CertFacts {
        CertFacts {
            subject: subject.into(),
            issuer: "CN=Some CA".into(),
            sans: sans.iter().map(|s| s.to_string()).collect(),
            not_before: not_before.into(),
            not_after: not_after.into(),
            days_left: days,
            self_signed: false,
            cloudflare_origin_ca: false,
            sha256: String::new(),
            serial: String::new(),
        }
    }

    fn seen(problem: CertProblem, name_matches: bool, chain: Vec<CertFacts>) -> Observation {
        Observation {
            route: Route::Edge,
            path_role: PathRole::Page,
            sample: 1,
            address: None,
            cloudflare_address: false,
            url: "https://example.com/".into(),
            // 1796674624 (UNIX), as the library's message put it.
            started_at: "2026-12-07T02:57:04Z".into(),
            timings_ms: PhaseTimings::default(),
            tls: Some(TlsFacts {
                version: None,
                cipher: None,
                alpn: None,
                verified: false,
                verify_error: Some(problem),
                verify_message: Some("invalid peer certificate: certificate expired: verification time 1796674624 (UNIX), but certificate is not valid after 1743465600 (53209024 seconds ago)".into()),
                name_matches: Some(name_matches),
                chain,
            }),
            response: None,
            error: None,
            cloudflare_error: None,
            redirects: Vec::new(),
            witness: None,
        }
    }

    #[test]
    fn certificate_problems_in_words() {
        let leaf = |days, not_after: &str| {
            cert(
                "CN=example.com",
                &["example.com", "www.example.com"],
                "2025-01-01T00:00:00Z",
                not_after,
                days,
            )
        };
        let expired = seen(
            CertProblem::Expired,
            true,
            vec![leaf(-616, "2025-04-01T00:00:00Z")],
        );
        assert_eq!(
            problem(&expired).unwrap(),
            "expired on 2025-04-01 (616 days ago)"
        );
        let today = seen(
            CertProblem::Expired,
            true,
            vec![leaf(-1, "2026-12-07T01:00:00Z")],
        );
        assert_eq!(problem(&today).unwrap(), "expired on 2026-12-07 (today)");
        let other = cert(
            "CN=other.test",
            &["other.test", "*.other.test"],
            "2025-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            25,
        );
        let mismatch = seen(CertProblem::NameMismatch, false, vec![other.clone()]);
        assert_eq!(
            problem(&mismatch).unwrap(),
            "is for other.test, *.other.test, not for the site's name example.com"
        );
        let mut both = other.clone();
        both.days_left = -3;
        both.not_after = "2026-12-04T00:00:00Z".into();
        let both = seen(CertProblem::Expired, false, vec![both]);
        assert_eq!(
            problem(&both).unwrap(),
            "expired on 2026-12-04 (3 days ago), and is for other.test, *.other.test, not for the site's name example.com"
        );
        let early = seen(
            CertProblem::NotYetValid,
            true,
            vec![cert(
                "CN=example.com",
                &["example.com"],
                "2027-01-01T00:00:00Z",
                "2028-01-01T00:00:00Z",
                389,
            )],
        );
        assert_eq!(
            problem(&early).unwrap(),
            "is not valid before 2027-01-01 (in 24 days)"
        );
        let chain = seen(
            CertProblem::Expired,
            true,
            vec![
                leaf(100, "2027-03-17T00:00:00Z"),
                cert(
                    "CN=Old Intermediate",
                    &[],
                    "2020-01-01T00:00:00Z",
                    "2026-11-01T00:00:00Z",
                    -36,
                ),
            ],
        );
        assert_eq!(
            problem(&chain).unwrap(),
            "comes with an expired certificate in its chain: CN=Old Intermediate expired on 2026-11-01 (36 days ago)"
        );
        // Nothing of the library's text.
        for o in [&expired, &mismatch, &both, &early, &chain] {
            assert!(!problem(o).unwrap().contains("UNIX"));
        }
    }

    #[test]
    fn days_left_are_never_negative_in_words() {
        assert_eq!(days_left(90), "90 days left");
        assert_eq!(days_left(1), "1 day left");
        assert_eq!(days_left(0), "less than a day left");
        assert_eq!(days_left(-1), "expired 1 day ago");
        assert_eq!(days_left(-616), "expired 616 days ago");
    }

    #[test]
    fn renewal_by_who_issues_it() {
        let facts = |on_edge, behind_cdn, issuer, origin_ca| RenewalFacts {
            on_edge,
            behind_cdn,
            issuer,
            cloudflare_origin_ca: origin_ca,
        };
        let steps = renewal_steps(&facts(
            false,
            false,
            "CN=CloudFlare Origin SSL Certificate Authority",
            true,
        ));
        assert!(
            steps[0].contains("Origin Server → Create Certificate"),
            "{steps:?}"
        );
        let steps = renewal_steps(&facts(
            true,
            true,
            "C=US, O=Google Trust Services, CN=WE1",
            false,
        ));
        assert!(steps[0].contains("managed by the CDN"), "{steps:?}");
        let steps = renewal_steps(&facts(false, false, "C=US, O=Let's Encrypt, CN=R11", false));
        assert!(
            steps[0].starts_with("certbot certificates") && steps[1].contains("list-timers"),
            "{steps:?}"
        );
        let steps = renewal_steps(&facts(
            false,
            false,
            "C=GB, O=Sectigo Limited, CN=Sectigo RSA",
            false,
        ));
        assert!(
            steps[0].starts_with("issued by C=GB, O=Sectigo Limited"),
            "{steps:?}"
        );
    }
}
