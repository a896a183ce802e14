//! Plain data the broker stores and returns: stream and subscription settings, positions,
//! deliveries. No Redis or gRPC types here.

use std::time::Duration;

/// Default dedup window of a new stream.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Default ack deadline of a new subscription.
pub const DEFAULT_ACK_DEADLINE: Duration = Duration::from_secs(30);
/// Longest ack deadline a subscription may have.
pub const MAX_ACK_DEADLINE: Duration = Duration::from_secs(600);
/// Default deliveries before an event is dead-lettered.
pub const DEFAULT_MAX_DELIVERY_ATTEMPTS: u32 = 5;
/// Most deliveries a dead-letter policy may allow.
pub const MAX_DELIVERY_ATTEMPTS_LIMIT: u32 = 100;
/// Default longest redelivery backoff.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Longest dedup window a stream may have. Dedup keys live this long at most, and the PUBLISH
/// script sets them with `SET PX` after its XADD: a window Redis cannot add to the clock would
/// fail the script after the event was stored, and every retry would store another copy.
pub const MAX_DEDUP_WINDOW: Duration = Duration::from_secs(7 * 86_400);
/// Longest retention age a stream may have (about 10 years); longer is "keep everything", which
/// an unset age already says.
pub const MAX_RETENTION_AGE: Duration = Duration::from_secs(3650 * 86_400);
/// Longest retry backoff (minimum or maximum) a subscription may have: an event parked longer
/// than a day is better dead-lettered, where it is visible.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(86_400);

/// Settings of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// The stream name.
    pub name: String,
    /// Keep at most about this many events; 0 = unlimited.
    pub max_len: u64,
    /// Keep events at most about this old; zero = unlimited.
    pub max_age: Duration,
    /// Window within which a repeated event id is a duplicate; zero disables dedup.
    pub dedup_window: Duration,
    /// What retention does with events some subscription has not settled.
    pub unsettled: UnsettledAction,
    /// Partitions (1..=[`crate::MAX_PARTITIONS`]), each its own Redis stream and hash tag, so a
    /// stream can spread over cluster masters; fixed at creation.
    pub partitions: u32,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// What retention does with an event that a subscription has not settled (delivered and not
/// acknowledged, or not delivered yet) when it removes it from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnsettledAction {
    /// Dead-letter it in each such subscription, reason `retention` (nothing is lost).
    #[default]
    DeadLetter,
    /// Drop it, counted per subscription (`retention_dropped`).
    Drop,
}

impl StreamConfig {
    /// A stream with default settings (no retention limit, 10 minute dedup window).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_len: 0,
            max_age: Duration::ZERO,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            unsettled: UnsettledAction::DeadLetter,
            partitions: 1,
            created_ms: 0,
        }
    }
}

/// A subscription's circuit breaker (see the admin API for the semantics).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Failure share over the window that opens the breaker, in (0, 1].
    pub failure_ratio: f64,
    /// Fewest outcomes in the window before the breaker may open.
    pub minimum_requests: u32,
    /// Sliding window of outcomes (whole seconds).
    pub window: Duration,
    /// Time the breaker stays open before half-opening.
    pub open_duration: Duration,
    /// Deliveries allowed while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_ratio: 0.5,
            minimum_requests: 20,
            window: Duration::from_secs(30),
            open_duration: Duration::from_secs(30),
            half_open_probes: 5,
        }
    }
}

/// Where a subscription's deliveries come from: the stream itself, or the subscription's
/// redrive stream (dead letters requeued into this subscription only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The stream, read by the subscription's consumer group.
    Stream,
    /// The subscription's redrive stream, read by a group of the same name.
    Redrive,
}

