//! What a checked config will do, in words (`probe check-config`) and as JSON
//! (`check-config --json`). Everything shown came from the file: escaped, never raw, and secrets
//! only by the variables that hold them.

use std::path::Path;
use std::time::Duration;

use crate::settings::Nameserver;
use crate::words;

use super::{Loaded, Site, SmtpSecurity};

/// What a checked config will do, in a few lines.
pub fn explain(path: &Path, loaded: &Loaded) -> String {
    use std::fmt::Write as _;
    // Every string here came from the file: shown escaped, never raw, on a terminal.
    use crate::text::printable as p;
    let c = &loaded.config;
    let d = words::duration;
    let n = |n: u32, thing: &str, things: &str| words::plural(u64::from(n), thing, things);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: OK, {}",
        p(&path.display().to_string()),
        words::plural(c.sites.len() as u64, "site", "sites")
    );
    for site in &c.sites {
        let probe = &site.probe;
        let origins: Vec<String> = probe.origins.iter().map(|o| o.to_string()).collect();
        let origins = if origins.is_empty() {
            "no origin".to_string()
        } else {
            format!("origin {}", origins.join(", "))
        };
        let static_path = probe
            .static_path
            .as_deref()
            .map(|s| format!(", static {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {}  {origins}{static_path}  every {}, timeout {}, budget {}",
            p(&site.name),
            p(probe.target.url()),
            d(site.interval),
            d(probe.shared.timeout),
            probe.shared.diagnose.budget.describe()
        );
        let more = site_details(site, &c.alerts.to);
        if !more.is_empty() {
            let _ = writeln!(out, "    {}", p(&more.join(" · ")));
        }
    }
    if !c.extra_roots.is_empty() {
        let _ = writeln!(
            out,
            "trusted in addition (defaults.ca_file): {}, on both routes",
            words::plural(
                c.extra_roots.len() as u64,
                "CA certificate",
                "CA certificates"
            )
        );
    }
    // Turns at the origins are the process's, the same for every site (`defaults.per_origin`).
    if let Some(site) = c.sites.iter().find(|s| !s.probe.origins.is_empty()) {
        let _ = writeln!(
            out,
            "origins: at most {} at once to each origin address, over every site and route (a status page read takes them all)",
            n(site.probe.shared.per_origin, "request", "requests")
        );
    }
    let a = &c.alerts;
    let to = if a.to.is_empty() {
        "nobody (set alerts.to)".to_string()
    } else {
        p(&a.to.join(", ")).into_owned()
    };
    let _ = writeln!(
        out,
        "alerts: to {to}; a failure counts after {} and {}; recovery after {}; reminders every {}",
        retries(a.confirm_retries, a.retry_spacing),
        n(a.confirm_runs, "failing run", "failing runs"),
        n(a.recover_runs, "healthy run", "healthy runs"),
        d(a.remind_every)
    );
    let (w, i) = (&a.warning, &a.intermittent);
    let _ = writeln!(
        out,
        "warnings: after {}, closed after {} without, reminders every {}; intermittent: {}; shared failures: {}",
        n(w.confirm_runs, "degraded run", "degraded runs"),
        n(w.recover_runs, "run", "runs"),
        d(w.remind_every),
        if i.enabled {
            format!(
                "{} in {}",
                n(i.min_failures, "failure", "failures"),
                n(i.window_runs, "run", "runs")
            )
        } else {
            "off".to_string()
        },
        if a.group { "one incident for the sites that share one (one number, one message each time)" } else { "each site told alone" }
    );
    if a.quorum > 1 {
        let _ = writeln!(
            out,
            "quorum: an incident opens when {} regions confirm a site down (each prober names its region with --region or PROBE_REGION; a region silent for 3 intervals is not waited for)",
            a.quorum
        );
    }
    match &c.smtp {
        Some(s) => {
            let security = match s.security {
                SmtpSecurity::Starttls => "STARTTLS",
                SmtpSecurity::Tls => "TLS",
                SmtpSecurity::Plain => "no encryption",
            };
            let auth = match (&s.username, &s.password_env) {
                (Some(u), Some(var)) => {
                    format!(", as {} with the password from ${}", p(u), p(var))
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "smtp: {}:{} with {security}{auth}, from {}",
                p(&s.host),
                s.port,
                p(&s.from)
            );
        }
        None => {
            let _ = writeln!(out, "smtp: none (no mail is sent)");
        }
    }
    let _ = writeln!(
        out,
        "store: {}, results kept {}",
        p(&c.store.describe()),
        d(c.retention)
    );
    if !c.maintenance.is_empty() {
        let _ = writeln!(
            out,
            "maintenance: {}",
            words::plural(c.maintenance.len() as u64, "window", "windows")
        );
    }
    let _ = writeln!(
        out,
        "feeds: {:?}{}, {}",
        p(&c.feeds.title),
        c.feeds
            .url
            .as_deref()
            .map_or(String::new(), |u| format!(" at {}", p(u))),
        if c.feeds.public {
            "public (no server versions, addresses or commands on the page and status.json)"
        } else {
            "the operator's view (everything on the page and status.json)"
        }
    );
    for hook in &c.webhooks {
        let _ = writeln!(
            out,
            "webhook: {}{}{}",
            p(&crate::text::endpoint_for_display(&hook.url)),
            if hook.secret_env.is_some() {
                ", signed"
            } else {
                ""
            },
            if hook.sites.is_empty() {
                String::new()
            } else {
                format!(", for {}", p(&hook.sites.join(", ")))
            }
        );
    }
    for n in &c.notify {
        let mut parts = vec![format!("{} ({})", n.id, n.provider.as_str())];
        if let Some(var) = &n.secret_env {
            parts.push(format!("secret from ${var}"));
        }
        if let Some(url) = &n.url {
            parts.push(crate::text::endpoint_for_display(url));
        }
        if let Some(chat) = &n.chat_id {
            parts.push(format!("chat {chat}"));
        }
        if n.provider.pages() {
            parts.push("opens a page on trouble, resolves it on recovery".into());
        }
        if !n.severities.is_empty() {
            parts.push(format!("severity {}", n.severities.join(", ")));
        }
        if !n.sites.is_empty() {
            parts.push(format!("for {}", n.sites.join(", ")));
        }
        let _ = writeln!(out, "notify: {}", p(&parts.join(", ")));
    }
    if !c.control_checks.is_empty() {
        let urls: Vec<&str> = c.control_checks.iter().map(|t| t.url()).collect();
        let _ = writeln!(out, "control checks: {}", p(&urls.join(", ")));
    }
    for warning in &loaded.warnings {
        let _ = writeln!(out, "warning: {}", p(warning));
    }
    out
}

/// A site's settings beyond its URL, origins, interval and timeout that differ from the
/// defaults, in words.
fn site_details(site: &Site, default_to: &[String]) -> Vec<String> {
    let probe = &site.probe;
    let shared = &probe.shared;
    let diagnose = &shared.diagnose;
    let mut more = Vec::new();
    if let Some(edge) = probe.edge {
        more.push(format!("edge route dials {edge} (not DNS)"));
    }
    if let Nameserver::At(server) = shared.nameserver {
        more.push(format!("DNS asked of {server}"));
    }
    if !diagnose.expect_status.is_empty() {
        let list: Vec<String> = diagnose.expect_status.iter().map(u16::to_string).collect();
        more.push(format!("healthy page answers {}", list.join(" or ")));
    }
    if shared.follow_redirects > 0 {
        more.push(format!(
            "follows up to {}",
            words::plural(u64::from(shared.follow_redirects), "redirect", "redirects")
        ));
    }
    if !shared.redirect_hosts.is_empty() {
        more.push(format!(
            "redirects may go to {}",
            shared.redirect_hosts.join(", ")
        ));
    }
    let days: Vec<String> = diagnose
        .cert_warning_days
        .iter()
        .map(i64::to_string)
        .collect();
    if days != ["14", "7", "3", "1"] {
        let unit = if days == ["1"] { "day" } else { "days" };
        more.push(format!("certificate notices at {} {unit}", days.join("/")));
    }
    if shared.samples > 1 {
        more.push(format!("each request {} times", shared.samples));
    }
    if shared.burst > 1 {
        more.push(format!("page {} times at once", shared.burst));
    }
    if diagnose.cloudflare_edge_declared {
        more.push("edge declared Cloudflare".to_string());
    }
    if let Some(w) = site.probe.witnesses.as_deref() {
        let mut pages = Vec::new();
        if let Some(p) = &w.fpm_status {
            pages.push(format!("PHP-FPM status {p}"));
        }
        if let Some(p) = &w.nginx_status {
            pages.push(format!("nginx stub_status {p}"));
        }
        let header = w.header.as_ref().map_or(String::new(), |h| {
            let set = if h.value.is_some() { "" } else { ", not set" };
            format!(" with {} from ${}{set}", h.name, h.value_env)
        });
        more.push(format!("reads {}{header}", pages.join(" and ")));
    }
    if *site.alert_to != *default_to {
        more.push(format!("alerts to {}", site.alert_to.join(", ")));
    }
    more
}

/// A site's time budgets in seconds, `null` for a phase that is not judged.
fn budget_json(budget: &crate::diagnose::Budget) -> serde_json::Value {
    crate::diagnose::BudgetPhase::ALL
        .into_iter()
        .map(|phase| {
            (
                format!("{}_s", phase.key()),
                serde_json::json!(budget.get(phase).map(|d| d.as_secs_f64())),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The checked config, every effective setting, as JSON (`probe check-config --json`); secrets
/// are named by their variables, never shown, and webhook URLs only by their endpoint.
pub fn summary_json(path: &Path, loaded: &Loaded) -> serde_json::Value {
    use serde_json::json;
    let c = &loaded.config;
    let secs = |d: Duration| d.as_secs_f64();
    let sites: Vec<serde_json::Value> = c
        .sites
        .iter()
        .map(|site| {
            let probe = &site.probe;
            let shared = &probe.shared;
            json!({
                "name": site.name,
                "url": probe.target.url(),
                "edge": probe.edge.map(|e| e.to_string()),
                "resolver": match shared.nameserver {
                    Nameserver::At(server) => Some(server.to_string()),
                    Nameserver::System => None,
                },
                "origins": probe.origins.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                "static_path": probe.static_path.as_deref(),
                "interval_s": secs(site.interval),
                "timeout_s": secs(shared.timeout),
                "per_origin": shared.per_origin,
                "budget": budget_json(&shared.diagnose.budget),
                "cert_warning_days": shared.diagnose.cert_warning_days,
                "expect_status": shared.diagnose.expect_status,
                "follow_redirects": shared.follow_redirects,
                "redirect_hosts": shared.redirect_hosts,
                "samples": shared.samples,
                "burst": shared.burst,
                "cloudflare_edge": shared.diagnose.cloudflare_edge_declared,
                "fpm_status": probe.witnesses.as_ref().and_then(|w| w.fpm_status.as_deref()),
                "nginx_status": probe.witnesses.as_ref().and_then(|w| w.nginx_status.as_deref()),
                "status_header": probe.witnesses.as_ref().and_then(|w| w.header.as_ref()).map(|h| json!({
                    "name": h.name.as_str(),
                    "value_env": h.value_env,
                    "set": h.value.is_some(),
                })),
                "alert_to": &*site.alert_to,
            })
        })
        .collect();
    let a = &c.alerts;
    json!({
        "file": path.display().to_string(),
        "sites": sites,
        "extra_trusted_cas": c.extra_roots.len(),
        "alerts": {
            "to": a.to,
            "confirm_retries": a.confirm_retries,
            "retry_spacing_s": secs(a.retry_spacing),
            "confirm_runs": a.confirm_runs,
            "recover_runs": a.recover_runs,
            "remind_every_s": secs(a.remind_every),
            "quorum": a.quorum,
            "warning": {
                "confirm_runs": a.warning.confirm_runs,
                "recover_runs": a.warning.recover_runs,
                "remind_every_s": secs(a.warning.remind_every),
            },
            "intermittent": {
                "enabled": a.intermittent.enabled,
                "window_runs": a.intermittent.window_runs,
                "min_failures": a.intermittent.min_failures,
            },
            "group": a.group,
        },
        "smtp": c.smtp.as_ref().map(|s| json!({
            "host": s.host,
            "port": s.port,
            "security": match s.security {
                SmtpSecurity::Starttls => "starttls",
                SmtpSecurity::Tls => "tls",
                SmtpSecurity::Plain => "plain",
            },
            "username": s.username,
            "password_env": s.password_env,
            "allow_plaintext_auth": s.allow_plaintext_auth,
            "from": s.from,
            "ca_file": s.ca_file.as_ref().map(|f| f.display().to_string()),
            "timeout_s": secs(s.timeout),
        })),
        "store": c.store.describe(),
        "retention_s": secs(c.retention),
        "feeds": { "title": c.feeds.title, "url": c.feeds.url, "public": c.feeds.public },
        "webhooks": c.webhooks.iter().map(|h| json!({
            "endpoint": crate::text::endpoint_for_display(&h.url),
            "signed": h.secret_env.is_some(),
            "secret_env": h.secret_env,
            "sites": h.sites,
        })).collect::<Vec<_>>(),
        "notify": c.notify.iter().map(|n| json!({
            "id": n.id,
            "type": n.provider.as_str(),
            "secret_env": n.secret_env,
            "url": n.url.as_deref().map(crate::text::endpoint_for_display),
            "chat_id": n.chat_id,
            "severity": n.severities,
            "sites": n.sites,
        })).collect::<Vec<_>>(),
        "maintenance": c.maintenance.iter().map(|w| json!({
            "sites": w.sites,
            "start": crate::text::rfc3339(w.start),
            "end": crate::text::rfc3339(w.end),
            "reason": w.reason,
        })).collect::<Vec<_>>(),
        "control_checks": c.control_checks.iter().map(|t| t.url()).collect::<Vec<_>>(),
        "warnings": loaded.warnings,
    })
}

/// In-run retries and their spacing: `1 retry (5 seconds later)`, `2 retries 5 seconds
/// apart`, `no in-run retry`.
fn retries(count: u32, spacing: Duration) -> String {
    match count {
        0 => "no in-run retry".to_string(),
        1 => format!("1 retry ({} later)", words::duration(spacing)),
        n => format!("{n} retries {} apart", words::duration(spacing)),
    }
}
