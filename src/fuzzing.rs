//! Entry points for the fuzz targets (`fuzz/`) and their regression tests
//! (`tests/fuzz_regressions.rs`): each takes arbitrary bytes and must return, never panic.
//! Not part of the library's interface.

use std::path::Path;

use time::OffsetDateTime;

use crate::observe::{ResponseFacts, ResponseHeaders};

/// The config parser and checker on arbitrary text.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(loaded) = crate::config::parse("fuzz.yaml", &text, Path::new("/nonexistent")) {
        let _ = crate::config::explain(Path::new("fuzz.yaml"), &loaded);
    }
}

/// The response recognisers (Cloudflare / nginx / Apache / WordPress page detection) on an
/// arbitrary response: the first two bytes are the status, the next byte says how long the
/// `Server` header is, and the rest (after it) is the body.
pub fn recognise(data: &[u8]) {
    let status = data
        .get(..2)
        .map_or(200, |b| u16::from_be_bytes([b[0], b[1]]) % 1000);
    let server_len = data.get(2).copied().unwrap_or(0) as usize;
    let rest = data.get(3..).unwrap_or_default();
    let (server, body) = rest.split_at(server_len.min(rest.len()));
    let response = ResponseFacts {
        status,
        http_version: "HTTP/1.1".into(),
        headers: ResponseHeaders {
            server: Some(String::from_utf8_lossy(server).into_owned()),
            cf_ray: (status % 2 == 0).then(|| "8f1c2d3e4f5a6b7c-LHR".into()),
            content_type: Some("text/html".into()),
            ..ResponseHeaders::default()
        },
        body_excerpt: String::from_utf8_lossy(body).into_owned(),
        body_bytes: body.len() as u64,
        body_complete: true,
        body_read_limit_hit: false,
    };
    let _ = crate::diagnose::recognise::via_cloudflare(&response);
    let _ = crate::diagnose::recognise::made_by_cloudflare(&response);
    let _ = crate::diagnose::recognise::generator(&response);
    let _ = crate::observe::CloudflareErrorDetails::from_json(&response.body_excerpt);
}

/// Certificate-facts extraction on arbitrary DER.
pub fn certificate(data: &[u8]) {
    let now = OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("a valid time");
    if let Some(facts) = crate::engine::tls::cert::cert_facts(data, now) {
        let _ = crate::engine::tls::cert::covers_name(&facts, "probe.test");
    }
}

/// `probe diagnose` on arbitrary JSON, then both renderings of the result.
pub fn diagnose_json(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(report) = crate::cli::commands::rediagnose(&text) {
        let _ = crate::report::render_table(&report);
        let _ = crate::report::render_json(&report);
    }
}

/// The status-page parsers (PHP-FPM's `?json&full`, nginx's `stub_status`) on arbitrary text,
/// and each page they accept weighed by the diagnosis, without and with an earlier read.
pub fn witness(data: &[u8]) {
    use crate::observe::witness::{FpmStatus, NginxStatus, Witness, WitnessCounters};
    use crate::observe::{Observation, PathRole, PhaseTimings, Route};
    let text = String::from_utf8_lossy(data);
    let read = [
        (
            PathRole::FpmStatus,
            FpmStatus::parse(&text).map(Witness::FpmStatus).ok(),
        ),
        (
            PathRole::NginxStatus,
            NginxStatus::parse(&text).map(Witness::NginxStatus).ok(),
        ),
    ];
    let observation = |path_role, witness, status: u16| Observation {
        route: Route::Origin,
        path_role,
        sample: 1,
        address: Some(([127, 0, 0, 1], 443).into()),
        cloudflare_address: false,
        url: "https://probe.test/fpm-status?json&full".into(),
        started_at: "2030-03-17T17:46:40Z".into(),
        timings_ms: PhaseTimings {
            ttfb: Some(3.0),
            total: 5.0,
            ..PhaseTimings::default()
        },
        tls: None,
        response: Some(ResponseFacts {
            status,
            http_version: "HTTP/1.1".into(),
            headers: ResponseHeaders::default(),
            body_excerpt: String::new(),
            body_bytes: 0,
            body_complete: true,
            body_read_limit_hit: false,
        }),
        error: None,
        cloudflare_error: None,
        redirects: Vec::new(),
        witness,
    };
    let settings = crate::diagnose::DiagnoseSettings::default();
    for (role, witness) in read {
        let Some(witness) = witness else { continue };
        for page_status in [200, 504] {
            let observations = vec![
                observation(PathRole::Page, None, page_status),
                observation(role, Some(witness.clone()), 200),
            ];
            let _ = crate::diagnose::diagnose("probe.test", &observations, &settings);
            // The same page read before, older and younger: every difference is weighed.
            let mut previous = WitnessCounters::read(&observations, 1_900_000_000);
            for c in &mut previous {
                if let Some(f) = c.fpm.as_mut() {
                    f.max_children_reached = f.max_children_reached.wrapping_add(7);
                    f.start_time = f.start_time.wrapping_sub(1);
                }
                if let Some(n) = c.nginx.as_mut() {
                    n.accepts = n.accepts.wrapping_sub(1);
                }
            }
            let _ =
                crate::diagnose::diagnose_since("probe.test", &observations, &settings, &previous);
        }
    }
}