/// Settings of a subscription (a consumer group on a stream).
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionConfig {
    /// The stream it reads.
    pub stream: String,
    /// Its name, unique within the stream.
    pub name: String,
    /// Time a delivery may stay unsettled before the event is redelivered.
    pub ack_deadline: Duration,
    /// Deliveries before the event is dead-lettered instead.
    pub max_delivery_attempts: u32,
    /// Shortest redelivery delay (retry policy).
    pub min_backoff: Duration,
    /// Longest redelivery delay (retry policy).
    pub max_backoff: Duration,
    /// When not empty, only events of these types are delivered.
    pub event_type_filter: Vec<String>,
    /// The circuit breaker, if enabled.
    pub breaker: Option<BreakerPolicy>,
    /// Set for a push subscription: the pusher POSTs its events to an HTTP endpoint, and
    /// Subscribe calls are refused.
    pub push: Option<PushConfig>,
    /// Events with the same ordering key (CloudEvents `partitionkey`) are delivered one at a
    /// time in publish order; fixed at creation.
    pub ordered: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Default time one push may take.
pub const DEFAULT_PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time one push may take.
pub const MAX_PUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// Default pushes in flight per pusher replica and subscription.
pub const DEFAULT_PUSH_CONCURRENCY: u32 = 16;
/// Most pushes in flight per pusher replica and subscription.
pub const MAX_PUSH_CONCURRENCY: u32 = 1000;
/// Default time a replaced signing secret keeps signing.
pub const DEFAULT_ROTATION_WINDOW: Duration = Duration::from_secs(86_400);
/// Longest time a replaced signing secret may keep signing.
pub const MAX_ROTATION_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// How a push subscription's events go into HTTP requests (CloudEvents HTTP binding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentMode {
    /// Attributes as `ce-*` headers, data as the body.
    #[default]
    Binary,
    /// The event as `application/cloudevents+json`.
    Structured,
}

/// Where and how the pusher delivers a push subscription (see the admin API's `PushConfig`).
/// The broker checks the form of every value; the endpoint's reachability policy (https,
/// private addresses) is the admin service's and the pusher's.
#[derive(Clone, PartialEq)]
pub struct PushConfig {
    /// The http(s) URL events are POSTed to.
    pub endpoint: String,
    /// The Standard Webhooks secret (`whsec_<base64>`) that signs every request.
    pub signing_secret: String,
    /// The secret replaced by the last rotation ('' if none): it signs too until
    /// `previous_until_ms`, so receivers can switch secrets without refusing requests.
    pub previous_secret: String,
    /// Until when (ms since the epoch) `previous_secret` signs; 0 when there is none.
    pub previous_until_ms: u64,
    /// How long a replaced secret keeps signing (applied at the next rotation).
    pub rotation_window: Duration,
    /// Time one POST may take; past it the push counts as failed and is retried.
    pub timeout: Duration,
    /// Most POSTs in flight at once per pusher replica.
    pub max_concurrency: u32,
    /// Binary or structured CloudEvents HTTP binding.
    pub content_mode: ContentMode,
}

impl std::fmt::Debug for PushConfig {
    /// Leaves the secrets out: settings get logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("endpoint", &self.endpoint)
            .field("previous_until_ms", &self.previous_until_ms)
            .field("rotation_window", &self.rotation_window)
            .field("timeout", &self.timeout)
            .field("max_concurrency", &self.max_concurrency)
            .field("content_mode", &self.content_mode)
            .finish_non_exhaustive()
    }
}

impl PushConfig {
    /// A push config with default settings.
    pub fn new(endpoint: impl Into<String>, signing_secret: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            signing_secret: signing_secret.into(),
            previous_secret: String::new(),
            previous_until_ms: 0,
            rotation_window: DEFAULT_ROTATION_WINDOW,
            timeout: DEFAULT_PUSH_TIMEOUT,
            max_concurrency: DEFAULT_PUSH_CONCURRENCY,
            content_mode: ContentMode::Binary,
        }
    }

    /// The secrets that sign a request at `now_ms`: the current one, then the replaced one
    /// while its window lasts.
    pub fn signing_secrets(&self, now_ms: u64) -> Vec<&str> {
        let mut secrets = vec![self.signing_secret.as_str()];
        if !self.previous_secret.is_empty() && now_ms < self.previous_until_ms {
            secrets.push(&self.previous_secret);
        }
        secrets
    }

    /// `self` updated by `incoming` at `now_ms`: an empty incoming secret keeps the current
    /// secrets (the secret is write-only, so a read-modify-write never has it); a different
    /// one rotates, the current secret signing on for `incoming.rotation_window`.
    pub fn updated_by(&self, mut incoming: PushConfig, now_ms: u64) -> PushConfig {
        if incoming.signing_secret.is_empty() || incoming.signing_secret == self.signing_secret {
            incoming.signing_secret.clone_from(&self.signing_secret);
            incoming.previous_secret.clone_from(&self.previous_secret);
            incoming.previous_until_ms = self.previous_until_ms;
        } else if incoming.rotation_window.is_zero() {
            incoming.previous_secret.clear();
            incoming.previous_until_ms = 0;
        } else {
            incoming.previous_secret.clone_from(&self.signing_secret);
            let window = u64::try_from(incoming.rotation_window.as_millis()).unwrap_or(u64::MAX);
            incoming.previous_until_ms = now_ms.saturating_add(window);
        }
        incoming
    }
}

