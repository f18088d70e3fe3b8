//! The delivery pipeline: one flusher for every channel. A channel (mail, webhooks, and any
//! later one: one file and a config entry) says where a message goes and delivers it; the
//! flusher walks the due messages, holds back a destination that is failing (its other messages
//! wait for its backoff instead of each waiting out the same failure), and records what each
//! attempt came to: delivered (marked sent, the marking retried while the store is busy), refused
//! for now (tried again after a backoff) or refused for good (given up with the reason, logged
//! once, listed by `probe outbox`).
//!
//! Recording is where a delivery could happen twice: the server has accepted the message, and the
//! store must say so before the next pass reads the outbox. A busy or full store is retried for a
//! while; what still cannot be recorded is remembered for the rest of the process, so this
//! process never sends it again. A process that dies in that window, or an answer that never
//! reaches us although the destination took the message (a timeout after the last byte), leaves a
//! message that is sent again (with the same Message-ID and delivery id): the at-least-once edge
//! the README describes.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;

use crate::store::{Channel as ChannelKind, OutboxMessage, Store, StoreError};

/// Why one delivery failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Never: an SMTP 5xx for this recipient or message, a webhook's 4xx (other than 408, 429
    /// and a refused login), a message that cannot be built. Given up, the reason kept.
    #[error("{0}")]
    Permanent(String),
    /// Not now, this message only (an SMTP 4xx for this recipient, a webhook's 500): tried again
    /// after its backoff.
    #[error("{0}")]
    Transient(String),
    /// Not now, and the destination itself is failing (unreachable, timing out, asking us to slow
    /// down, refusing our sender or our login, our settings for it unusable): its other messages
    /// wait for its backoff too.
    #[error("{0}")]
    DestinationFailing(String),
    /// The destination asks us to wait (HTTP 429 with `Retry-After`): held back like a failing
    /// destination, and not before `wait` has passed.
    #[error("{reason}")]
    Throttled { reason: String, wait: Duration },
    /// Not now: our own settings for the destination are unusable here (a variable that is not
    /// set, a CA file that cannot be read). Nothing was sent; its messages are tried again as
    /// soon as the next pass (a `probe run` a minute later may have the variable), without a
    /// growing backoff.
    #[error("{0}")]
    Settings(String),
}

impl DeliveryError {
    /// Whether sending again can never succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Permanent(_))
    }

    /// How long the destination asked us to wait (nothing unless it said).
    pub fn wait(&self) -> Duration {
        match self {
            DeliveryError::Throttled { wait, .. } => *wait,
            _ => Duration::ZERO,
        }
    }
}

