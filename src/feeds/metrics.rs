//! `metrics`: Prometheus text exposition (format 0.0.4) with blackbox_exporter's metric names,
//! so its dashboards and alert rules work, labelled by `site`, `route` and the `address` dialled;
//! plus the diagnosis as an info metric and the uptime figures.

use super::{FeedSnapshot, WINDOWS};

/// The metric families, in the order they are written: (name, help).
const FAMILIES: [(&str, &str); 11] = [
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
            sample(SUCCESS, &labels, if request.answered { 1.0 } else { 0.0 });
            let t = request.timings;
            sample(DURATION, &labels, t.total() / 1000.0);
            sample(STATUS_CODE, &labels, f64::from(request.status));
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
                sample(DNS, &labels, ms / 1000.0);
            }
            if let Some(expiry) = request.earliest_cert_expiry {
                sample(CERT_EXPIRY, &labels, expiry as f64);
            }
        }
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