impl SubscriptionConfig {
    /// A subscription with default settings.
    pub fn new(stream: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            name: name.into(),
            ack_deadline: DEFAULT_ACK_DEADLINE,
            max_delivery_attempts: DEFAULT_MAX_DELIVERY_ATTEMPTS,
            min_backoff: Duration::ZERO,
            max_backoff: DEFAULT_MAX_BACKOFF,
            event_type_filter: Vec::new(),
            breaker: None,
            push: None,
            ordered: false,
            created_ms: 0,
        }
    }

    /// The retry backoff after failed delivery `attempt` (1-based): exponential from
    /// `min_backoff`, doubling per attempt, capped at `max_backoff`, then lowered by up to 20 %
    /// by `jitter` in [0, 1) but never below `min_backoff`. Zero when `min_backoff` is zero.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        if self.min_backoff.is_zero() {
            return Duration::ZERO;
        }
        let doublings = attempt.saturating_sub(1).min(32);
        let base = self.min_backoff.saturating_mul(1u32 << doublings.min(31)).min(self.max_backoff);
        base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
            .max(self.min_backoff)
            .min(self.max_backoff.max(self.min_backoff))
    }
}

/// A place in a stream, for where a subscription starts or seeks to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Position {
    /// The oldest event kept.
    Earliest,
    /// After the newest event.
    #[default]
    Latest,
    /// The first event published at or after this many ms since the Unix epoch.
    Time(u64),
    /// After this entry id of one partition.
    EntryId {
        /// The entry id (`<ms>-<seq>`).
        id: String,
        /// The partition it is in (the API's `partition_entry`); `None` (the API's plain
        /// `entry_id`) means partition 0 of a stream of one partition and is refused on a
        /// partitioned stream, since entry ids are per partition.
        partition: Option<u32>,
    },
}

/// One event to publish, already validated and encoded.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// The CloudEvent id, the dedup key.
    pub id: String,
    /// The CloudEvent type, stored beside the payload for type filters.
    pub event_type: String,
    /// The encoded CloudEvent.
    pub payload: Vec<u8>,
    /// The event's W3C `traceparent`, stored beside the payload so settlement spans can join the
    /// event's trace without decoding it; empty when none.
    pub traceparent: String,
    /// The event's ordering key (its CloudEvents `partitionkey`), stored beside the payload for
    /// ordered subscriptions; empty when none.
    pub ordering_key: String,
}

/// Where a published event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The stream entry id.
    pub entry_id: String,
    /// True if the event id was seen within the dedup window; `entry_id` is then the first one.
    pub duplicate: bool,
    /// The partition holding `entry_id` (0 on a stream of one partition).
    pub partition: u32,
}

/// One delivery of one event to one consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Where it came from.
    pub source: Source,
    /// Opaque handle to settle this delivery.
    pub ack_id: String,
    /// The stream entry id.
    pub entry_id: String,
    /// The partition the entry is in (0 on a stream of one partition).
    pub partition: u32,
    /// The encoded CloudEvent.
    pub payload: Vec<u8>,
    /// 1 on first delivery, then incremented.
    pub attempt: u32,
    /// Publish time: the entry id's millisecond part.
    pub publish_ms: u64,
    /// The event's `traceparent`, if it has one.
    pub traceparent: Option<String>,
}

