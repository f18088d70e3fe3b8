//! Text that came from a server or a config file, made safe for the output it goes to.
//!
//! A certificate's subject, a `Server` header, an error page or a site name is whatever its author
//! wanted it to be: control characters in it would move a terminal's cursor, retitle its window,
//! forge a log line, or make an Atom feed or an SVG badge ill-formed XML (XML 1.0 has no place
//! for most of them at all). Every output edge passes such text through `printable`, which shows
//! each of those characters as a visible escape (`\x1b`, `\u{202e}`) instead, so the operator
//! still sees that something odd was sent. `xml` does that and then escapes markup.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that change how the text around them is shown without being visible themselves:
/// bidirectional marks, overrides and isolates (a reversed file name, "Trojan source"), line and
/// paragraph separators (a line break to some viewers), zero-width and invisible operators, the
/// byte-order mark, and tag characters.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206f}'
            | '\u{feff}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// Whether `c` must not reach an output as it is: C0 and C1 controls (newlines and tabs
/// included), DEL, the invisible formatting characters, and the code points XML 1.0 forbids.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_invisible_format(c) || matches!(c, '\u{fffe}' | '\u{ffff}')
}

/// `text` with every unsafe character written as a visible escape: `\x01`, `\x1b`, `\n` as
/// `\x0a`, `\u{202e}`. Text without one is returned as it is, without a copy.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// `text` for HTML and XML (element content and quoted attribute values): unsafe characters
/// shown as escapes, then `& < > " '` escaped. The result holds only characters XML 1.0 allows.
pub fn xml(text: &str) -> String {
    let shown = printable(text);
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Bytes as lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A time as RFC 3339 (`2026-12-01T02:00:00Z`), the form every feed, mail and report uses.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    use time::format_description::well_known::Rfc3339;
    // Only years outside 0..=9999 fail to format; a Unix timestamp still says when.
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A duration as every mail and feed says it, in words: `less than a second`, `13 seconds`,
/// `4 minutes 10 seconds`, `25 minutes`, `3 hours 5 minutes`, `2 days 4 hours`. Seconds are
/// said while they matter (under ten minutes), minutes under two days.
pub fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = match secs {
        0 => return "less than a second".to_string(),
        1..=599 => vec![count(minutes, "minute"), count(seconds, "second")],
        600..=3599 => vec![count(minutes, "minute")],
        3600..=172_799 => vec![count(days * 24 + hours, "hour"), count(minutes, "minute")],
        _ => vec![count(days, "day"), count(hours, "hour")],
    };
    let said: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    said.join(" ")
}

/// `n` of `unit` in words, `1 minute`, `2 minutes`; empty for none.
fn count(n: u64, unit: &str) -> String {
    match n {
        0 => String::new(),
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    }
}

/// Where times are shown to people: UTC, or an IANA time zone (`feeds.timezone`,
/// `alerts.timezone`).
#[derive(Debug, Clone, Default)]
pub struct Zone(Option<(String, jiff::tz::TimeZone)>);

impl Zone {
    /// The zone of an IANA name (`Europe/Berlin`), if there is one by that name.
    pub fn named(name: &str) -> Option<Zone> {
        let tz = jiff::tz::TimeZone::get(name).ok()?;
        Some(Zone(Some((name.to_string(), tz))))
    }

    /// Its IANA name (`Etc/UTC` for UTC).
    pub fn name(&self) -> &str {
        self.0.as_ref().map_or("Etc/UTC", |(name, _)| name.as_str())
    }

    /// A moment as a person reads it: `2026-12-06 15:02 CET` (UTC: `… UTC`).
    pub fn clock(&self, t: time::OffsetDateTime) -> String {
        self.format(t, "%Y-%m-%d %H:%M %Z", clock)
    }

    /// A moment to the second, as a mail's start and end times are said: `2026-12-06
    /// 15:02:07 CET`.
    pub fn moment(&self, t: time::OffsetDateTime) -> String {
        self.format(t, "%Y-%m-%d %H:%M:%S %Z", moment)
    }

    /// Only the time of day, to the second (`15:02:07 CET`): the end of a span that began the
    /// same day.
    pub fn time_of_day(&self, t: time::OffsetDateTime) -> String {
        self.format(t, "%H:%M:%S %Z", |t| {
            let t = t.to_offset(time::UtcOffset::UTC);
            format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second())
        })
    }

    /// From `start` to `end`: `2026-12-06 15:02:07 to 15:02:20 CET` (the date once when both
    /// fall on one day).
    pub fn span(&self, start: time::OffsetDateTime, end: time::OffsetDateTime) -> String {
        let (from, to) = (self.moment(start), self.moment(end));
        if from.get(..10) == to.get(..10) {
            let from = from.rsplit_once(' ').map_or(from.as_str(), |(t, _)| t);
            format!("{from} to {}", self.time_of_day(end))
        } else {
            format!("{from} to {to}")
        }
    }

    fn format(
        &self,
        t: time::OffsetDateTime,
        pattern: &str,
        utc: fn(time::OffsetDateTime) -> String,
    ) -> String {
        let Some((_, tz)) = &self.0 else {
            return utc(t);
        };
        match jiff::Timestamp::from_second(t.unix_timestamp()) {
            Ok(at) => at.to_zoned(tz.clone()).strftime(pattern).to_string(),
            Err(_) => utc(t),
        }
    }
}

