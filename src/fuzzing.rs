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
