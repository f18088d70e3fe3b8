//! What the parser says of probes.yaml, in plain words: each serde-saphyr error turned into a
//! sentence about what was found and what to write instead, worded from the error's kind (never
//! parsed out of its text), with no parser jargon ("sequence start", "mapping", "scalar"). Also
//! the words for a key written at the top level that belongs under a section.

use std::collections::BTreeMap;

use serde::de::{self, Deserialize, Visitor};
use serde_saphyr::granit_parser::ErrorKind;
use serde_saphyr::Error;

use super::problems::ConfigProblem;

/// A parse error as a problem: where serde-saphyr says it is, the field's path the deserializer
/// was at (`path`, `None` at the top), and what is wrong in words. `text` is the file, quoted
/// from for what was found.
pub fn problem(e: &Error, path: Option<&str>, text: &str, max_nodes: usize) -> ConfigProblem {
    let e = e.without_snippet();
    let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
    let budget = matches!(e, Error::Budget { .. });
    let mut path = match path.map(field_path) {
        Some(p) if !p.is_empty() && !budget => p,
        _ => "(top)".to_string(),
    };
    // The deserializer names a key it has not matched to a field `?`: a repeated key is known.
    if let Error::DuplicateMappingKey { key: Some(key), .. } = e {
        path = match path.strip_suffix('?') {
            Some(parent) => format!("{parent}{key}"),
            None if path == "(top)" => key.clone(),
            None => path,
        };
    }
    let field = last_key(&path);
    let found = || found_at(text, line, column, field);
    // An entry of a list of settings (`sites[1]`), or the file itself.
    let entry = path.ends_with(']');
    let message = match e {
        Error::SerdeUnknownField {
            field, expected, ..
        } => unknown_key(field, expected),
        Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("`{key}` is written twice here: keep one of them")
        }
        Error::Budget { .. } => format!(
            "the file is too large to read: probe reads at most {max_nodes} values, lists and maps ({} sites of a few settings each) and {} MiB of text",
            max_nodes / 20,
            super::MAX_CONFIG_BYTES >> 20
        ),
        Error::Unexpected { expected, .. } => match *expected {
            "sequence start" => format!("expected a list{}, found {}", example(field), found()),
            "mapping start" | "empty mapping start" if path == "(top)" => format!(
                "expected the file's sections as `key: value` lines (e.g. `sites:` with `  - url: example.com` on the line below), found {}",
                found()
            ),
            "mapping start" | "empty mapping start" if entry => format!(
                "expected an entry's `key: value` settings, its first key after the `- `{}, found {}",
                entry_example(field),
                found()
            ),
            "mapping start" | "empty mapping start" => format!(
                "expected `key: value` settings written below it, indented{}, found {}",
                example(field),
                found()
            ),
            "string scalar" | "scalar" | "value" | "binary scalar" => {
                format!("expected one value{}, found {}", example(field), found())
            }
            other => format!("expected {other}, found {}", found()),
        },
        Error::InvalidScalar { ty, .. } => match e.location().and_then(|l| value_at(text, &l)) {
            Some(value) => format!("{} is not {}", shown(&value, field), kind_of_value(ty)),
            None => format!("{} is not {}", found(), kind_of_value(ty)),
        },
        Error::InvalidBooleanStrict { .. } => format!("{} is not true or false", found()),
        Error::NullIntoString { .. } => {
            format!("a value is missing here{}", example(field))
        }
        Error::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | Error::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => format!(
            "expected {}, found {}",
            expectation(expected),
            what(unexpected, field)
        ),
        Error::SerdeInvalidLength { len, expected, .. } => {
            format!("expected {}, found {len} of them", expectation(expected))
        }
        Error::SerdeUnknownVariant {
            variant, expected, ..
        } => format!("{} is not one of {}", shown(variant, field), expected.join(", ")),
        Error::SerdeMissingField { field, .. } => {
            format!("`{field}` is missing: add it{}", example(field))
        }
        Error::Eof { .. } => {
            "the file ends in the middle of a value: a quote or a bracket is not closed".into()
        }
        Error::UnknownAnchor { .. } => {
            "this `*name` refers to no `&name` written above it".into()
        }
        Error::ExternalMessage { source, msg, .. } => match source.as_ref() {
            serde_saphyr::localizer::ExternalMessageSource::Parser(scan) => {
                parser_words(scan.kind()).unwrap_or_else(|| msg.clone())
            }
            _ => msg.clone(),
        },
        other => {
            use serde_saphyr::MessageFormatter as _;
            serde_saphyr::DefaultMessageFormatter
                .format_message(other)
                .into_owned()
        }
    };
    ConfigProblem {
        line: line.max(1),
        column: column.max(1),
        path,
        message,
    }
}