/// A moment as a person reads it in a mail: `2026-12-06 14:02 UTC`.
pub fn clock(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// A moment to the second: `2026-12-06 14:02:07 UTC`.
pub fn moment(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A short stable id of a string (48 bits of its SHA-256 in hex): Statuspage and Atom ids, the
/// webhook part of a delivery key.
pub fn short_id(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hex(&digest.as_ref()[..6])
}

/// `value` as compact JSON whose strings escape every unsafe character (`\u202e`, `\u0085`):
/// the same data, but nothing in the text itself acts on a terminal or a viewer. JSON alone
/// escapes only C0 controls.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    encode(value, serde_json::ser::CompactFormatter)
}

/// `json`, pretty-printed.
pub fn json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> String {
    encode(value, serde_json::ser::PrettyFormatter::new())
}

fn encode<T, F>(value: &T, formatter: F) -> String
where
    T: serde::Serialize + ?Sized,
    F: serde_json::ser::Formatter,
{
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, SafeStrings(formatter));
    value
        .serialize(&mut serializer)
        .expect("our values serialise to JSON");
    String::from_utf8(out).expect("JSON is UTF-8")
}

/// `text` (JSON, or a part of a JSON string) with every unsafe character but the newline written
/// as a `\uXXXX` escape (a surrogate pair beyond the Basic Multilingual Plane). Outside strings
/// JSON holds only ASCII, and JSON encoders already escape C0 controls inside them, so applying
/// this to whole JSON lines keeps them valid and the same data.
pub fn json_escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 12);
    for c in text.chars() {
        if c == '\n' || !is_unsafe(c) {
            out.push(c);
            continue;
        }
        let mut units = [0u16; 2];
        for unit in c.encode_utf16(&mut units) {
            let _ = write!(out, "\\u{unit:04x}");
        }
    }
    Cow::Owned(out)
}

/// A JSON formatter that writes unsafe characters in strings as `\uXXXX` escapes and leaves
/// layout to the one it wraps.
struct SafeStrings<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for SafeStrings<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        writer.write_all(json_escaped(fragment).as_bytes())
    }
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// Words in a query parameter's name that say its value is a secret (`?token=`, `api_key=`,
/// `X-Amz-Signature=`, `password=`).
const SECRET_NAMES: [&str; 10] = [
    "token",
    "key",
    "secret",
    "pass",
    "pwd",
    "sig",
    "auth",
    "credential",
    "session",
    "jwt",
];

/// What a query parameter's value is replaced with when shown.
pub const MASK: &str = "***";

/// A URL as every output shows it: without user name and password, with the values of query
/// parameters whose names look like secrets masked (`?token=***`), and printable. The URL itself
/// (for requests) is kept elsewhere; this is for people and feeds only.
pub fn url_for_display(url: &str) -> String {
    // Worked on the text, not on a parse: a URL that does not parse, or a relative reference
    // (a `Location` header), is masked all the same.
    let mut text = url.to_string();
    if let Some(scheme_end) = text.find("://") {
        let start = scheme_end + 3;
        let end = text[start..]
            .find(['/', '?', '#'])
            .map_or(text.len(), |i| start + i);
        if let Some(at) = text[start..end].rfind('@') {
            text.replace_range(start..start + at + 1, "");
        }
    }
    // The query, and a fragment of parameters (`#access_token=…`, as OAuth redirects carry).
    let query_start = text.find('?');
    let fragment_start = text.find('#');
    let mut parts = Vec::new();
    if let Some(q) = query_start.filter(|q| fragment_start.is_none_or(|f| *q < f)) {
        parts.push((q + 1, fragment_start.unwrap_or(text.len())));
    }
    if let Some(f) = fragment_start {
        parts.push((f + 1, text.len()));
    }
    for (start, end) in parts.into_iter().rev() {
        let masked: Vec<String> = text[start..end]
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if looks_secret(name) => format!("{name}={MASK}"),
                _ => pair.to_string(),
            })
            .collect();
        text.replace_range(start..end, &masked.join("&"));
    }
    printable(&text).into_owned()
}

/// Only the scheme, host and port of a URL, for a URL whose path may itself be a secret (chat
/// and paging webhooks carry their token in the path).
pub fn endpoint_for_display(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => match parsed.host_str() {
            Some(host) => {
                let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
                printable(&format!("{}://{host}{port}/…", parsed.scheme())).into_owned()
            }
            None => "(a URL without a host)".into(),
        },
        Err(_) => "(an unparsable URL)".into(),
    }
}

