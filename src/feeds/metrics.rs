//! `metrics`: Prometheus text exposition (format 0.0.4) with blackbox_exporter's metric names,
//! so its dashboards and alert rules work, labelled by `site`, `route` and the `address` dialled;
//! plus the diagnosis as an info metric and the uptime figures.

use super::{FeedSnapshot, RequestFacts, WINDOWS};

/// The metric families, in the order they are written: (name, help).
const FAMILIES: [(&str, &str); 22] = [
    (
        "probe_success",
        "Whether the page request on this route got an answer below 400 (1) or not (0).",
    ),
    (
        "probe_duration_seconds",
        "How long the page request on this route took, all phases.",
    ),
    (
        "probe_http_status_code",
        "The page's HTTP status on this route (0: no answer).",
    ),
    (
        "probe_http_duration_seconds",
        "Duration of each phase of the page request on this route.",
    ),
    (
        "probe_ssl_earliest_cert_expiry",
        "Earliest expiry of the certificates this route presented, in Unix seconds.",
    ),
    (
        "probe_dns_lookup_time_seconds",
        "How long the DNS lookup for this route took.",
    ),
    (
        "probe_diagnosis_info",
        "The site's diagnosis: its status, the hop that broke and the cause (value always 1).",
    ),
    (
        "probe_uptime_ratio",
        "Share of the site's results that were not down, per window.",
    ),
    (
        "probe_last_run_timestamp_seconds",
        "When the site was last probed, in Unix seconds.",
    ),
    (
        "probe_region_success",
        "Whether this region's latest result of the site was not down (1) or was (0); with several regions only.",
    ),
    (
        "probe_region_info",
        "Each region's view of the site: its latest status and cause, the Cloudflare colo, whether it confirms the site down and counts for the quorum (value always 1).",
    ),
    (
        "probe_http_version",
        "The HTTP version of the page's answer on this route (1.1, 2).",
    ),
    (
        "probe_http_ssl",
        "Whether the page's final request on this route went over TLS (1) or not (0).",
    ),
    (
        "probe_http_redirects",
        "Redirects followed for the page on this route.",
    ),
    (
        "probe_http_content_length",
        "The Content-Length of the page's answer on this route (-1: none given).",
    ),
    (
        "probe_ip_protocol",
        "The IP version of the address dialled (4 or 6).",
    ),
    (
        "probe_ip_addr_hash",
        "FNV-1a (32 bit) of the address dialled: it changes when the address does.",
    ),
    (
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "Earliest expiry of the verified chain this route presented, in Unix seconds.",
    ),
    (
        "probe_ssl_last_chain_info",
        "The leaf certificate this route presented (value always 1).",
    ),
    (
        "probe_tls_version_info",
        "The TLS version negotiated on this route (value always 1).",
    ),
    (
        "probe_tls_cipher_info",
        "The TLS cipher suite negotiated on this route (value always 1).",
    ),
    (
        "probe_failure_info",
        "Why the page request on this route failed, when it did (value always 1).",
    ),
];
const SUCCESS: usize = 0;
const DURATION: usize = 1;
const STATUS_CODE: usize = 2;
const PHASES: usize = 3;
const CERT_EXPIRY: usize = 4;
const DNS: usize = 5;
const INFO: usize = 6;
const UPTIME: usize = 7;
const LAST_RUN: usize = 8;
const REGION_SUCCESS: usize = 9;
const REGION_INFO: usize = 10;
const HTTP_VERSION: usize = 11;
const HTTP_SSL: usize = 12;
const HTTP_REDIRECTS: usize = 13;
const CONTENT_LENGTH: usize = 14;
const IP_PROTOCOL: usize = 15;
const IP_HASH: usize = 16;
const CHAIN_EXPIRY: usize = 17;
const CHAIN_INFO: usize = 18;
const TLS_VERSION: usize = 19;
const TLS_CIPHER: usize = 20;
const FAILURE: usize = 21;
/// `/probe`'s own family (after `FAMILIES`): each route's success, labelled.
const ROUTE_SUCCESS: usize = FAMILIES.len();