/// An event to deliver again to one subscription (an archived one): the stored bytes and the
/// fields the stream entry carries beside them.
#[derive(Debug, Clone, Default)]
pub struct ReplayEvent {
    /// Its entry id on the stream (the partition) it was published to (kept as the redrive
    /// entry's origin).
    pub entry_id: String,
    /// The CloudEvent id (routes the event to a partition when it has no ordering key).
    pub event_id: String,
    /// Its ordering key (CloudEvents `partitionkey`), '' when none: on a partitioned stream it
    /// picks the partition, as at publish.
    pub ordering_key: String,
    /// The CloudEvent type (type filters).
    pub event_type: String,
    /// The encoded CloudEvent, as published.
    pub payload: Vec<u8>,
    /// The event's `traceparent`, '' when none.
    pub traceparent: String,
}

/// Outcome of settling a batch of ack ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Ack ids that were malformed or name an unknown stream or subscription.
    pub invalid: Vec<String>,
    /// Ack ids whose delivery is over (settled, dead-lettered, redelivered, trimmed).
    pub expired: Vec<String>,
    /// The ack ids that took effect, decoded (for metrics and spans of the settlement).
    pub applied: Vec<crate::ack_id::AckId>,
}

/// Parses the millisecond part of an entry id `<ms>-<seq>`.
pub fn entry_ms(entry_id: &str) -> Option<u64> {
    entry_id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

/// An entry id as a sortable key `(ms, seq)`; `(0, 0)` for what does not parse.
pub fn entry_key(id: &str) -> (u64, u64) {
    id.split_once('-').map_or((0, 0), |(ms, seq)| (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0)))
}

/// Whether `id` is a complete stream entry id `<ms>-<seq>`.
pub fn is_entry_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_min_and_max() {
        let mut sub = SubscriptionConfig::new("s", "n");
        assert_eq!(sub.backoff(3, 0.0), Duration::ZERO, "no retry policy, no backoff");
        sub.min_backoff = Duration::from_secs(1);
        sub.max_backoff = Duration::from_secs(10);
        let delays: Vec<u64> = (1..=6).map(|a| sub.backoff(a, 0.0).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        for attempt in 1..=40 {
            for jitter in [0.0, 0.3, 0.999] {
                let d = sub.backoff(attempt, jitter);
                assert!(d >= sub.min_backoff && d <= sub.max_backoff, "{attempt} {jitter} {d:?}");
            }
        }
        assert_eq!(sub.backoff(3, 0.5), Duration::from_millis(3600));
    }

    #[test]
    fn entry_ids_parse() {
        assert_eq!(entry_ms("1700000000000-3"), Some(1_700_000_000_000));
        assert!(is_entry_id("1-0"));
        assert!(!is_entry_id("1"));
        assert!(!is_entry_id("x-1"));
        assert!(!is_entry_id("1-"));
    }

    #[test]
    fn a_new_secret_rotates_and_an_empty_one_keeps_the_stored() {
        let stored = PushConfig::new("https://x.example/h", "whsec_old");
        let kept = stored.updated_by(PushConfig::new("https://y.example/h", ""), 1000);
        assert_eq!((kept.endpoint.as_str(), kept.signing_secret.as_str()), ("https://y.example/h", "whsec_old"));
        assert_eq!(kept.signing_secrets(1000), vec!["whsec_old"]);
        let mut new = PushConfig::new("https://x.example/h", "whsec_new");
        new.rotation_window = Duration::from_secs(10);
        let rotated = stored.updated_by(new.clone(), 1000);
        assert_eq!(rotated.signing_secrets(10_999), vec!["whsec_new", "whsec_old"]);
        assert_eq!(rotated.signing_secrets(11_000), vec!["whsec_new"], "the window is over");
        new.rotation_window = Duration::ZERO;
        assert_eq!(stored.updated_by(new, 1000).signing_secrets(1000), vec!["whsec_new"]);
        // Re-sending the current secret is no rotation: the previous one keeps its window.
        let again = rotated.updated_by(PushConfig::new("https://x.example/h", "whsec_new"), 5000);
        assert_eq!(again.previous_until_ms, rotated.previous_until_ms);
    }
}
