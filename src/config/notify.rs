//! `notify:` — chat and paging channels (Slack, Microsoft Teams, Discord, Telegram, ntfy,
//! PagerDuty, Opsgenie). Every secret comes from the environment and is read when a message is
//! delivered: the file names variables, the store names the channel, neither holds a token.

use schemars::JsonSchema;
use serde::Deserialize;

use super::lists::{maybe_one_or_many, OneOrMany};
use super::problems::Checker;
use super::sites::names_in;
use super::Text;

/// The severities a channel may be limited to (`alert::Severity`'s names).
const SEVERITIES: [&str; 3] = ["down", "warning", "intermittent"];

/// One chat or paging channel as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `slack`, `teams`, `discord`, `telegram`, `ntfy`, `pagerduty` or `opsgenie`.
    #[serde(rename = "type")]
    #[schemars(with = "String")]
    pub kind: Text,
    /// The environment variable holding the webhook URL (slack, teams, discord: the URL is
    /// the secret).
    #[schemars(with = "Option<String>")]
    pub url_env: Option<Text>,
    /// A URL that is not secret: ntfy's topic URL; for telegram, pagerduty and opsgenie, another
    /// API endpoint than the provider's own (a relay, Opsgenie's EU instance).
    #[schemars(with = "Option<String>")]
    pub url: Option<Text>,
    /// The environment variable holding a token: telegram's bot token, ntfy's access token.
    #[schemars(with = "Option<String>")]
    pub token_env: Option<Text>,
    /// Telegram: the chat the bot writes to.
    #[schemars(with = "Option<String>")]
    pub chat_id: Option<Text>,
    /// PagerDuty: the environment variable holding the Events API v2 routing key.
    #[schemars(with = "Option<String>")]
    pub routing_key_env: Option<Text>,
    /// Opsgenie: the environment variable holding the API key.
    #[schemars(with = "Option<String>")]
    pub api_key_env: Option<Text>,
    /// Site names (one or a list); all sites (and the prober's own notices) when absent.
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub sites: Option<Vec<Text>>,
    /// Which severities (one or a list): `down`, `warning`, `intermittent`. All when absent.
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub severity: Option<Vec<Text>>,
}

/// A chat or paging service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Slack,
    Teams,
    Discord,
    Telegram,
    Ntfy,
    PagerDuty,
    Opsgenie,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Slack => "slack",
            Provider::Teams => "teams",
            Provider::Discord => "discord",
            Provider::Telegram => "telegram",
            Provider::Ntfy => "ntfy",
            Provider::PagerDuty => "pagerduty",
            Provider::Opsgenie => "opsgenie",
        }
    }

    const ALL: [Provider; 7] = [
        Provider::Slack,
        Provider::Teams,
        Provider::Discord,
        Provider::Telegram,
        Provider::Ntfy,
        Provider::PagerDuty,
        Provider::Opsgenie,
    ];

    fn parse(name: &str) -> Option<Provider> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// A paging service: it opens an incident of its own on trouble and resolves it on recovery
    /// (reminders are not sent again; a chat gets them).
    pub fn pages(self) -> bool {
        matches!(self, Provider::PagerDuty | Provider::Opsgenie)
    }
}

/// A chat or paging channel, checked. `id` names it in the store (`notify[2]:slack`): what is
/// queued for it is delivered with its settings as they are when it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Notifier {
    pub id: String,
    pub provider: Provider,
    /// The variable holding the secret: the webhook URL, the token, the routing or API key.
    pub secret_env: Option<String>,
    /// A URL that is not secret (ntfy's topic, another API endpoint).
    pub url: Option<String>,
    pub chat_id: Option<String>,
    /// Empty: every site and the prober's own notices.
    pub sites: Vec<String>,
    /// Empty: every severity (`down`, `warning`, `intermittent`).
    pub severities: Vec<String>,
}

impl Notifier {
    /// Whether a notification about `site` of `severity` goes to this channel.
    pub fn covers(&self, site: &str, severity: &str) -> bool {
        let site_ok =
            self.sites.is_empty() || site.starts_with('@') || self.sites.iter().any(|s| s == site);
        let severity_ok =
            self.severities.is_empty() || self.severities.iter().any(|s| s == severity);
        site_ok && severity_ok
    }
}

