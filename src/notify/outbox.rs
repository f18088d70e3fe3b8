//! What one delivery attempt came to, and how it is recorded in the outbox: delivered (marked
//! sent, the marking retried while the store is busy), refused for now (tried again after a
//! backoff) or refused for good (given up, with the reason, and logged once).
//!
//! Recording is where a delivery could happen twice: the server has accepted the message, and the
//! store must say so before the next pass reads the outbox. A busy or full store is retried for a
//! while; what still cannot be recorded is remembered for the rest of the process, so this
//! process never sends it again. A process that dies in that window, or an answer that never
//! reaches us although the destination took the message (a timeout after the last byte), leaves a
//! message that is sent again (with the same Message-ID and delivery id): the at-least-once edge
//! the README describes.

use std::collections::HashMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{OutboxMessage, Store, StoreError};

/// What one attempt to deliver one message came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The destination accepted it.
    Delivered,
    /// Not now (server down, 4xx, timeout): tried again after its backoff.
    Transient(String),
    /// Never (5xx from an SMTP server, 4xx from a webhook, a message that cannot be built):
    /// given up, the reason kept.
    Permanent(String),
}

/// What one pass over the outbox did, for one channel or all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushSummary {
    pub sent: usize,
    /// Tried and refused for now: waiting for their backoff.
    pub failed: usize,
    /// Not tried this pass, because their destination had just failed: still due next pass.
    pub deferred: usize,
    /// Refused for good: never tried again.
    pub given_up: usize,
}

impl FlushSummary {
    /// Both summaries added up.
    pub fn plus(self, other: FlushSummary) -> FlushSummary {
        FlushSummary {
            sent: self.sent + other.sent,
            failed: self.failed + other.failed,
            deferred: self.deferred + other.deferred,
            given_up: self.given_up + other.given_up,
        }
    }

    /// Messages still waiting to be delivered after this pass.
    pub fn waiting(&self) -> usize {
        self.failed + self.deferred
    }
}

/// The wait before the next attempt after `attempts` failures: 1 min, doubling, at most 1 h.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(60u64.saturating_mul(1 << attempts.min(6)).min(3600))
}

/// Pauses between tries to record an outcome while the store is busy or full; each try itself
/// waits up to the store's busy timeout (5 s): five tries and these pauses, about half a minute.
const RECORD_PAUSES: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Records delivery outcomes, and remembers the deliveries it could not record as sent.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Outbox ids delivered but not yet recorded as sent, with when they were delivered.
    unrecorded: HashMap<i64, OffsetDateTime>,
}

impl Recorder {
    /// The due messages minus those this process delivered and could not record yet (whose
    /// recording is tried again first).
    pub fn due(
        &mut self,
        store: &mut dyn Store,
        now: OffsetDateTime,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let pending: Vec<(i64, OffsetDateTime)> =
            self.unrecorded.iter().map(|(id, at)| (*id, *at)).collect();
        for (id, at) in pending {
            if store.mark_sent(id, at).is_ok() {
                self.unrecorded.remove(&id);
            }
        }
        let mut due = store.due_messages(now)?;
        due.retain(|m| !self.unrecorded.contains_key(&m.id));
        Ok(due)
    }

    /// Records what `attempt` came to for `message`, and counts it in `summary`. A delivered
    /// message whose marking keeps failing is remembered (never sent again by this process) and
    /// the store's error returned.
    pub async fn record(
        &mut self,
        store: &mut dyn Store,
        message: &OutboxMessage,
        attempt: &Attempt,
        now: OffsetDateTime,
        summary: &mut FlushSummary,
    ) -> Result<(), StoreError> {
        match attempt {
            Attempt::Delivered => {
                summary.sent += 1;
                let at = OffsetDateTime::now_utc();
                let mut result = store.mark_sent(message.id, at);
                for pause in RECORD_PAUSES {
                    match &result {
                        Err(e) if e.is_transient() => {
                            tokio::time::sleep(pause).await;
                            result = store.mark_sent(message.id, at);
                        }
                        _ => break,
                    }
                }
                if let Err(e) = result {
                    self.unrecorded.insert(message.id, at);
                    tracing::error!(
                        key = %message.key,
                        error = %e,
                        "delivered, but the store cannot record it: this process will not send it again; a restart before the store recovers would send it once more"
                    );
                    return Err(e);
                }
                Ok(())
            }
            Attempt::Transient(reason) => {
                summary.failed += 1;
                tracing::warn!(key = %message.key, attempts = message.attempts + 1, error = %reason, "not delivered; will retry");
                store.mark_failed(message.id, reason, now + backoff(message.attempts))
            }
            Attempt::Permanent(reason) => {
                summary.given_up += 1;
                tracing::error!(key = %message.key, attempts = message.attempts + 1, error = %reason, "refused for good; given up, not retried");
                store.mark_given_up(message.id, reason, now)
            }
        }
    }
}

/// A stable id for a key that may hold anything (spaces, non-ASCII, control characters): a
/// readable part for people, then 128 bits of its SHA-256, so distinct keys never share an id
/// (`shop eu` and `shop-eu` read alike but differ in the hash). Only `A-Za-z0-9.-` appear.
pub fn stable_id(key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hash = crate::text::hex(&digest.as_ref()[..16]);
    let mut readable = String::new();
    for c in key.chars() {
        if c.is_ascii_alphanumeric() {
            readable.push(c);
        } else if !readable.ends_with('-') {
            readable.push('-');
        }
        if readable.len() >= 48 {
            break;
        }
    }
    let readable = readable.trim_matches('-');
    if readable.is_empty() {
        hash
    } else {
        format!("{readable}.{hash}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        let secs: Vec<u64> = (0..9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    }

    #[test]
    fn stable_ids_differ_for_keys_that_read_alike() {
        let pairs = [
            ("shop eu/3/opened", "shop-eu/3/opened"),
            ("café/1/opened", "cafè/1/opened"),
            ("a\nb/1/opened", "a b/1/opened"),
        ];
        for (a, b) in pairs {
            assert_ne!(stable_id(a), stable_id(b), "{a:?} vs {b:?}");
            assert_eq!(stable_id(a), stable_id(a));
        }
        let id = stable_id("shop eu/3/opened#mail-ops@example.com");
        assert!(
            id.starts_with("shop-eu-3-opened-mail-ops-example-com."),
            "{id}"
        );
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        assert_eq!(stable_id("//").len(), 32);
    }
}
