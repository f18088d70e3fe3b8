//! Numbers as people read them in `check-config`'s explanation and in config and command-line
//! messages: a count with its plural right (`1 retry`, `3 retries`), a configured duration in
//! words (`1 day`, `1 hour 30 minutes`). Exact, unlike `text::duration`, which rounds the
//! durations mails and feeds report: a setting is said as it was set.

use std::time::Duration;

/// `n` `thing`s with the plural right: `1 run`, `3 runs` (`things` when the plural is not an
/// added `s`: `1 retry`, `2 retries`).
pub fn plural(n: u64, thing: &str, things: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {things}")
    }
}

/// A configured duration in words, every unit it holds from days down to milliseconds:
/// `30 days`, `5 minutes`, `1 hour 30 minutes`, `2 seconds 500 milliseconds`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    let units = [
        (secs / 86_400, "day"),
        (secs % 86_400 / 3600, "hour"),
        (secs % 3600 / 60, "minute"),
        (secs % 60, "second"),
        (u64::from(d.subsec_millis()), "millisecond"),
    ];
    let said: Vec<String> = units
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| plural(*n, unit, &format!("{unit}s")))
        .collect();
    if said.is_empty() {
        "less than a millisecond".to_string()
    } else {
        said.join(" ")
    }
}

/// Why a file could not be read or written, in words: what the system said, without its error
/// number (`No such file or directory`, not `… (os error 2)`).
pub fn io_error(e: &std::io::Error) -> String {
    let said = e.to_string();
    match said.rfind(" (os error ") {
        Some(at) if said.ends_with(')') => said[..at].to_string(),
        _ => said,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_are_said_with_their_plurals() {
        assert_eq!(plural(1, "retry", "retries"), "1 retry");
        assert_eq!(plural(0, "retry", "retries"), "0 retries");
        assert_eq!(plural(2, "run", "runs"), "2 runs");
        let said = |secs| duration(Duration::from_secs(secs));
        assert_eq!(said(1), "1 second");
        assert_eq!(said(10), "10 seconds");
        assert_eq!(said(60), "1 minute");
        assert_eq!(said(300), "5 minutes");
        assert_eq!(said(90), "1 minute 30 seconds");
        assert_eq!(said(5400), "1 hour 30 minutes");
        assert_eq!(said(4 * 3600), "4 hours");
        assert_eq!(said(86_400), "1 day");
        assert_eq!(said(30 * 86_400), "30 days");
        assert_eq!(said(86_400 + 3600 + 61), "1 day 1 hour 1 minute 1 second");
        assert_eq!(
            duration(Duration::from_millis(2500)),
            "2 seconds 500 milliseconds"
        );
        assert_eq!(duration(Duration::from_millis(1)), "1 millisecond");
        assert_eq!(
            duration(Duration::from_micros(10)),
            "less than a millisecond"
        );
    }

    #[test]
    fn a_system_error_is_said_without_its_number() {
        let missing = std::fs::read("/nonexistent/probes.yaml").unwrap_err();
        assert_eq!(io_error(&missing), "No such file or directory");
        let other = std::io::Error::other("disk on fire");
        assert_eq!(io_error(&other), "disk on fire");
    }
}