/// A way of delivering outbox messages. `deliver` is called once per due message of this
/// channel, in order; `finish` once at the end of a pass.
pub trait Channel {
    /// The outbox rows this channel delivers.
    fn kind(&self) -> ChannelKind;
    /// Where `message` goes (a mail server, a URL): the unit that is held back while failing.
    fn destination(&self, message: &OutboxMessage) -> String;
    /// Delivers one message.
    fn deliver(
        &mut self,
        message: &OutboxMessage,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
    /// Ends the pass (closes a connection kept open between messages).
    fn finish(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// What one pass over the outbox did, for one channel or all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushSummary {
    pub sent: usize,
    /// Tried and refused for now: waiting for their backoff.
    pub failed: usize,
    /// Not tried this pass, because their destination is failing: still due.
    pub deferred: usize,
    /// Refused for good: never tried again.
    pub given_up: usize,
    /// Why messages wait, each reason once (`the password variable SMTP_PASSWORD is not set`).
    pub why: Vec<String>,
}

impl FlushSummary {
    /// Both summaries added up.
    pub fn plus(self, other: FlushSummary) -> FlushSummary {
        let mut why = self.why;
        for reason in other.why {
            if !why.contains(&reason) {
                why.push(reason);
            }
        }
        FlushSummary {
            sent: self.sent + other.sent,
            failed: self.failed + other.failed,
            deferred: self.deferred + other.deferred,
            given_up: self.given_up + other.given_up,
            why,
        }
    }

    /// Keeps why a message waits (each reason once, a few at most).
    fn note(&mut self, reason: &str) {
        if self.why.len() < 5 && !self.why.iter().any(|r| r == reason) {
            self.why.push(reason.to_string());
        }
    }

    /// Messages still waiting to be delivered after this pass.
    pub fn waiting(&self) -> usize {
        self.failed + self.deferred
    }
}

/// Delivers the messages of `channel`'s kind among `due` (the outbox rows read for this pass).
/// A destination that fails is not tried again until its backoff has passed; a message refused
/// on its own account never holds back the others.
pub async fn flush<C: Channel>(
    store: &mut dyn Store,
    channel: &mut C,
    due: &[OutboxMessage],
    now: OffsetDateTime,
    recorder: &mut Recorder,
) -> Result<FlushSummary, StoreError> {
    let kind = channel.kind();
    let mut summary = FlushSummary::default();
    let mut tried = false;
    for message in due.iter().filter(|m| m.channel == kind) {
        let destination = (kind, channel.destination(message));
        if let Some(hold) = recorder.held.get(&destination).filter(|h| h.until > now) {
            summary.deferred += 1;
            // A chat or paging channel's messages keep their order, across processes too (a
            // `probe run` a minute later): the later ones wait until after the failed one is
            // tried again (a resolve never overtakes its trigger).
            if kind == ChannelKind::Chat {
                let after = hold.until + time::Duration::seconds(1);
                if let Err(e) = store.defer_message(message.id, after) {
                    channel.finish().await;
                    return Err(e);
                }
            }
            continue;
        }
        tried = true;
        let outcome = channel.deliver(message).await;
        match &outcome {
            Ok(()) => {
                recorder.held.remove(&destination);
            }
            Err(DeliveryError::Settings(_)) => {
                // Held for the rest of this pass; tried again at the next.
                recorder.held.insert(
                    destination,
                    Hold {
                        until: now + time::Duration::SECOND,
                        failures: 0,
                    },
                );
            }
            Err(e @ (DeliveryError::DestinationFailing(_) | DeliveryError::Throttled { .. })) => {
                let failures = recorder.held.get(&destination).map_or(0, |h| h.failures);
                let wait = backoff(failures.max(message.attempts)).max(e.wait());
                recorder.held.insert(
                    destination,
                    Hold {
                        until: now + wait,
                        failures: failures + 1,
                    },
                );
            }
            Err(_) => {}
        }
        if let Err(e) = recorder
            .record(store, message, &outcome, now, &mut summary)
            .await
        {
            // The store failed: end the pass, but close the channel properly first (an SMTP
            // connection says QUIT rather than being dropped).
            channel.finish().await;
            return Err(e);
        }
    }
    if tried {
        channel.finish().await;
    }
    Ok(summary)
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

/// A failing destination, held back until its backoff has passed.
#[derive(Debug, Clone, Copy)]
struct Hold {
    until: OffsetDateTime,
    /// Consecutive failures: the backoff doubles with each.
    failures: u32,
}

/// Records delivery outcomes across the passes of one process: remembers the deliveries it could
/// not record as sent, and which destinations are failing.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Outbox ids delivered but not yet recorded as sent, with when they were delivered.
    unrecorded: HashMap<i64, OffsetDateTime>,
    /// Failing destinations, by channel and destination.
    held: HashMap<(ChannelKind, String), Hold>,
    /// Unusable settings already logged.
    said: std::collections::HashSet<String>,
}

/// How long a delivery claimed by this process is left to it before another prober may take it
/// over (when this one died mid-delivery): longer than a delivery pass takes.
pub const CLAIM_LEASE: std::time::Duration = std::time::Duration::from_secs(300);

impl Recorder {
    /// The due messages minus those this process delivered and could not record yet (whose
    /// recording is tried again first).
    pub fn due(
        &mut self,
        store: &mut dyn Store,
        now: OffsetDateTime,
        channels: &[crate::store::Channel],
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let pending: Vec<(i64, OffsetDateTime)> =
            self.unrecorded.iter().map(|(id, at)| (*id, *at)).collect();
        for (id, at) in pending {
            if store.mark_sent(id, at).is_ok() {
                self.unrecorded.remove(&id);
            }
        }
        let mut due = store.claim_due(now, CLAIM_LEASE, channels)?;
        due.retain(|m| !self.unrecorded.contains_key(&m.id));
        Ok(due)
    }

    /// Records what one attempt came to for `message`, and counts it in `summary`. A delivered
    /// message whose marking keeps failing is remembered (never sent again by this process) and
    /// the store's error returned.
    async fn record(
        &mut self,
        store: &mut dyn Store,
        message: &OutboxMessage,
        outcome: &Result<(), DeliveryError>,
        now: OffsetDateTime,
        summary: &mut FlushSummary,
    ) -> Result<(), StoreError> {
        match outcome {
            Ok(()) => {
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
            Err(DeliveryError::Permanent(reason)) => {
                summary.given_up += 1;
                tracing::error!(key = %message.key, attempts = message.attempts + 1, error = %reason, "refused for good; given up, not retried (see `probe outbox`)");
                store.mark_given_up(message.id, reason, now)
            }
            Err(DeliveryError::Settings(reason)) => {
                summary.failed += 1;
                summary.note(reason);
                // Said once per process, not at every pass it waits.
                if self.said.insert(reason.clone()) {
                    tracing::warn!(key = %message.key, error = %reason, "not delivered: our settings for it are unusable here; tried again at every pass until they are");
                }
                store.mark_failed(message.id, reason, now)
            }
            Err(e) => {
                summary.failed += 1;
                summary.note(&e.to_string());
                let retry_at = now + backoff(message.attempts).max(e.wait());
                tracing::warn!(key = %message.key, attempts = message.attempts + 1, error = %e, retry_at = %crate::text::rfc3339(retry_at), "not delivered; will retry");
                store.mark_failed(message.id, &e.to_string(), retry_at)
            }
        }
    }
}

/// A stable id for a key that may hold anything (spaces, non-ASCII, control characters): a
/// readable part for people, then 128 bits of its SHA-256, so distinct keys never share an id
/// (`shop eu` and `shop-eu` read alike but differ in the hash). Only `A-Za-z0-9.-` appear.
pub fn stable_id(key: &str) -> String {
    stable_id_in(key, "")
}

/// `stable_id` of `key` within `scope` (a store's identity): readable as the key, distinct for
/// distinct scopes.
pub fn stable_id_in(key: &str, scope: &str) -> String {
    let hashed = if scope.is_empty() {
        key.to_string()
    } else {
        format!("{scope}\n{key}")
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, hashed.as_bytes());
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
