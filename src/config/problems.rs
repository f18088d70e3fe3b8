//! Problems in a config file, and the checker that collects them: every problem at once, each
//! with the line and column where its value is written and the field's path.

use std::fmt;
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::settings::{self, Place, Problem, Written};

/// One problem in the file, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigProblem {
    pub line: u64,
    pub column: u64,
    /// The field's path, e.g. `sites[2].origins[0]`.
    pub path: String,
    pub message: String,
}

impl From<Problem> for ConfigProblem {
    fn from(problem: Problem) -> Self {
        let (line, column, path) = match problem.place {
            Place::Field { line, column, path } => (line, column, path),
            Place::Flag(flag) => (1, 1, flag.to_string()),
        };
        Self {
            line,
            column,
            path,
            message: problem.message,
        }
    }
}

/// Why a config cannot be used. Displays one line per problem: `file:line:column: path: message`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read it ({})", crate::words::io_error(source))]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// The file has problems.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<ConfigProblem>,
    },
}

fn render_problems(file: &str, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}:{}:{}: {}: {}", p.line, p.column, p.path, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a spanned value of the file is, as the settings core names places.
pub fn place<T>(at: &Spanned<T>, path: impl fmt::Display) -> Place {
    Place::Field {
        line: at.referenced.line(),
        column: at.referenced.column(),
        path: path.to_string(),
    }
}

/// A spanned value as the settings core takes it.
pub fn written<T: Clone>(at: &Spanned<T>, path: impl fmt::Display) -> Written<T> {
    Written::new(at.value.clone(), place(at, path))
}

/// Collects every problem, and the warnings (things that work but look wrong).
#[derive(Default)]
pub struct Checker {
    pub problems: Vec<ConfigProblem>,
    pub warnings: Vec<String>,
}

