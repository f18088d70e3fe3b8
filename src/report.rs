//! Output: the terminal table and the `--json` document. Reads a `ProbeReport`; decides nothing.
//!
//! Everything in the table that a server or the user wrote (headers, certificate names, error
//! messages, the evidence quoting them) goes through `text::printable`: no control character
//! reaches the terminal. JSON escapes them itself.

use std::fmt::Write as _;

use crate::diagnose::Diagnosis;
use crate::engine::ProbeReport;
use crate::observe::witness::Witness;
use crate::observe::{DnsAnswer, Observation, TlsFacts};
use crate::text::printable;

/// The report as one JSON object (schema 1), pretty-printed, with a trailing newline.
pub fn render_json(report: &ProbeReport) -> String {
    let mut text = crate::text::json_pretty(report);
    text.push('\n');
    text
}

/// The report as a human-readable table.
pub fn render_table(report: &ProbeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "probe {}", printable(&report.target));
    match &report.resolution {
        Some(r) => {
            let _ = writeln!(
                out,
                "dns     {} via {}: {} · {}",
                printable(&r.name),
                printable(&r.resolver),
                printable(&dns_answer(&r.a)),
                printable(&dns_answer(&r.aaaa))
            );
        }
        None => {
            let _ = writeln!(out, "dns     not asked: the edge address was given");
        }
    }
    out.push('\n');

    let several_samples = report.observations.iter().any(|o| o.sample > 1);
    let mut header = vec!["ROUTE", "ADDRESS", "PATH"];
    if several_samples {
        header.push("#");
    }
    header.extend([
        "STATUS", "HTTP", "SERVER", "CF-RAY", "DNS", "CONNECT", "TLS", "TTFB", "TRANSFER",
        "TOTAL ms",
    ]);
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for o in &report.observations {
        let cells = row(o, several_samples);
        rows.push(cells.iter().map(|c| printable(c).into_owned()).collect());
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            continue;
        }
        let o = &report.observations[i - 1];
        if let Some(tls) = &o.tls {
            let _ = writeln!(out, "  cert   {}", printable(&cert_summary(tls)));
        }
        for url in &o.redirects {
            let _ = writeln!(out, "  via    {}", printable(url));
        }
        if let Some(w) = &o.witness {
            let _ = writeln!(out, "  status {}", printable(&witness_summary(o, w)));
        }
        if let Some(e) = &o.error {
            let _ = writeln!(
                out,
                "  error  {} {}: {}",
                e.phase.as_str(),
                e.kind.as_str(),
                printable(&e.message)
            );
        }
    }
    out.push('\n');
    if !report.origin_given {
        let _ = writeln!(
            out,
            "origin  not given: only the edge route was probed (add --origin ADDR to compare both routes)"
        );
        out.push('\n');
    }
    render_diagnosis(&mut out, &report.diagnosis);
    out
}

/// The diagnosis block: verdict line, summary, evidence, next steps, alternatives.
fn render_diagnosis(out: &mut String, d: &Diagnosis) {
    let _ = writeln!(
        out,
        "{}  {} · {} ({})",
        d.status.as_str().to_uppercase(),
        d.hop.as_str(),
        d.cause.as_str(),
        d.confidence.as_str()
    );
    let _ = writeln!(out, "{}", printable(&d.summary));
    let labelled = |out: &mut String, label: &str, lines: &[String]| {
        for (i, line) in lines.iter().enumerate() {
            let head = if i == 0 { label } else { "" };
            let _ = writeln!(out, "{head:<11}{}", printable(line));
        }
    };
    labelled(out, "evidence:", &d.evidence);
    labelled(out, "next:", &d.next_steps);
    let alternatives: Vec<String> = d
        .alternatives
        .iter()
        .map(|a| format!("{} ({})", a.cause.as_str(), a.why))
        .collect();
    labelled(out, "also:", &alternatives);
}

