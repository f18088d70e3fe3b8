//! A working site slower than its budget. When the page is slow and the static file beside it
//! is not, on the same route, the time is PHP's (`origin_slow`, hop `origin_fpm`): the network,
//! TLS and nginx answered the file at once. Slowness that is not PHP's — DNS, connect, TLS, the
//! static file itself, the edge in front of a fast origin, or a page with no static file to
//! compare — is `slow`. Every sentence names the budget's setting.

use crate::observe::{Observation, Route};

use super::budget::{Budget, BudgetPhase};
use super::rules::{describe, format_seconds, lead_with, Verdict, View};
use super::{Cause, Confidence};

/// The page must take this many times the static file's time (as well as its budget) for the
/// difference to be PHP's: a static file that is itself slow says the host or the network is.
const PHP_SLOWER: f64 = 4.0;

/// The slowest way a working site is over its budget, with `evidence` (each route's lines)
/// after the decisive ones; `None` when every phase is within its budget.
pub(super) fn judge(view: &View<'_>, budget: &Budget, evidence: Vec<String>) -> Option<Verdict> {
    php_slow(view, budget, evidence.clone()).or_else(|| over_budget(view, budget, evidence))
}

/// The page over its time-to-first-byte budget and far slower than the static file the same
/// web server served on the same route: PHP is slow, not the network.
fn php_slow(view: &View<'_>, budget: &Budget, mut evidence: Vec<String>) -> Option<Verdict> {
    // The origin route times the origin alone; without it, the edge route tells the same when
    // the static file did not come from the edge's cache.
    let through_edge = view.origin_page.is_empty();
    let (pages, statics) = if through_edge {
        (&view.edge_page, &view.edge_static)
    } else {
        (&view.origin_page, &view.origin_static)
    };
    let page = slowest(pages, BudgetPhase::Ttfb)?;
    let file = slowest(statics, BudgetPhase::Ttfb)?;
    let (page_ms, file_ms) = (page.timings_ms.ttfb?, file.timings_ms.ttfb?);
    let php_slow = page_ms > budget.ttfb_ms()
        && file_ms <= budget.ttfb_ms()
        && page_ms >= PHP_SLOWER * file_ms
        && !(through_edge && from_cache(file));
    if !php_slow {
        return None;
    }
    lead_with(&mut evidence, describe(file));
    lead_with(&mut evidence, describe(page));
    let server = web_server(file);
    let (confidence, summary) = if through_edge {
        (
            Confidence::Medium,
            format!(
                "Through the edge, the page takes {} to its first byte, over its budget ({}), while {server} serves the static file in {}: PHP is slow, not the network. (No origin was probed to confirm it without the edge: --origin / origins.)",
                format_seconds(page_ms),
                budget.named(BudgetPhase::Ttfb),
                format_seconds(file_ms)
            ),
        )
    } else {
        (
            Confidence::High,
            format!(
                "The page takes {} to its first byte, over its budget ({}), while {server} serves the static file in {} on the same origin: PHP is slow, not the network.",
                format_seconds(page_ms),
                budget.named(BudgetPhase::Ttfb),
                format_seconds(file_ms)
            ),
        )
    };
    Some(Verdict::new(
        Cause::OriginSlow,
        confidence,
        summary,
        evidence,
    ))
}