impl Checker {
    /// A problem with the value `at`.
    pub fn problem<T>(
        &mut self,
        at: &Spanned<T>,
        path: impl fmt::Display,
        message: impl Into<String>,
    ) {
        self.problems.push(ConfigProblem {
            line: at.referenced.line(),
            column: at.referenced.column(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Problems the settings core found.
    pub fn report(&mut self, problems: Vec<Problem>) {
        self.problems
            .extend(problems.into_iter().map(ConfigProblem::from));
    }

    /// A duration field, `default` when absent (or unusable: its problem is kept).
    pub fn duration(
        &mut self,
        value: Option<&Spanned<String>>,
        path: &str,
        default: Duration,
        max: Option<Duration>,
    ) -> Duration {
        let Some(text) = value else {
            return default;
        };
        match settings::duration(&written(text, path), max) {
            Ok(d) => {
                // Written some other way than `90s` / `5m` / `1h30m` (or the words it is read
                // as): say how it was read, so that `1M` (a month) is not taken for a minute.
                let plain = text.value.trim();
                let said = crate::words::duration(d);
                let squeezed = |s: &str| -> String {
                    s.chars()
                        .filter(|c| !c.is_whitespace())
                        .collect::<String>()
                        .to_lowercase()
                };
                if !canonical_duration(plain) && squeezed(plain) != squeezed(&said) {
                    self.warnings
                        .push(format!("{path}: {plain:?} read as {said}"));
                }
                d
            }
            Err(problem) => {
                self.report(vec![problem]);
                default
            }
        }
    }

    /// An IANA time zone name, if given (UTC otherwise, and when the name is unknown: reported).
    pub fn zone(&mut self, value: Option<&Spanned<String>>, path: &str) -> crate::text::Zone {
        let Some(name) = value else {
            return crate::text::Zone::default();
        };
        match crate::text::Zone::named(name.value.trim()) {
            Some(zone) => zone,
            None => {
                self.problem(
                    name,
                    path,
                    format!(
                        "{:?} is not an IANA time zone name (e.g. Europe/Berlin, America/New_York, UTC)",
                        name.value
                    ),
                );
                crate::text::Zone::default()
            }
        }
    }

    /// Each address checked by the mailer's own parser, so what passes here can be sent.
    pub fn emails(&mut self, list: &[Spanned<String>], path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, address) in list.iter().enumerate() {
            let value = address.value.trim();
            match mailbox_problem(value) {
                None => out.push(value.to_string()),
                Some(why) => self.problem(address, format!("{path}[{i}]"), why),
            }
        }
        out
    }

    /// Checks the name of the environment variable that holds a secret (never the secret).
    pub fn secret_variable(
        &mut self,
        var: &Spanned<String>,
        path: &str,
        example: &str,
        what: &str,
    ) {
        let valid = !var.value.is_empty()
            && var
                .value
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            && !var.value.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            // The value is never repeated: it may well be the secret itself.
            self.problem(var, path, format!("this looks like a secret, not a variable name: name the environment variable that holds the {what} (e.g. {example}: A-Z, 0-9 and _); the {what} itself never goes in this file"));
        } else if std::env::var_os(&var.value).is_none() {
            self.warnings.push(format!(
                "{path}: {} is not set in this environment",
                var.value
            ));
        }
    }
}

/// Whether a duration is written in the units probe's own examples use, number and unit each:
/// `90s`, `5m`, `1h30m`, `1h 30m`, `2500ms`, `30d`.
fn canonical_duration(text: &str) -> bool {
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let after = &rest[digits..];
        let letters = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        if digits == 0 || !["ms", "s", "m", "h", "d"].contains(&&after[..letters]) {
            return false;
        }
        rest = after[letters..].trim_start();
    }
    !text.is_empty()
}

/// How an address may be written, for every message about one.
const ADDRESS_EXAMPLE: &str = "write e.g. ops@example.com or \"Ops <ops@example.com>\"";

/// Why `value` is not one mail address the mailer can send to (`None` when it is).
pub fn mailbox_problem(value: &str) -> Option<String> {
    if value.chars().any(crate::text::is_unsafe) {
        return Some(format!(
            "{value:?} holds a control or invisible character; it would go into a mail header"
        ));
    }
    if value.contains(',') || value.contains(';') {
        return Some(format!(
            "{value:?} holds several addresses; give each its own list entry"
        ));
    }
    if value.is_empty() {
        return Some(format!("an empty address: {ADDRESS_EXAMPLE}"));
    }
    match value.parse::<lettre::message::Mailbox>() {
        Ok(mailbox)
            if mailbox.email.domain().contains('.') || mailbox.email.domain() == "localhost" =>
        {
            None
        }
        Ok(_) => Some(format!(
            "{value:?}: the domain has no dot (e.g. ops@example.com)"
        )),
        Err(e) => Some(format!(
            "{value:?} is not a mail address: {}; {ADDRESS_EXAMPLE}",
            why_not_an_address(value, &e)
        )),
    }
}

/// What is wrong with an address the mailer refuses, in words (its own are "Invalid input").
fn why_not_an_address(value: &str, e: &lettre::address::AddressError) -> String {
    use lettre::address::AddressError;
    // The address itself is inside the angle brackets when a name goes with it.
    let address = match (value.rfind('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => &value[open + 1..close],
        (None, None) => value,
        _ => return "an angle bracket is not closed (a name goes with an address as \"Ops <ops@example.com>\")".into(),
    };
    let address = address.trim();
    match address.matches('@').count() {
        0 => "it has no @ (an address is mailbox@domain)".into(),
        1 => {
            let (mailbox, domain) = address.split_once('@').unwrap_or_default();
            if mailbox.is_empty() {
                "nothing before the @ (the mailbox)".into()
            } else if domain.is_empty() {
                "nothing after the @ (the domain)".into()
            } else if address.contains(char::is_whitespace) {
                "it holds a space (a name goes with an address as \"Ops <ops@example.com>\")".into()
            } else if let Some(c) = mailbox
                .chars()
                .find(|c| !c.is_alphanumeric() && !"!#$%&'*+-/=?^_`{|}~.".contains(*c))
            {
                format!("the mailbox {mailbox:?} holds {c:?}, which an address cannot hold")
            } else if let Some(c) = domain
                .chars()
                .find(|c| !c.is_alphanumeric() && !"-.".contains(*c))
            {
                format!("the domain {domain:?} holds {c:?}, which a domain name cannot hold")
            } else if domain.split('.').any(str::is_empty) {
                format!("the domain {domain:?} has an empty part between its dots")
            } else if mailbox.split('.').any(str::is_empty) {
                format!(
                    "the mailbox {mailbox:?} has a dot at its start or its end, or two in a row"
                )
            } else {
                match e {
                    AddressError::InvalidUser => format!("the mailbox {mailbox:?} is not one"),
                    AddressError::InvalidDomain => format!("{domain:?} is not a domain name"),
                    _ => "it is not written as an address is (mailbox@domain)".into(),
                }
            }
        }
        n => format!("it has {n} @ signs; an address has one, between the mailbox and the domain"),
    }
}
