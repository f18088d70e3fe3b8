//! `smtp:` — the mail server alerts go through. The password is named by an environment
//! variable, never written here, and never sent unencrypted unless `allow_plaintext_auth` says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;

use super::problems::{mailbox_problem, place, Checker};
use super::Text;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (port 587). The default.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only when the config says so (port 25).
    Plain,
}

/// The mail server.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    #[schemars(with = "String")]
    pub host: Text,
    /// Default: 587 for starttls, 465 for tls, 25 for plain.
    pub port: Option<u16>,
    pub security: Option<SmtpSecurity>,
    #[schemars(with = "Option<String>")]
    pub username: Option<Text>,
    /// The environment variable holding the password (never the password itself).
    #[schemars(with = "Option<String>")]
    pub password_env: Option<Text>,
    /// Send the password even over an unencrypted connection (`security: plain`). Default false:
    /// such a config is refused, since anyone on the path reads the password.
    pub allow_plaintext_auth: Option<bool>,
    /// The sender, e.g. `probe <probe@example.com>`.
    #[schemars(with = "String")]
    pub from: Text,
    /// A PEM file of CA certificates to trust for the SMTP server.
    #[schemars(with = "Option<String>")]
    pub ca_file: Option<Text>,
    /// Bound on one delivery (default `30s`).
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Text>,
}

/// SMTP settings with defaults applied; the password is read from the environment when mail is
/// sent, never kept here.
#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password_env: Option<String>,
    /// The password may go over an unencrypted connection (only with `security: plain`).
    pub allow_plaintext_auth: bool,
    pub from: String,
    pub ca_file: Option<PathBuf>,
    /// Bound on one delivery, the whole SMTP conversation.
    pub timeout: Duration,
}

pub fn check(checker: &mut Checker, raw: &SmtpConfig, base: &Path) -> Smtp {
    let security = raw.security.unwrap_or(SmtpSecurity::Starttls);
    if let Some(var) = &raw.password_env {
        checker.secret_variable(var, "smtp.password_env", "SMTP_PASSWORD", "password");
    }
    if raw.username.is_some() && raw.password_env.is_none() {
        checker
            .warnings
            .push("smtp.username is set without smtp.password_env: AUTH will be skipped".into());
    }
    let allow_plaintext_auth = raw.allow_plaintext_auth.unwrap_or(false);
    let logs_in = raw.username.is_some() && raw.password_env.is_some();
    if security == SmtpSecurity::Plain && logs_in {
        if allow_plaintext_auth {
            checker.warnings.push("smtp: security is plain and allow_plaintext_auth is true: the SMTP password crosses the network unencrypted, readable by anyone on the path".into());
        } else {
            let spot = raw.password_env.as_ref().unwrap_or(&raw.host);
            checker.problem(spot, "smtp.password_env", "security: plain would send the password unencrypted: use security: starttls (587) or tls (465), or, on a network you trust, set allow_plaintext_auth: true");
        }
    }
    if let Some(file) = &raw.ca_file {
        let path = base.join(file.value.trim());
        if let Err(problem) = crate::settings::ca_file(&path, &place(file, "smtp.ca_file")) {
            checker.report(vec![problem]);
        }
    }
    let from = raw.from.value.trim();
    if let Some(why) = mailbox_problem(from) {
        checker.problem(&raw.from, "smtp.from", why);
    }
    Smtp {
        host: raw.host.value.trim().to_string(),
        port: raw.port.unwrap_or(match security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::Plain => 25,
        }),
        security,
        username: raw.username.as_ref().map(|u| u.value.clone()),
        password_env: raw.password_env.as_ref().map(|p| p.value.clone()),
        allow_plaintext_auth,
        from: from.to_string(),
        ca_file: raw.ca_file.as_ref().map(|p| base.join(p.value.trim())),
        timeout: checker.duration(
            raw.timeout.as_ref(),
            "smtp.timeout",
            Duration::from_secs(30),
            None,
        ),
    }
}
