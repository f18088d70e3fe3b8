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
/// bidirectional overrides and isolates (a reversed file name, "Trojan source"), zero-width
/// characters and the byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}'
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

/// A JSON formatter that writes unsafe characters in strings as `\uXXXX` escapes (all of them
/// are in the Basic Multilingual Plane) and leaves layout to the one it wraps.
struct SafeStrings<F>(F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for SafeStrings<F> {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if is_unsafe(c) {
                writer.write_all(&fragment.as_bytes()[start..at])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                start = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
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
    let Ok(mut parsed) = url::Url::parse(url) else {
        return printable(url).into_owned();
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    if let Some(query) = parsed.query() {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if looks_secret(name) => format!("{name}={MASK}"),
                _ => pair.to_string(),
            })
            .collect();
        parsed.set_query(Some(&masked.join("&")));
    }
    printable(parsed.as_str()).into_owned()
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