/// Whether the error is about one value (a section or a site reads without it), not about the
/// file's structure (a syntax error: nothing after it can be trusted).
pub fn is_about_a_value(e: &Error) -> bool {
    matches!(
        e.without_snippet(),
        Error::Message { .. }
            | Error::Unexpected { .. }
            | Error::InvalidScalar { .. }
            | Error::InvalidBooleanStrict { .. }
            | Error::NullIntoString { .. }
            | Error::SerdeInvalidType { .. }
            | Error::SerdeInvalidValue { .. }
            | Error::SerdeInvalidLength { .. }
            | Error::SerdeUnknownVariant { .. }
            | Error::SerdeUnknownField { .. }
            | Error::SerdeMissingField { .. }
            | Error::DuplicateMappingKey { .. }
            | Error::TaggedScalarCannotDeserializeIntoString { .. }
    )
}

/// An unknown key, with the nearest known one when it is a likely typo.
pub fn unknown_key(field: &str, expected: &[&str]) -> String {
    match closest(field, expected) {
        Some(near) => format!(
            "unknown field `{field}`: did you mean `{near}`? (expected one of {})",
            expected.join(", ")
        ),
        None => format!(
            "unknown field `{field}`, expected one of {}",
            expected.join(", ")
        ),
    }
}

/// A key written at the top level that is not a section: when it is a key of a section (the
/// nearest one above it that takes it, else the only one), it was meant to be indented under
/// it. `keys` are the top-level keys of the file by their place; `sections` each section with
/// the keys it takes (a list's: those of its entries).
pub fn top_level_key(
    key: &str,
    line: u64,
    column: u64,
    keys: &BTreeMap<(u64, u64), String>,
    sections: &[(&str, &[&str], bool)],
) -> ConfigProblem {
    let takes = |name: &str| {
        sections
            .iter()
            .find(|(s, _, _)| *s == name)
            .filter(|(_, children, _)| children.contains(&key))
    };
    let above = keys
        .range(..(line, column))
        .rev()
        .find_map(|((l, _), name)| takes(name).map(|s| (s, Some(*l))));
    // Else the one section that takes it, or the one that is not a list (`interval` is a
    // key of `defaults:` as well as of each site).
    let only = || {
        let owners: Vec<&(&str, &[&str], bool)> = sections
            .iter()
            .filter(|(_, children, _)| children.contains(&key))
            .collect();
        let blocks: Vec<&(&str, &[&str], bool)> = owners
            .iter()
            .copied()
            .filter(|(_, _, list)| !list)
            .collect();
        match (owners.as_slice(), blocks.as_slice()) {
            ([one], _) | (_, [one]) => Some((*one, None)),
            _ => None,
        }
    };
    let top: Vec<&str> = sections.iter().map(|(s, _, _)| *s).collect();
    let message = match above.or_else(only) {
        Some(((section, _, list), at)) => {
            let line = at.map_or(String::new(), |l| format!(" (line {l})"));
            if *list {
                format!("`{key}` is a key of each entry of `{section}:`{line}, not of the top level: indent it under {section}:, in an entry that starts with `- ` (e.g. `  - {key}: …`)")
            } else {
                format!("`{key}` is a key of `{section}:`{line}, not of the top level: indent it under {section}:, two spaces in, like the section's other keys (`  {key}: …`)")
            }
        }
        None => unknown_key(key, &top),
    };
    ConfigProblem {
        line,
        column,
        path: key.to_string(),
        message,
    }
}

/// The fields of a struct as its derived `Deserialize` names them (the keys it takes), found by
/// asking it to read from a deserializer that only records what it is asked for.
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldsOf(&mut fields));
    fields
}

struct FieldsOf<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldsOf<'_> {
    type Error = de::value::Error;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("fields only"))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields only"))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A deserializer's path as the file's field path: the place-keeping wrapper of a value is read
