//! Time budgets: how long each phase of an answer may take before a working site counts as
//! slow. Set per site and in `defaults:` (`budget: {ttfb: 2s, dns: 1s}`) or with
//! `--budget ttfb=2s`; every sentence that says a budget names its setting (`budget.ttfb`).

use std::time::Duration;

use crate::observe::PhaseTimings;

/// Time to first byte a page may take when no budget is set: past it, a visitor waits.
pub const DEFAULT_TTFB_BUDGET: Duration = Duration::from_secs(2);

/// A phase of a request that may have a budget (curl's meanings, as in the observations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BudgetPhase {
    Dns,
    Connect,
    Tls,
    Ttfb,
    Total,
}

impl BudgetPhase {
    pub const ALL: [BudgetPhase; 5] = [
        BudgetPhase::Dns,
        BudgetPhase::Connect,
        BudgetPhase::Tls,
        BudgetPhase::Ttfb,
        BudgetPhase::Total,
    ];

    /// Its key under `budget:` and in `--budget KEY=DURATION`.
    pub fn key(self) -> &'static str {
        match self {
            BudgetPhase::Dns => "dns",
            BudgetPhase::Connect => "connect",
            BudgetPhase::Tls => "tls",
            BudgetPhase::Ttfb => "ttfb",
            BudgetPhase::Total => "total",
        }
    }

    /// The phase whose key is `key`.
    pub fn from_key(key: &str) -> Option<BudgetPhase> {
        Self::ALL.into_iter().find(|p| p.key() == key)
    }

    /// The setting, as sentences name it: `budget.ttfb`.
    pub fn setting(self) -> String {
        format!("budget.{}", self.key())
    }

    /// What the phase measures, in words.
    pub fn words(self) -> &'static str {
        match self {
            BudgetPhase::Dns => "DNS lookup",
            BudgetPhase::Connect => "TCP connect",
            BudgetPhase::Tls => "TLS handshake",
            BudgetPhase::Ttfb => "time to first byte",
            BudgetPhase::Total => "total time",
        }
    }

    /// The phase's duration in an observation, when it happened.
    pub fn of(self, timings: &PhaseTimings) -> Option<f64> {
        match self {
            BudgetPhase::Dns => timings.dns,
            BudgetPhase::Connect => timings.connect,
            BudgetPhase::Tls => timings.tls,
            BudgetPhase::Ttfb => timings.ttfb,
            BudgetPhase::Total => Some(timings.total),
        }
    }
}

/// How long each phase of a healthy answer may take. The time to first byte always has one; a
/// phase without one is not judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub dns: Option<Duration>,
    pub connect: Option<Duration>,
    pub tls: Option<Duration>,
    pub ttfb: Duration,
    pub total: Option<Duration>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            dns: None,
            connect: None,
            tls: None,
            ttfb: DEFAULT_TTFB_BUDGET,
            total: None,
        }
    }
}

impl Budget {
    /// The budget of `phase`, if it has one.
    pub fn get(&self, phase: BudgetPhase) -> Option<Duration> {
        match phase {
            BudgetPhase::Dns => self.dns,
            BudgetPhase::Connect => self.connect,
            BudgetPhase::Tls => self.tls,
            BudgetPhase::Ttfb => Some(self.ttfb),
            BudgetPhase::Total => self.total,
        }
    }

    /// Gives `phase` the budget `limit`.
    pub fn set(&mut self, phase: BudgetPhase, limit: Duration) {
        match phase {
            BudgetPhase::Dns => self.dns = Some(limit),
            BudgetPhase::Connect => self.connect = Some(limit),
            BudgetPhase::Tls => self.tls = Some(limit),
            BudgetPhase::Ttfb => self.ttfb = limit,
            BudgetPhase::Total => self.total = Some(limit),
        }
    }

    /// The budget of `phase` in milliseconds, as the observations count.
    pub fn ms(&self, phase: BudgetPhase) -> Option<f64> {
        self.get(phase).map(|d| d.as_secs_f64() * 1000.0)
    }

    /// The time to first byte's budget in milliseconds.
    pub fn ttfb_ms(&self) -> f64 {
        self.ttfb.as_secs_f64() * 1000.0
    }

    /// The phases with a budget, as `check-config` shows them: `ttfb 2s, total 5s`.
    pub fn describe(&self) -> String {
        BudgetPhase::ALL
            .into_iter()
            .filter_map(|p| {
                self.get(p)
                    .map(|d| format!("{} {}", p.key(), crate::words::duration(d)))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// "budget.ttfb = 2s": the setting and its value as the user writes it, for a sentence.
    pub fn named(&self, phase: BudgetPhase) -> String {
        match self.get(phase) {
            Some(d) => format!("{} = {}", phase.setting(), humantime::format_duration(d)),
            None => phase.setting(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_names_its_setting() {
        let mut budget = Budget::default();
        assert_eq!(budget.describe(), "ttfb 2 seconds");
        budget.set(BudgetPhase::Dns, Duration::from_millis(500));
        budget.set(BudgetPhase::Total, Duration::from_secs(5));
        assert_eq!(
            budget.describe(),
            "dns 500 milliseconds, ttfb 2 seconds, total 5 seconds"
        );
        assert_eq!(budget.named(BudgetPhase::Ttfb), "budget.ttfb = 2s");
        assert_eq!(BudgetPhase::from_key("tls"), Some(BudgetPhase::Tls));
        assert_eq!(BudgetPhase::from_key("TTFB"), None);
    }
}
