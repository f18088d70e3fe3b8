//! `metrics`: Prometheus text exposition (format 0.0.4) with blackbox_exporter's metric names,
//! so its dashboards and alert rules work, labelled by `site`, `route` and the `address` dialled;
//! plus the diagnosis as an info metric and the uptime figures.

use std::fmt::Write as _;

use super::{FeedSnapshot, WINDOWS};

/// One metric family: its samples are written together, after its HELP and TYPE. Sample lines
/// go straight into text (no per-sample allocations kept: thousands of sites make megabytes).
struct Family {
    name: &'static str,
    help: &'static str,
    lines: String,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            lines: String::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        self.lines.push_str(self.name);
        self.lines.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.lines.push(',');
            }
            let _ = write!(self.lines, "{k}=\"{}\"", label_value(v));
        }
        let _ = writeln!(self.lines, "}} {}", number(value));
    }
}

/// Escapes a label value as the text format requires (backslash, double quote, newline), after
/// showing any other control character as a visible escape.
fn label_value(v: &str) -> String {
    crate::text::printable(v)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn exposition(snapshot: &FeedSnapshot) -> String {
    let mut success = Family::new(
        "probe_success",
        "Whether the page request on this route got an answer below 400 (1) or not (0).",
    );
    let mut duration = Family::new(
        "probe_duration_seconds",
        "How long the page request on this route took, all phases.",
    );
    let mut status_code = Family::new(
        "probe_http_status_code",
        "The page's HTTP status on this route (0: no answer).",
    );
    let mut phases = Family::new(
        "probe_http_duration_seconds",
        "Duration of each phase of the page request on this route.",
    );
    let mut cert_expiry = Family::new(
        "probe_ssl_earliest_cert_expiry",
        "Earliest expiry of the certificates this route presented, in Unix seconds.",
    );
    let mut dns = Family::new(
        "probe_dns_lookup_time_seconds",
        "How long the DNS lookup for this route took.",
    );
    let mut info = Family::new(
        "probe_diagnosis_info",
        "The site's diagnosis: its status, the hop that broke and the cause (value always 1).",
    );
    let mut uptime = Family::new(
        "probe_uptime_ratio",
        "Share of the site's results that were not down, per window.",
    );
    let mut last_run = Family::new(
        "probe_last_run_timestamp_seconds",
        "When the site was last probed, in Unix seconds.",
    );
    for site in &snapshot.sites {
        let name = site.name.as_str();
        for ((window, _), share) in WINDOWS.iter().zip(site.uptime) {
            if let Some(share) = share {
                uptime.add(&[("site", name), ("window", window)], share);
            }
        }
        let Some(latest) = &site.latest else {
            continue;
        };
        last_run.add(&[("site", name)], latest.at.unix_timestamp() as f64);
        let d = &latest.diagnosis;
        info.add(
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
            success.add(&labels, if request.answered { 1.0 } else { 0.0 });
            let t = &request.timings;
            duration.add(&labels, t.total / 1000.0);
            status_code.add(&labels, f64::from(request.status));
            // blackbox_exporter's phase names.
            for (phase, ms) in [
                ("resolve", t.dns),
                ("connect", t.connect),
                ("tls", t.tls),
                ("processing", t.ttfb),
                ("transfer", t.transfer),
            ] {
                let mut with_phase = labels.to_vec();
                with_phase.push(("phase", phase));
                phases.add(&with_phase, ms.unwrap_or(0.0) / 1000.0);
            }
            if let Some(ms) = t.dns {
                dns.add(&labels, ms / 1000.0);
            }
            if let Some(expiry) = request.earliest_cert_expiry {
                cert_expiry.add(&labels, expiry as f64);
            }
        }
    }
    let mut out = String::new();
    for family in [
        success,
        duration,
        status_code,
        phases,
        cert_expiry,
        dns,
        info,
        uptime,
        last_run,
    ] {
        if family.lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} gauge", family.name);
        out.push_str(&family.lines);
    }
    out
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