fn row(o: &Observation, with_sample: bool) -> Vec<String> {
    let dash = || "-".to_string();
    let ms = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.1}"));
    let response = o.response.as_ref();
    let mut cells = vec![
        o.route.as_str().to_string(),
        o.address.map_or_else(dash, |a| a.to_string()),
        o.path_role.as_str().to_string(),
    ];
    if with_sample {
        cells.push(o.sample.to_string());
    }
    cells.extend([
        response.map_or_else(dash, |r| r.status.to_string()),
        response.map_or_else(dash, |r| r.http_version.clone()),
        response
            .and_then(|r| r.headers.server.clone())
            .unwrap_or_else(dash),
        response
            .and_then(|r| r.headers.cf_ray.clone())
            .unwrap_or_else(dash),
        ms(o.timings_ms.dns),
        ms(o.timings_ms.connect),
        ms(o.timings_ms.tls),
        ms(o.timings_ms.ttfb),
        ms(o.timings_ms.transfer),
        format!("{:.1}", o.timings_ms.total),
    ]);
    cells
}

/// One line of what a status page said (the diagnosis quotes what matters of it), its workers
/// counted as the diagnosis counts them.
fn witness_summary(o: &Observation, witness: &Witness) -> String {
    match witness {
        Witness::FpmStatus(s) => format!(
            "PHP-FPM pool {} ({}): {}, listen queue {}, max children reached {}, {} accepted, up {}",
            s.pool,
            s.process_manager,
            s.workers(&request_path(&o.url)).describe(),
            // As the diagnosis says it: PHP-FPM measures its queue only on TCP (Linux).
            if s.listen_queue_len > 0 {
                format!("{} of {}", s.listen_queue, s.listen_queue_len)
            } else {
                "not measurable (a unix socket)".to_string()
            },
            s.max_children_reached,
            s.accepted_conn,
            crate::text::duration(std::time::Duration::from_secs(s.start_since))
        ),
        Witness::NginxStatus(s) => format!(
            "nginx: {} (reading {}, writing {}, waiting {}), {} accepted, {} handled, {}",
            crate::words::plural(s.active, "connection", "connections"),
            s.reading,
            s.writing,
            s.waiting,
            s.accepts,
            s.handled,
            crate::words::plural(s.requests, "request", "requests")
        ),
        Witness::Unreadable(why) => format!("unreadable: {why}"),
    }
}

/// The path a request asked for, without its query.
fn request_path(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default()
}

fn dns_answer(answer: &DnsAnswer) -> String {
    let took = format!("{:.1} ms", answer.duration_ms);
    match &answer.error {
        Some(e) => format!("{} none: {} ({took})", answer.record_type, e.kind.as_str()),
        None => {
            let addresses: Vec<String> = answer.addresses.iter().map(|a| a.to_string()).collect();
            let ttl = answer.ttl.map(|t| format!("ttl {t}, ")).unwrap_or_default();
            let cloudflare = if answer.cloudflare {
                " [cloudflare]"
            } else {
                ""
            };
            format!(
                "{} {}{cloudflare} ({ttl}{took})",
                answer.record_type,
                addresses.join(" ")
            )
        }
    }
}

fn cert_summary(tls: &TlsFacts) -> String {
    let Some(leaf) = tls.leaf() else {
        return "no certificate seen".to_string();
    };
    let mut parts = vec![
        leaf.subject.clone(),
        format!("issuer {}", leaf.issuer),
        crate::diagnose::certificate::days_left(leaf.days_left),
    ];
    if leaf.cloudflare_origin_ca {
        parts.push("Cloudflare Origin CA".into());
    }
    if tls.name_matches == Some(false) {
        parts.push("does not cover the site's name".into());
    }
    parts.push(if tls.verified {
        "verified".to_string()
    } else {
        let problem = tls.verify_error.map_or("invalid", |p| p.as_str());
        format!("NOT verified: {problem}")
    });
    let mut text = parts.join(" · ");
    if let (Some(version), Some(alpn)) = (&tls.version, &tls.alpn) {
        let _ = write!(text, " · {version} {alpn}");
    } else if let Some(version) = &tls.version {
        let _ = write!(text, " · {version}");
    }
    text
}