/// Whether a URL names this host (a relay beside the prober).
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub fn check(
    checker: &mut Checker,
    raw: &[NotifyConfig],
    known: &dyn Fn(&str) -> bool,
) -> Vec<Notifier> {
    let mut out = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let at = format!("notify[{i}]");
        let name = entry.kind.value.trim();
        let Some(provider) = Provider::parse(name) else {
            let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            checker.problem(
                &entry.kind,
                format!("{at}.type"),
                format!(
                    "{name:?} is not a channel probe speaks: one of {}",
                    names.join(", ")
                ),
            );
            continue;
        };
        // Which settings each provider takes, and which it needs.
        let (secret_field, secret, example, what) = match provider {
            Provider::Slack | Provider::Teams | Provider::Discord => {
                ("url_env", &entry.url_env, "SLACK_URL", "webhook URL")
            }
            Provider::Telegram => ("token_env", &entry.token_env, "TG_TOKEN", "bot token"),
            Provider::Ntfy => ("token_env", &entry.token_env, "NTFY_TOKEN", "access token"),
            Provider::PagerDuty => (
                "routing_key_env",
                &entry.routing_key_env,
                "PD_KEY",
                "routing key",
            ),
            Provider::Opsgenie => ("api_key_env", &entry.api_key_env, "OG_KEY", "API key"),
        };
        let mut usable = true;
        for (field, value) in [
            ("url_env", &entry.url_env),
            ("token_env", &entry.token_env),
            ("routing_key_env", &entry.routing_key_env),
            ("api_key_env", &entry.api_key_env),
        ] {
            if let Some(v) = value.as_ref().filter(|_| field != secret_field) {
                checker.problem(
                    v,
                    format!("{at}.{field}"),
                    format!(
                        "this {name} channel takes no {field}; its secret goes in {secret_field}"
                    ),
                );
                usable = false;
            }
        }
        match secret {
            Some(var) => {
                checker.secret_variable(var, &format!("{at}.{secret_field}"), example, what)
            }
            // ntfy topics may be open: the token is optional there. A webhook URL written in
            // the file gets its own message below.
            None if provider != Provider::Ntfy
                && !(entry.url.is_some()
                    && matches!(
                        provider,
                        Provider::Slack | Provider::Teams | Provider::Discord
                    )) =>
            {
                checker.problem(
                    &entry.kind,
                    format!("{at}.{secret_field}"),
                    format!("this {name} channel needs {secret_field}: the environment variable holding its {what}"),
                );
                usable = false;
            }
            None => {}
        }
        let url = match (&entry.url, provider) {
            (Some(u), Provider::Slack | Provider::Teams | Provider::Discord) => {
                // Not repeated: it is most likely the secret URL itself.
                checker.problem(
                    u,
                    format!("{at}.url"),
                    "a webhook URL holds its token: put it in an environment variable and name it with url_env (the value is not repeated here)",
                );
                usable = false;
                None
            }
            (Some(u), _) => match url::Url::parse(u.value.trim()) {
                // A token, key or routing key goes with every request to it: never in clear
                // over a network (loopback only, for a relay on the same host).
                Ok(parsed)
                    if parsed.scheme() == "http" && secret.is_some() && !is_loopback(&parsed) =>
                {
                    checker.problem(u, format!("{at}.url"), format!("this {name} channel sends its {what} with every request: the URL must be https (http only to a relay on this host)"));
                    usable = false;
                    None
                }
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https")
                        && parsed.host().is_some()
                        && parsed.password().is_none() =>
                {
                    Some(parsed.to_string())
                }
                _ => {
                    checker.problem(
                        u,
                        format!("{at}.url"),
                        "not an http(s) URL with a host (and no password in it)",
                    );
                    usable = false;
                    None
                }
            },
            (None, Provider::Ntfy) => {
                checker.problem(
                    &entry.kind,
                    format!("{at}.url"),
                    "an ntfy channel needs url: the topic's URL, e.g. https://ntfy.sh/my-topic",
                );
                usable = false;
                None
            }
            (None, _) => None,
        };
        if provider == Provider::Ntfy {
            let topic = url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .map(|u| u.path().trim_matches('/').to_string());
            if topic
                .as_deref()
                .is_some_and(|t| t.is_empty() || t.contains('/'))
            {
                checker.problem(
                    entry.url.as_ref().unwrap_or(&entry.kind),
                    format!("{at}.url"),
                    "an ntfy URL names one topic: https://SERVER/TOPIC",
                );
                usable = false;
            }
        }
        let chat_id = match (&entry.chat_id, provider) {
            (Some(c), Provider::Telegram) => Some(c.value.trim().to_string()),
            (Some(c), _) => {
                checker.problem(
                    c,
                    format!("{at}.chat_id"),
                    format!("this {name} channel takes no chat_id"),
                );
                usable = false;
                None
            }
            (None, Provider::Telegram) => {
                checker.problem(
                    &entry.kind,
                    format!("{at}.chat_id"),
                    "a telegram channel needs chat_id: the chat the bot writes to (e.g. \"12345\" or \"@channel\")",
                );
                usable = false;
                None
            }
            (None, _) => None,
        };
        let mut severities = Vec::new();
        for (j, s) in entry.severity.iter().flatten().enumerate() {
            match SEVERITIES.into_iter().find(|n| *n == s.value.trim()) {
                Some(severity) => severities.push(severity.to_string()),
                None => {
                    checker.problem(
                        s,
                        format!("{at}.severity[{j}]"),
                        format!("{:?}: a severity is down, warning or intermittent", s.value),
                    );
                    usable = false;
                }
            }
        }
        let sites = names_in(checker, entry.sites.as_ref(), &at, known);
        if usable {
            out.push(Notifier {
                id: format!("{at}:{name}"),
                provider,
                secret_env: secret.as_ref().map(|v| v.value.trim().to_string()),
                url,
                chat_id,
                sites,
                severities,
            });
        }
    }
    out
}
