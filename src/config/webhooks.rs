//! `webhooks:` — URLs that receive every incident transition as a JSON POST.

use schemars::JsonSchema;
use serde::Deserialize;

use super::lists::{maybe_one_or_many, OneOrMany};
use super::problems::Checker;
use super::sites::names_in;
use super::Text;

/// A webhook: every incident transition POSTed as JSON, retried through the outbox like mail.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (http or https).
    #[schemars(with = "String")]
    pub url: Text,
    /// The environment variable holding a shared secret: each body's HMAC-SHA256 is sent in
    /// `X-Probe-Signature: sha256=HEX`.
    #[schemars(with = "Option<String>")]
    pub secret_env: Option<Text>,
    /// Site names (one or a list); all sites when absent.
    #[serde(default, deserialize_with = "maybe_one_or_many")]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub sites: Option<Vec<Text>>,
}

/// A webhook, checked; the secret is read from the environment when a delivery is signed.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret_env: Option<String>,
    /// Empty: every site.
    pub sites: Vec<String>,
}

pub fn check(
    checker: &mut Checker,
    raw: &[WebhookConfig],
    known: &dyn Fn(&str) -> bool,
) -> Vec<Webhook> {
    let mut out = Vec::new();
    for (i, hook) in raw.iter().enumerate() {
        let at = format!("webhooks[{i}]");
        let value = hook.url.value.trim();
        let url = match url::Url::parse(value) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                // Not repeated: a webhook's URL often carries its token.
                checker.problem(
                    &hook.url,
                    format!("{at}.url"),
                    "not an http(s) URL with a host (the value is not repeated here: webhook URLs often hold a token)",
                );
                continue;
            }
        };
        if let Some(var) = &hook.secret_env {
            checker.secret_variable(var, &format!("{at}.secret_env"), "WEBHOOK_SECRET", "secret");
        }
        let sites = names_in(checker, hook.sites.as_ref(), &at, known);
        out.push(Webhook {
            url: url.to_string(),
            secret_env: hook.secret_env.as_ref().map(|v| v.value.clone()),
            sites,
        });
    }
    out
}