/// as a field `value` (`to.value[0].value` is `to[0]`).
fn field_path(path: &str) -> String {
    let mut out = String::new();
    for segment in path.split('.') {
        let segment = segment
            .strip_prefix("value")
            .filter(|rest| rest.is_empty() || rest.starts_with('['))
            .unwrap_or(segment);
        if segment.is_empty() {
            continue;
        }
        if !out.is_empty() && !segment.starts_with('[') {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

/// The last key of a path (`sites[2].origins[0]` → `origins`).
fn last_key(path: &str) -> &str {
    let last = path.rsplit('.').next().unwrap_or(path);
    last.split('[').next().unwrap_or(last)
}

/// What a value of a Rust type is, for people.
fn kind_of_value(ty: &str) -> &'static str {
    match ty {
        "u8" | "u32" | "u64" | "u128" | "usize" => {
            "a whole number (0 or more): write digits, e.g. 3"
        }
        "u16" => "a whole number from 0 to 65535: write digits, e.g. 587",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number: write digits, e.g. 3",
        "f32" | "f64" | "floating point" => "a number, e.g. 1.5",
        "bool" | "boolean" => "true or false",
        "char" => "a single character",
        _ => "a value this setting takes",
    }
}

/// serde's `expected …` in words.
fn expectation(expected: &str) -> String {
    if let Some(name) = expected.strip_prefix("struct ") {
        return format!("`key: value` settings written below it, indented ({name})");
    }
    match expected {
        "a string" => "one value (text)".into(),
        "a sequence" => "a list".into(),
        "a map" => "`key: value` settings".into(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" => "a whole number".into(),
        "a boolean" => "true or false".into(),
        other => other.to_string(),
    }
}

/// serde's `Unexpected` as written in its errors (`string "x"`, `integer \`5\``, `sequence`,
/// `map`, `unit value`), in words.
fn what(unexpected: &str, field: &str) -> String {
    let quoted = |s: &str| s.trim_matches('`').to_string();
    if let Some(text) = unexpected.strip_prefix("string ") {
        // Already quoted and escaped by serde; unless it must not be repeated at all.
        let inner = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
        return match inner.map(|t| shown(t, field)) {
            Some(safe) if !safe.starts_with('"') => safe,
            _ => format!("the text {text}"),
        };
    }
    for (prefix, words) in [
        ("integer ", "the number"),
        ("floating point ", "the number"),
        ("boolean ", "the value"),
        ("character ", "the character"),
    ] {
        if let Some(value) = unexpected.strip_prefix(prefix) {
            return format!("{words} {}", quoted(value));
        }
    }
    match unexpected {
        "sequence" => "a list".into(),
        "map" => "`key: value` settings".into(),
        "unit value" | "null" | "Option value" => "nothing".into(),
        other => other.to_string(),
    }
}

/// What is written at a place of the file, in words: `nothing`, `a list`, `` `key: value`
/// settings`` or `the text "…"`.
fn found_at(text: &str, line: u64, column: u64, field: &str) -> String {
    let Some(written) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return "nothing".into();
    };
    let rest: String = written
        .chars()
        .skip(column.saturating_sub(1) as usize)
        .collect();
    let rest = rest.trim();
    let value = match rest.find(" #") {
        Some(comment) => rest[..comment].trim_end(),
        None => rest,
    };
    let looks_like_key = value
        .split_once(':')
        .is_some_and(|(k, after)| !k.contains(' ') && (after.is_empty() || after.starts_with(' ')));
    if value.is_empty() || value.starts_with('#') {
        "nothing".into()
    } else if value.starts_with('[') || value == "-" || value.starts_with("- ") {
        "a list".into()
    } else if value.starts_with('{') || looks_like_key {
        "`key: value` settings".into()
    } else {
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        match shown(unquoted, field) {
            quoted if quoted.starts_with('"') => format!("the text {quoted}"),
            other => other,
        }
    }
}

/// A value written in the file, as a message may repeat it: quoted and escaped, cut at 60
/// characters; a URL by its endpoint only (a webhook's path or a database URL may hold a
/// secret), and a value where a secret may have gone (`password_env`, a `user:password@`)
/// not at all.
fn shown(value: &str, field: &str) -> String {
    if value.contains("://") {
        return format!("the URL {}", crate::text::endpoint_for_display(value));
    }
    let secret_field = ["env", "password", "token", "key", "secret"]
        .iter()
        .any(|word| field.contains(word));
    let credentials = value
        .split_once('@')
        .is_some_and(|(before, _)| before.contains(':'));
    if secret_field || credentials {
        return "a value (not repeated here: it may be a secret)".into();
    }
    let cut: String = value.chars().take(60).collect();
    format!("{cut:?}")
}

/// The value written at an error's place, as the parser saw its extent (quotes taken off).
fn value_at(text: &str, at: &serde_saphyr::Location) -> Option<String> {
    let span = at.span();
    let written = match (span.byte_offset(), span.byte_len()) {
        (Some(offset), Some(len)) => text.get(offset as usize..(offset + len) as usize)?,
        _ => return None,
    };
    let unquoted = written
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| {
            written
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
        })
        .unwrap_or(written);
    (!unquoted.is_empty()).then(|| unquoted.chars().take(60).collect())
}

/// An example of an entry of a list of settings, by the list's key.
fn entry_example(list: &str) -> &'static str {
    match list {
        "sites" => " (e.g. `- url: example.com`, the site's other keys lined up under `url`)",
        "maintenance" => {
            " (e.g. `- start: 2026-12-01T02:00:00Z` with `end:` lined up under `start`)"
        }
        "webhooks" => " (e.g. `- url: https://hooks.example.com/probe`)",
        "notify" => " (e.g. `- type: slack` with `url_env: SLACK_URL` lined up under `type`)",
        _ => "",
    }
}