/// FNV-1a, 32 bits, of an address's bytes (4 for IPv4, 16 for IPv6).
fn fnv1a32(ip: std::net::IpAddr) -> u32 {
    let bytes = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// Escapes a label value as the text format requires (backslash, double quote, newline), after
/// showing any other control character as a visible escape.
fn label_value(v: &str) -> String {
    crate::text::printable(v)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Every sample of every family, handed to `sample` with its family (an index of `FAMILIES`).
/// Takes one sample: its family (an index of `FAMILIES`), its labels and its value.
type Sample<'a> = dyn FnMut(usize, &[(&str, &str)], f64) + 'a;

fn each_sample(snapshot: &FeedSnapshot, sample: &mut Sample<'_>) {
    for site in &snapshot.sites {
        let name = site.name;
        for ((window, _), share) in WINDOWS.iter().zip(site.uptime()) {
            if let Some(share) = share {
                sample(UPTIME, &[("site", name), ("window", window)], share);
            }
        }
        for region in site.regions.iter() {
            let Some(seen) = &region.seen else {
                continue;
            };
            let labels = [("site", name), ("region", &*region.region)];
            let up = if seen.status == crate::observe::Status::Down {
                0.0
            } else {
                1.0
            };
            sample(REGION_SUCCESS, &labels, up);
            let yes_no = |b: bool| if b { "true" } else { "false" };
            sample(
                REGION_INFO,
                &[
                    ("site", name),
                    ("region", &*region.region),
                    ("status", seen.status.as_str()),
                    ("cause", seen.cause.as_str()),
                    ("colo", seen.colo.as_deref().unwrap_or("")),
                    ("confirms_down", yes_no(region.confirms_down)),
                    ("counted", yes_no(region.live)),
                ],
                1.0,
            );
        }
        let Some(latest) = &site.latest else {
            continue;
        };
        sample(
            LAST_RUN,
            &[("site", name)],
            latest.at.unix_timestamp() as f64,
        );
        let d = &latest.diagnosis;
        sample(
            INFO,
            &[
                ("site", name),
                ("status", d.status.as_str()),
                ("hop", d.hop.as_str()),
                ("cause", d.cause.as_str()),
                ("confidence", d.confidence.as_str()),
            ],
            1.0,
        );
        for request in &latest.requests {
            let address = request.address.map(|a| a.to_string()).unwrap_or_default();
            let labels = [
                ("site", name),
                ("route", request.route.as_str()),
                ("address", address.as_str()),
            ];
            request_samples(request, &labels, sample);
        }
    }
}

/// The samples of one page request, each with `labels` (and its own where the family has them).
fn request_samples(request: &RequestFacts, labels: &[(&str, &str)], sample: &mut Sample<'_>) {
    sample(SUCCESS, labels, if request.answered { 1.0 } else { 0.0 });
    let t = request.timings;
    sample(DURATION, labels, t.total() / 1000.0);
    sample(STATUS_CODE, labels, f64::from(request.status));
    // blackbox_exporter's phase names.
    for (phase, ms) in [
        ("resolve", t.dns()),
        ("connect", t.connect()),
        ("tls", t.tls()),
        ("processing", t.ttfb()),
        ("transfer", t.transfer()),
    ] {
        let mut with_phase = labels.to_vec();
        with_phase.push(("phase", phase));
        sample(PHASES, &with_phase, ms.unwrap_or(0.0) / 1000.0);
    }
    if let Some(ms) = t.dns() {
        sample(DNS, labels, ms / 1000.0);
    }
    if let Some(expiry) = request.earliest_cert_expiry {
        sample(CERT_EXPIRY, labels, expiry as f64);
    }
    if request.http_version > 0 {
        sample(HTTP_VERSION, labels, f64::from(request.http_version) / 10.0);
        sample(HTTP_REDIRECTS, labels, f64::from(request.redirects));
        sample(CONTENT_LENGTH, labels, request.content_length as f64);
    }
    sample(
        HTTP_SSL,
        labels,
        if request.tls.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(ip) = request.address.map(|a| a.ip()) {
        let version = if ip.is_ipv4() { 4.0 } else { 6.0 };
        sample(IP_PROTOCOL, labels, version);
        sample(IP_HASH, labels, f64::from(fnv1a32(ip)));
    }
    if let Some(tls) = &request.tls {
        if let Some(expiry) = tls.chain_expiry {
            sample(CHAIN_EXPIRY, labels, expiry as f64);
        }
        let mut info = labels.to_vec();
        info.extend([
            ("fingerprint_sha256", &*tls.leaf_sha256),
            ("subject", &*tls.leaf_subject),
            ("issuer", &*tls.leaf_issuer),
            ("subjectalternative", &*tls.leaf_sans),
            ("serialnumber", &*tls.leaf_serial),
        ]);
        sample(CHAIN_INFO, &info, 1.0);
        let mut version = labels.to_vec();
        version.push(("version", &*tls.version));
        sample(TLS_VERSION, &version, 1.0);
        let mut cipher = labels.to_vec();
        cipher.push(("cipher", &*tls.cipher));
        sample(TLS_CIPHER, &cipher, 1.0);
    }
    if let Some(reason) = &request.failure {
        let mut failure = labels.to_vec();
        failure.push(("reason", &**reason));
        sample(FAILURE, &failure, 1.0);
    }
}

/// The exposition, written family after family as it is made: one pass over the sites per
/// family, so no family's text is held aside (thousands of sites make megabytes).
pub(super) fn exposition(snapshot: &FeedSnapshot, out: &mut dyn std::fmt::Write) {
    for (family, (name, help)) in FAMILIES.iter().enumerate() {
        let mut started = false;
        each_sample(snapshot, &mut |of, labels, value| {
            if of != family {
                return;
            }
            if !started {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                started = true;
            }
            let _ = out.write_str(name);
            let _ = out.write_char('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    let _ = out.write_char(',');
                }
                let _ = write!(out, "{k}=\"{}\"", label_value(v));
            }
            let _ = writeln!(out, "}} {}", number(value));
        });
    }
}

/// A sample value: whole numbers as such, others to the microsecond (no float noise).
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        let text = format!("{value:.6}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A sample kept to be written: its family, labels and value.
type Kept = (usize, Vec<(String, String)>, f64);

/// blackbox_exporter's answer to `/probe?target=…` for one report: the families it writes for
/// an HTTP probe, unlabelled, of the page request through the edge (what visitors load, what
/// a blackbox target measures), then ours: the diagnosis, and each route's success labelled by
/// route and address.
pub fn probe_exposition(report: &crate::engine::ProbeReport, out: &mut dyn std::fmt::Write) {
    let latest = super::LatestFacts::of(
        time::OffsetDateTime::now_utc(),
        report.clone(),
        &mut super::Summaries::default(),
    );
    let mut samples: Vec<Kept> = Vec::new();
    let mut keep = |family: usize, labels: &[(&str, &str)], value: f64| {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        samples.push((family, labels, value));
    };
    let edge = latest
        .requests
        .iter()
        .find(|r| r.route == crate::observe::Route::Edge);
    if let Some(request) = edge {
        request_samples(request, &[], &mut keep);
    } else {
        keep(SUCCESS, &[], 0.0);
    }
    let d = &latest.diagnosis;
    keep(
        INFO,
        &[
            ("status", d.status.as_str()),
            ("hop", d.hop.as_str()),
            ("cause", d.cause.as_str()),
            ("confidence", d.confidence.as_str()),
        ],
        1.0,
    );
    for request in latest.requests.iter() {
        let address = request.address.map(|a| a.to_string()).unwrap_or_default();
        let labels = [
            ("route", request.route.as_str()),
            ("address", address.as_str()),
        ];
        keep(
            ROUTE_SUCCESS,
            &labels,
            if request.answered { 1.0 } else { 0.0 },
        );
    }
    let route_family = ("probe_route_success", "Whether the page request on this route and address got an answer below 400 (1) or not (0).");
    let families = FAMILIES
        .iter()
        .enumerate()
        .map(|(i, f)| (i, *f))
        .chain(std::iter::once((ROUTE_SUCCESS, route_family)));
    for (family, (name, help)) in families {
        let mut started = false;
        for (_, labels, value) in samples.iter().filter(|(f, _, _)| *f == family) {
            if !started {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} gauge");
                started = true;
            }
            let _ = out.write_str(name);
            if !labels.is_empty() {
                let _ = out.write_char('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        let _ = out.write_char(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", label_value(v));
                }
                let _ = out.write_char('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
}