/// The phase furthest over its budget (by how many times), on any route and path: `slow`.
fn over_budget(view: &View<'_>, budget: &Budget, mut evidence: Vec<String>) -> Option<Verdict> {
    let (o, phase, ms, _) = view
        .groups()
        .into_iter()
        .flatten()
        .flat_map(|o| {
            BudgetPhase::ALL.into_iter().filter_map(move |phase| {
                let ms = phase.of(&o.timings_ms)?;
                let limit = budget.ms(phase)?;
                (ms > limit).then_some((*o, phase, ms, ms / limit))
            })
        })
        .max_by(|a, b| a.3.total_cmp(&b.3))?;
    lead_with(&mut evidence, describe(o));
    let over = format!("over its budget ({})", budget.named(phase));
    let took = format_seconds(ms);
    let what = format!("the {} {}", o.route.as_str(), o.path_role.as_str());
    let summary = match phase {
        BudgetPhase::Dns => format!(
            "Everything answers, but our DNS lookup of the site's name takes {took}, {over}: its DNS servers (or the resolver asked) answer slowly."
        ),
        BudgetPhase::Connect => format!(
            "Everything answers, but the TCP connect for {what} takes {took}, {over}: a long or congested network path, or a server slow to accept connections."
        ),
        BudgetPhase::Tls => format!(
            "Everything answers, but the TLS handshake for {what} takes {took}, {over}: a loaded server, or a long network path (a handshake is one or two round trips)."
        ),
        BudgetPhase::Total => format!(
            "Everything answers, but {what} takes {took} in all, {over}."
        ),
        BudgetPhase::Ttfb => format!(
            "Everything answers, but {what} takes {took} to its first byte, {over}{}",
            why_ttfb(view, o, budget)
        ),
    };
    Some(Verdict::new(
        Cause::Slow,
        Confidence::High,
        summary,
        evidence,
    ))
}

/// Why a slow first byte is not PHP's, or why that cannot be told, ending the sentence.
fn why_ttfb(view: &View<'_>, o: &Observation, budget: &Budget) -> String {
    let statics = match o.route {
        Route::Edge => &view.edge_static,
        Route::Origin => &view.origin_static,
    };
    if o.path_role != crate::observe::PathRole::Page {
        return ": the web server is slow even without PHP (a loaded host, or the network).".into();
    }
    // A slow edge in front of an origin that answers the page at once: the time is spent in
    // front of the origin.
    let origin_fast = slowest(&view.origin_page, BudgetPhase::Ttfb)
        .and_then(|p| p.timings_ms.ttfb)
        .filter(|ms| *ms <= budget.ttfb_ms());
    if let (Route::Edge, Some(origin_ms)) = (o.route, origin_fast) {
        return format!(
            ", while the origin answers the page in {}: the time is spent in front of the origin (the edge, or its way to the origin).",
            format_seconds(origin_ms)
        );
    }
    match slowest(statics, BudgetPhase::Ttfb).and_then(|s| s.timings_ms.ttfb) {
        None => ". With no static file to compare (--static-path / static_path), PHP cannot be told apart from the network.".into(),
        Some(file_ms) => format!(
            "; the static file takes {} too: the host or the network is slow, not PHP alone.",
            format_seconds(file_ms)
        ),
    }
}

/// The observation of `group` with the longest `phase`.
fn slowest<'a>(group: &[&'a Observation], phase: BudgetPhase) -> Option<&'a Observation> {
    group
        .iter()
        .copied()
        .filter(|o| phase.of(&o.timings_ms).is_some())
        .max_by(|a, b| {
            let of = |o: &Observation| phase.of(&o.timings_ms).unwrap_or_default();
            of(a).total_cmp(&of(b))
        })
}

/// The edge answered from its cache: the origin was not asked.
fn from_cache(o: &Observation) -> bool {
    o.response
        .as_ref()
        .and_then(|r| r.headers.cf_cache_status.as_deref())
        .is_some_and(|s| matches!(s, "HIT" | "STALE" | "UPDATING" | "REVALIDATED"))
}

/// The web server that served the static file, by its `Server` header.
fn web_server(o: &Observation) -> &'static str {
    let server = o
        .response
        .as_ref()
        .and_then(|r| r.headers.server.as_deref())
        .unwrap_or("")
        .to_ascii_lowercase();
    if server.starts_with("nginx") {
        "nginx"
    } else if server.starts_with("apache") {
        "Apache"
    } else {
        "the web server"
    }
}
