//! Nothing fails, but a path answers what it should not: nginx's 400 for plain HTTP sent to a
//! port where it speaks TLS (probe's own URL, or an edge speaking HTTP to the origin), a
//! redirect (said with where it points), a 4xx (most often a wrong path in the probe's
//! settings), a status outside the site's `expect_status`.

use crate::observe::{Observation, PathRole, Route, Status};

use super::recognise::{self, Generator};
use super::rules::{as_expected, describe, is_failing, sentence, still_redirecting, Verdict, View};
use super::{Cause, Confidence, DiagnoseSettings};

/// The first way some path answers what it should not, or `None`.
pub(super) fn unexpected_answer(view: &View<'_>, settings: &DiagnoseSettings) -> Option<Verdict> {
    plain_http_to_tls(view).or_else(|| unexpected_status(view, settings))
}

/// nginx answered its "The plain HTTP request was sent to HTTPS port" page: somebody spoke
/// plain HTTP to a port nginx listens on with `ssl`. Probe itself, when its URL is `http://` and
/// the answer came from that nginx directly; else the edge in front, speaking HTTP to the
/// origin's TLS port (we spoke TLS, or a CDN relayed it).
fn plain_http_to_tls(view: &View<'_>) -> Option<Verdict> {
    let seen: Vec<&Observation> = view
        .groups()
        .into_iter()
        .flatten()
        .copied()
        .filter(|o| {
            o.response
                .as_ref()
                .is_some_and(|r| recognise::generator(r) == Generator::NginxPlainHttpToTls)
        })
        .collect();
    let first = seen.first()?;
    let mut evidence: Vec<String> = seen.iter().map(|o| describe(o)).collect();
    evidence.dedup();
    if seen.iter().any(|o| !sent_by_probe(o)) {
        return Some(edge_speaks_http(view, evidence));
    }
    // Probe's own request: the site's state is not known until it is probed as it is served.
    let edge_too = seen.iter().any(|o| o.route == Route::Edge);
    let port = first.address.map_or_else(String::new, |a| format!(" {a}"));
    let fix = if edge_too {
        "write the site's URL as https://, or give the port that serves plain HTTP"
    } else {
        "give the origin's plain-HTTP port (origins: [IP:80], --origin IP:80), or probe the site as https://"
    };
    let mut verdict = Verdict::new(
        Cause::Unknown,
        Confidence::High,
        format!(
            "The request probe sent is plain HTTP to a port where nginx speaks TLS: the {} address{port} answers 400 \"The plain HTTP request was sent to HTTPS port\" to {}. The site is not judged until it is probed the way it is served: {fix}.",
            first.route.as_str(),
            first.url
        ),
        evidence,
    );
    verdict.status = Some(Status::Unknown);
    Some(verdict)
}

/// Probe itself sent the plain HTTP: an `http://` URL answered by nginx directly (no CDN
/// relayed it).
fn sent_by_probe(o: &Observation) -> bool {
    let plain = url::Url::parse(&o.url).is_ok_and(|u| u.scheme() == "http");
    let relayed = o.response.as_ref().is_some_and(recognise::via_cloudflare);
    plain && !relayed
}

/// The edge relays plain HTTP to an origin port that expects TLS: visitors get nginx's 400.
fn edge_speaks_http(view: &View<'_>, evidence: Vec<String>) -> Verdict {
    // Every page visitors asked for is that 400: the site is down for them.
    let every_page = !view.edge_page.is_empty()
        && view.edge_page.iter().all(|p| {
            p.response
                .as_ref()
                .is_some_and(|r| recognise::generator(r) == Generator::NginxPlainHttpToTls)
        });
    // The origin answering us over TLS proves its TLS works and only the edge's leg is wrong.
    let origin_answers = view.origin_page.iter().any(|p| super::rules::is_healthy(p));
    let mut verdict = Verdict::new(
        Cause::OriginTlsHandshake,
        if origin_answers {
            Confidence::High
        } else {
            Confidence::Medium
        },
        String::from(
            "Visitors get nginx's 400 \"The plain HTTP request was sent to HTTPS port\" through the edge: the edge speaks plain HTTP to an origin port where nginx expects TLS. On Cloudflare, the SSL/TLS mode is Flexible (plain HTTP to the origin) while that port is a TLS one (an Origin Rule sending port 443, or nginx's listen 80 ssl); on another CDN or load balancer, its origin protocol is HTTP. Make the edge reach the origin over HTTPS (Cloudflare: Full (strict)), or send it to the origin's plain-HTTP port.",
        ),
        evidence,
    );
    verdict.status = Some(if every_page {
        Status::Down
    } else {
        Status::Degraded
    });
    verdict.steps = vec![
        "in the Cloudflare dashboard: SSL/TLS → Overview (Flexible speaks plain HTTP to the origin) and Rules → Origin Rules (a destination port override)".into(),
        "grep -rn 'listen' /etc/nginx/sites-enabled/    # which ports speak TLS (listen … ssl): the edge must use https:// for those".into(),
    ];
    verdict
}

/// A status the path should not answer: a redirect (with where it points), one outside
/// `expect_status`, or a 4xx.
fn unexpected_status(view: &View<'_>, settings: &DiagnoseSettings) -> Option<Verdict> {
    let o = view
        .groups()
        .into_iter()
        .flatten()
        .find(|o| !is_failing(o) && !as_expected(o, settings))?;
    let response = o.response.as_ref()?;
    let status = response.status;
    // Where a redirect points, as recorded (secrets already masked).
    let to = response
        .headers
        .location
        .as_deref()
        .filter(|_| (300..400).contains(&status))
        .map(|l| format!(" to {l}"))
        .unwrap_or_default();
    let expected = &settings.expect_status;
    let what = if still_redirecting(o) {
        format!(
            "still a redirect after following {} (a redirect loop?)",
            o.redirects.len()
        )
    } else if o.path_role == PathRole::Page && !expected.is_empty() {
        let list: Vec<String> = expected.iter().map(u16::to_string).collect();
        format!("expected {}", list.join(" or "))
    } else {
        "is the path right?".to_string()
    };
    Some(Verdict::new(
        Cause::Unknown,
        Confidence::Low,
        sentence(&format!(
            "Nothing fails, but the {} {} answers {status}{to}: {what}",
            o.route.as_str(),
            o.path_role.as_str()
        )),
        vec![describe(o)],
    ))
}