fn looks_secret(name: &str) -> bool {
    let decoded: String = url::form_urlencoded::parse(name.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let lower = decoded.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|word| lower.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_said_in_words_with_their_plurals() {
        let said = |secs| duration(std::time::Duration::from_secs(secs));
        assert_eq!(said(0), "less than a second");
        assert_eq!(said(1), "1 second");
        assert_eq!(said(13), "13 seconds");
        assert_eq!(said(60), "1 minute");
        assert_eq!(said(250), "4 minutes 10 seconds");
        assert_eq!(said(25 * 60 + 7), "25 minutes");
        assert_eq!(said(3600), "1 hour");
        assert_eq!(said(3 * 3600 + 5 * 60), "3 hours 5 minutes");
        assert_eq!(said(30 * 3600), "30 hours");
        assert_eq!(said(2 * 86_400 + 4 * 3600 + 59), "2 days 4 hours");
    }

    #[test]
    fn spans_say_the_date_once() {
        let at = time::OffsetDateTime::from_unix_timestamp(1_800_000_005).unwrap();
        let later = at + time::Duration::seconds(13);
        assert_eq!(
            Zone::default().span(at, later),
            "2027-01-15 08:00:05 to 08:00:18 UTC"
        );
        let berlin = Zone::named("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.span(at, later),
            "2027-01-15 09:00:05 to 09:00:18 CET"
        );
        let next_day = at + time::Duration::days(1);
        assert_eq!(
            Zone::default().span(at, next_day),
            "2027-01-15 08:00:05 UTC to 2027-01-16 08:00:05 UTC"
        );
    }

    #[test]
    fn times_are_shown_in_the_zone_asked_for() {
        let at = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert_eq!(Zone::default().clock(at), "2027-01-15 08:00 UTC");
        assert_eq!(
            Zone::named("Europe/Berlin").unwrap().clock(at),
            "2027-01-15 09:00 CET"
        );
        let summer = time::OffsetDateTime::from_unix_timestamp(1_815_000_000).unwrap();
        assert_eq!(
            Zone::named("Europe/Berlin").unwrap().clock(summer),
            "2027-07-08 00:40 CEST"
        );
        assert!(Zone::named("Mars/Olympus").is_none());
        assert_eq!(
            Zone::named("America/New_York").unwrap().name(),
            "America/New_York"
        );
    }

    #[test]
    fn control_and_invisible_characters_become_visible_escapes() {
        let hostile = "evil\x01\x1b[2J\x1b]0;x\x07\nnext\u{9b}\u{202e}gpj.exe";
        let shown = printable(hostile);
        assert_eq!(
            shown,
            "evil\\x01\\x1b[2J\\x1b]0;x\\x07\\x0anext\\u{9b}\\u{202e}gpj.exe"
        );
        assert!(!shown.chars().any(is_unsafe));
        assert!(matches!(printable("plain café — ok"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_strings_escape_what_json_alone_leaves_raw() {
        let value = serde_json::json!({"name": "a\u{202e}b\u{85}c\x1bd", "n": [1, 2]});
        let text = json(&value);
        assert_eq!(text, r#"{"name":"a\u202eb\u0085c\u001bd","n":[1,2]}"#);
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value, "the same data");
        assert!(json_pretty(&value).contains("\n  \"n\": ["));
        let tag = json(&serde_json::json!("x\u{e0041}y\u{2028}"));
        assert_eq!(tag, r#""x\udb40\udc41y\u2028""#);
        assert_eq!(
            serde_json::from_str::<String>(&tag).unwrap(),
            "x\u{e0041}y\u{2028}"
        );
    }

    #[test]
    fn urls_are_shown_without_credentials_or_secret_looking_values() {
        let shown = url_for_display(
            "https://admin:pw@shop.example/cart?token=abc123&page=2&X-Amz-Signature=ff&api_key=k",
        );
        assert_eq!(
            shown,
            "https://shop.example/cart?token=***&page=2&X-Amz-Signature=***&api_key=***"
        );
        assert_eq!(
            url_for_display("https://example.com/"),
            "https://example.com/"
        );
        assert_eq!(
            url_for_display("https://admin:hunter2@exa mple.com/?token=abc"),
            "https://exa mple.com/?token=***",
            "a URL that does not parse is masked too"
        );
        assert_eq!(
            url_for_display("/callback?session=abc&next=/home#access_token=xyz&state=1"),
            "/callback?session=***&next=/home#access_token=***&state=1"
        );
        let hook = endpoint_for_display("https://hooks.slack.com/services/T0/B0/SECRET?x=1");
        assert_eq!(hook, "https://hooks.slack.com/…");
    }

    #[test]
    fn xml_text_holds_only_xml_characters() {
        let out = xml("a<b & \"c\" \u{0}\u{b}\u{fffe} 'd'");
        assert_eq!(
            out,
            "a&lt;b &amp; &quot;c&quot; \\x00\\x0b\\u{fffe} &#39;d&#39;"
        );
        // XML 1.0 Char: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
        let allowed = |c: char| matches!(c as u32, 0x9 | 0xa | 0xd | 0x20..=0xd7ff | 0xe000..=0xfffd | 0x10000..);
        let every: String = (0u32..0x110000).filter_map(char::from_u32).collect();
        assert!(xml(&every).chars().all(allowed));
    }
}