/// An example of a setting, by its key, for messages that say what to write.
fn example(field: &str) -> String {
    let block = |child: &str| format!(" (e.g. `{field}:` with `  {child}` on the line below)");
    let value = |v: &str| format!(" (e.g. `{field}: {v}`)");
    match field {
        "sites" => block("- url: example.com"),
        "maintenance" => block("- {start: 2026-12-01T02:00:00Z, end: 2026-12-01T03:00:00Z}"),
        "webhooks" => block("- url: https://hooks.example.com/probe"),
        "notify" => block("- {type: slack, url_env: SLACK_URL}"),
        "alerts" => block("to: ops@example.com"),
        "smtp" => block("host: smtp.example.com"),
        "store" => block("path: probe.sqlite"),
        "feeds" => block("title: Example status"),
        "defaults" => block("interval: 1m"),
        "warning" | "intermittent" => block("confirm_runs: 3"),
        "status_header" => value("{name: X-Status-Token, value_env: FPM_STATUS_TOKEN}"),
        "to" | "alert_to" => value("[ops@example.com]"),
        "origins" => value("[203.0.113.10]"),
        "redirect_hosts" => value("[www.example.com]"),
        "control_checks" => value("[https://www.cloudflare.com/]"),
        "expect_status" => value("[200]"),
        "cert_warning_days" => value("[14, 7, 3, 1]"),
        "severity" => value("[down]"),
        "url" => value("https://example.com/"),
        "host" => value("smtp.example.com"),
        "from" => value("probe@example.com"),
        "name" => value("shop"),
        "path" => value("probe.sqlite"),
        "interval" => value("1m"),
        "timeout" => value("10s"),
        "retry_spacing" => value("5s"),
        "remind_every" => value("4h"),
        "retention" => value("30d"),
        "static_path" => value("/wp-includes/css/dashicons.min.css"),
        "edge" => value("198.51.100.7"),
        "resolver" => value("192.0.2.53"),
        "timezone" => value("Europe/Berlin"),
        "start" => value("2026-12-01T02:00:00Z"),
        "end" => value("2026-12-01T03:00:00Z"),
        "type" => value("slack"),
        "security" => value("starttls"),
        "port" => value("587"),
        "samples" => value("2"),
        "burst" => value("3"),
        "follow_redirects" => value("2"),
        "confirm_retries" | "confirm_runs" | "recover_runs" => value("2"),
        "quorum" => value("2"),
        "window_runs" => value("20"),
        "min_failures" => value("3"),
        "cloudflare_edge" | "group" | "public" | "enabled" | "allow_plaintext_auth" => {
            value("true")
        }
        "username" => value("probe@example.com"),
        "password_env" => value("SMTP_PASSWORD"),
        "ca_file" => value("ca.pem"),
        "title" => value("Example status"),
        "reason" => value("database upgrade"),
        "fpm_status" => value("/fpm-status"),
        "nginx_status" => value("/nginx_status"),
        "url_env" => value("SLACK_URL"),
        "secret_env" => value("WEBHOOK_SECRET"),
        "chat_id" => value("\"12345\""),
        _ => String::new(),
    }
}

