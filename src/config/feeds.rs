//! `feeds:` — how the status feeds present the sites.

use schemars::JsonSchema;
use serde::Deserialize;

use super::problems::Checker;
use super::Text;

/// How the status feeds present the sites.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedsConfig {
    /// The status page's title (default `Status`).
    #[schemars(with = "Option<String>")]
    pub title: Option<Text>,
    /// Where the page is published (e.g. `https://status.example.com/`), for links in the feeds.
    #[schemars(with = "Option<String>")]
    pub url: Option<Text>,
    /// The page and status.json are public (default true): they keep each site's state, its
    /// broken hop and a plain summary, but no server versions, addresses or commands. The
    /// operator's views (mail, metrics, Atom, `probe` itself) keep everything.
    pub public: Option<bool>,
    /// The IANA time zone the page shows times in (e.g. `Europe/Berlin`; default UTC).
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Text>,
}

/// The feeds' presentation, with defaults applied.
#[derive(Debug, Clone)]
pub struct Feeds {
    pub title: String,
    /// The published page's URL, ending in `/`.
    pub url: Option<String>,
    /// The page and status.json say only what the public may read.
    pub public: bool,
    /// The page's times are in this zone.
    pub zone: crate::text::Zone,
}

pub fn check(checker: &mut Checker, raw: &FeedsConfig) -> Feeds {
    let title = raw
        .title
        .as_ref()
        .map_or("Status".to_string(), |t| t.value.trim().to_string());
    let url = raw.url.as_ref().and_then(|u| {
        let value = u.value.trim();
        match url::Url::parse(value) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {
                let mut text = parsed.to_string();
                if !text.ends_with('/') {
                    text.push('/');
                }
                Some(text)
            }
            _ => {
                checker.problem(
                    u,
                    "feeds.url",
                    format!("{value:?} is not an http(s) URL (e.g. https://status.example.com/)"),
                );
                None
            }
        }
    });
    Feeds {
        title,
        url,
        public: raw.public.unwrap_or(true),
        zone: checker.zone(raw.timezone.as_ref(), "feeds.timezone"),
    }
}