/// The parser's own complaint, in words, for the kinds a person meets (`None`: its own text).
fn parser_words(kind: &ErrorKind) -> Option<String> {
    const LINE_UP: &str = "the keys of one block line up at one column, and a list's entries start with `-` at one column";
    Some(match kind {
        ErrorKind::ExpectedBlockSequenceEntry => "this line is out of place in a list — the indentation is likely off here: a list's entries start with `-` at one column, and the keys of one entry line up under its first key".into(),
        ErrorKind::ExpectedBlockMappingKey | ErrorKind::InvalidIndentation => format!(
            "this line is indented differently from the keys around it — the indentation is likely off here: {LINE_UP}"
        ),
        ErrorKind::MappingValueNotAllowed | ErrorKind::MappingKeyNotAllowed => format!(
            "a `key: value` cannot start here — the indentation is likely off ({LINE_UP}), or a value holds `: ` and needs quotes"
        ),
        ErrorKind::TabInIndentation
        | ErrorKind::TabInBlockIndentation
        | ErrorKind::TabNotAllowed
        | ErrorKind::TabInPlainScalar
        | ErrorKind::TabAtBlockScalarStart => {
            "a tab character here: YAML indents with spaces only (a value holding a tab needs quotes)".into()
        }
        ErrorKind::UnclosedQuotedScalar => {
            "a quoted value that is not closed: add the closing quote".into()
        }
        ErrorKind::UnclosedFlowCollection { open } => {
            format!("this `{open}` is never closed: add `{}`", closing(*open))
        }
        ErrorKind::MismatchedFlowCollectionEnd { open, close } => format!(
            "a `{open}` closed by `{close}`: close it with `{}`",
            closing(*open)
        ),
        ErrorKind::MisplacedFlowCollectionEnd => {
            "a closing bracket with no opening one before it".into()
        }
        ErrorKind::ExpectedFlowSequenceSeparator => {
            "expected `,` between two values of a `[…]` list, or `]` to close it".into()
        }
        ErrorKind::ExpectedFlowMappingSeparator => {
            "expected `,` between two settings of a `{…}`, or `}` to close it".into()
        }
        ErrorKind::UnexpectedCharacter { character } => format!(
            "a value cannot start with `{character}`: put the value in quotes (\"{character}…\")"
        ),
        ErrorKind::ExpectedNodeContent => "a value is missing here".into(),
        ErrorKind::UnknownAnchor => "this `*name` refers to no `&name` written above it".into(),
        _ => return None,
    })
}

fn closing(open: char) -> char {
    match open {
        '[' => ']',
        '{' => '}',
        other => other,
    }
}

/// The expected name nearest to a mistyped one (at most two letters off, and not most of it).
pub fn closest<'a>(typed: &str, expected: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diagonal = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let above = row[j + 1];
                row[j + 1] = (diagonal + usize::from(ca != *cb))
                    .min(row[j] + 1)
                    .min(above + 1);
                diagonal = above;
            }
        }
        row[b.len()]
    };
    expected
        .iter()
        .map(|e| (distance(typed, e), *e))
        .filter(|(d, e)| *d <= 2 && *d * 3 <= e.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_the_place_keeping_wrappers() {
        assert_eq!(field_path("to.value[0].value"), "to[0]");
        assert_eq!(field_path("confirm_runs"), "confirm_runs");
        assert_eq!(
            field_path("status_header.value_env.value"),
            "status_header.value_env"
        );
        assert_eq!(field_path("."), "");
        assert_eq!(last_key("sites[2].origins[0]"), "origins");
    }

    #[test]
    fn what_is_found_is_said_in_words() {
        let text = "a: [1]\nb: {c: 1}\nc: hello # note\nd:\n  e: 1\nf: \"quoted\"\n";
        assert_eq!(found_at(text, 1, 4, "a"), "a list");
        assert_eq!(found_at(text, 2, 4, "b"), "`key: value` settings");
        assert_eq!(found_at(text, 3, 4, "c"), "the text \"hello\"");
        assert_eq!(found_at(text, 4, 3, "d"), "nothing");
        assert_eq!(found_at(text, 5, 3, "d"), "`key: value` settings");
        assert_eq!(found_at(text, 6, 4, "f"), "the text \"quoted\"");
    }

    #[test]
    fn a_value_that_may_be_a_secret_is_not_repeated() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T0/B0/XOXSECRET", "notify"),
            "the URL https://hooks.slack.com/…"
        );
        assert_eq!(
            shown("postgresql://probe:hunter2@db.internal/probe", "store"),
            "the URL postgresql://db.internal/…"
        );
        assert_eq!(
            shown("probe:hunter2@db.internal", "store"),
            "a value (not repeated here: it may be a secret)"
        );
        assert_eq!(
            shown("hunter2", "password_env"),
            "a value (not repeated here: it may be a secret)"
        );
        assert_eq!(shown("two", "confirm_runs"), "\"two\"");
        assert_eq!(shown("a\u{1b}[2J", "name"), "\"a\\u{1b}[2J\"");
    }

    #[test]
    fn a_struct_s_fields_are_found() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            host: String,
            #[serde(rename = "type")]
            kind: u8,
        }
        assert_eq!(fields_of::<S>(), ["host", "type"]);
    }
}
