//! Redis key layout and name validation.
//!
//! Every key of one stream shares the hash tag `{<stream>}`, so multi-key scripts stay atomic
//! on Redis Cluster:
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `<p>:streams` | sorted set (all scores 0) | names of all streams, for listing in name order |
//! | `<p>:{<s>}` | stream | the events: field `e` = encoded CloudEvent, `t` = its type |
//! | `<p>:{<s>}:meta` | hash | stream settings: `created_ms`, `max_len`, `max_age_ms`, `dedup_ms`, `drop_unsettled` |
//! | `<p>:{<s>}:subs` | set | names of the stream's subscriptions |
//! | `<p>:{<s>}:sub:<n>` | hash | subscription settings (the consumer group `<n>` lives on the stream), and its counters `filtered`, `retention_dead_lettered`, `retention_dropped`, `dlq_overflow` |
//! | `<p>:{<s>}:dlq:<n>` | stream | dead letters of subscription `<n>` |
//! | `<p>:{<s>}:redrive:<n>` | stream | dead letters requeued into subscription `<n>` only (its own group `<n>`) |
//! | `<p>:{<s>}:delay:<n>` | sorted set | entries of `<n>` waiting out a retry backoff: entry id -> due ms |
//! | `<p>:{<s>}:redrive:<n>:delay` | sorted set | the same for the redrive stream |
//! | `<p>:{<s>}:errors:<n>` | hash | last nack reason of pending entries of `<n>` (`s:<id>`, `r:<id>`) |
//! | `<p>:{<s>}:breaker:<n>` | hash | circuit breaker of `<n>`: state, open-until, probes, per-second outcome counts |
//! | `<p>:{<s>}:dedup:<id>` | string with TTL | entry id of the first publish of event `<id>` |
//! | `<p>:{<s>}:deleting` | string | token of an unfinished deletion of `<s>`: its leftover keys are still being swept, so `<s>` cannot be created yet |
//!
//! `<p>` is the configurable key prefix (`ef` by default; tests use a unique one each).
//!
//! The retention script ([`crate::scripts::TRIM`]) builds the `sub:`, `dlq:`, `errors:` and
//! `delay:` keys of every group it finds from [`Keys::base`]; a unit test keeps the two in step.

use crate::error::{BrokerError, Result};

/// Longest stream or subscription name.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a stream or subscription name: 1 to 128 characters of `[A-Za-z0-9._-]`. The charset
/// keeps names from breaking out of their hash tag or key segment.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(BrokerError::invalid(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(BrokerError::invalid(field, format!("longer than {MAX_NAME_LEN} characters")));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(BrokerError::invalid(field, format!("character {c:?} is not one of [A-Za-z0-9._-]")));
    }
    Ok(())
}

/// Builds the keys of the layout above under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Namespace of every key, so several deployments or tests share one Redis.
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix, as configured.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The sorted set of all stream names.
    pub fn streams(&self) -> String {
        format!("{}:streams", self.prefix)
    }

    /// `<p>:{<s>}:`, what every per-stream key but the stream itself starts with.
    pub fn base(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}:", self.prefix)
    }

    /// The Redis stream holding the events of `stream`.
    pub fn stream(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}", self.prefix)
    }

    /// The settings hash of `stream`.
    pub fn meta(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}:meta", self.prefix)
    }

    /// The set of subscription names of `stream`.
    pub fn subs(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}:subs", self.prefix)
    }

    /// The settings hash of subscription `sub`.
    pub fn sub(&self, stream: &str, sub: &str) -> String {
        format!("{}:{{{stream}}}:sub:{sub}", self.prefix)
    }

    /// The dead-letter stream of subscription `sub`.
    pub fn dlq(&self, stream: &str, sub: &str) -> String {
        format!("{}:{{{stream}}}:dlq:{sub}", self.prefix)
    }

    /// The redrive stream of subscription `sub`.
    pub fn redrive(&self, stream: &str, sub: &str) -> String {
        format!("{}:{{{stream}}}:redrive:{sub}", self.prefix)
    }

    /// The retry-backoff set of subscription `sub` on the stream itself.
    pub fn delay(&self, stream: &str, sub: &str) -> String {
        format!("{}:{{{stream}}}:delay:{sub}", self.prefix)
    }

    /// The retry-backoff set of subscription `sub` on its redrive stream.
    pub fn redrive_delay(&self, stream: &str, sub: &str) -> String {
        format!("{}:{{{stream}}}:redrive:{sub}:delay", self.prefix)
    }

    /// The last-error hash of subscription `sub` (nack reasons of pending entries).
    pub fn errors(&self, stream: &str, sub: &str) -> String {
        format!("{}:{{{stream}}}:errors:{sub}", self.prefix)
    }

    /// The field of an entry in the last-error hash.
    pub fn error_field(source: crate::Source, entry_id: &str) -> String {
        match source {
            crate::Source::Stream => format!("s:{entry_id}"),
            crate::Source::Redrive => format!("r:{entry_id}"),
        }
    }

    /// The circuit-breaker hash of subscription `sub`.
    pub fn breaker(&self, stream: &str, sub: &str) -> String {
        format!("{}:{{{stream}}}:breaker:{sub}", self.prefix)
    }

    /// The Redis stream a subscription reads as `source`.
    pub fn source(&self, stream: &str, sub: &str, source: crate::Source) -> String {
        match source {
            crate::Source::Stream => self.stream(stream),
            crate::Source::Redrive => self.redrive(stream, sub),
        }
    }

    /// The retry-backoff set of `source`.
    pub fn source_delay(&self, stream: &str, sub: &str, source: crate::Source) -> String {
        match source {
            crate::Source::Stream => self.delay(stream, sub),
            crate::Source::Redrive => self.redrive_delay(stream, sub),
        }
    }

    /// Every key that belongs to subscription `sub` besides its group on the stream.
    pub fn subscription_keys(&self, stream: &str, sub: &str) -> Vec<String> {
        vec![
            self.sub(stream, sub),
            self.dlq(stream, sub),
            self.redrive(stream, sub),
            self.delay(stream, sub),
            self.redrive_delay(stream, sub),
            self.errors(stream, sub),
            self.breaker(stream, sub),
        ]
    }

    /// The dedup key of event `event_id` in `stream`.
    pub fn dedup(&self, stream: &str, event_id: &str) -> String {
        format!("{}:{{{stream}}}:dedup:{event_id}", self.prefix)
    }

    /// The marker of an unfinished deletion of `stream` (holds the deletion's token).
    pub fn deleting(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}:deleting", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every key of `stream` but the stream itself (names cannot hold
    /// glob characters, and the prefix cannot hold braces, so it matches nothing else).
    pub fn stream_pattern(&self, stream: &str) -> String {
        format!("{}:{{{stream}}}:*", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("stream", "orders.v1_eu-west").is_ok());
        assert!(validate_name("stream", "").is_err());
        assert!(validate_name("stream", &"a".repeat(129)).is_err());
        assert!(validate_name("stream", &"a".repeat(128)).is_ok());
        for bad in ["a}b", "a{b", "a:b", "a b", "a*", "ö"] {
            let err = validate_name("subscription", bad).unwrap_err();
            assert!(err.to_string().contains("subscription"), "{err}");
        }
    }

    #[test]
    fn keys_share_the_stream_hash_tag() {
        let k = Keys::new("ef");
        assert_eq!(k.stream("orders"), "ef:{orders}");
        assert_eq!(k.meta("orders"), "ef:{orders}:meta");
        assert_eq!(k.sub("orders", "billing"), "ef:{orders}:sub:billing");
        assert_eq!(k.dlq("orders", "billing"), "ef:{orders}:dlq:billing");
        assert_eq!(k.redrive("orders", "billing"), "ef:{orders}:redrive:billing");
        assert_eq!(k.dedup("orders", "e1"), "ef:{orders}:dedup:e1");
        assert_eq!(k.deleting("orders"), "ef:{orders}:deleting");
        assert_eq!(k.stream_pattern("orders"), "ef:{orders}:*");
    }

    #[test]
    fn the_trim_script_builds_subscription_keys_as_keys_does() {
        let k = Keys::new("ef");
        let base = k.base("orders");
        assert_eq!(format!("{base}sub:billing"), k.sub("orders", "billing"));
        assert_eq!(format!("{base}dlq:billing"), k.dlq("orders", "billing"));
        assert_eq!(format!("{base}errors:billing"), k.errors("orders", "billing"));
        assert_eq!(format!("{base}delay:billing"), k.delay("orders", "billing"));
        let script = crate::scripts::TRIM.get_hash();
        assert!(!script.is_empty());
        for suffix in ["'sub:'", "'dlq:'", "'errors:'", "'delay:'"] {
            assert!(crate::scripts::TRIM_SOURCE.contains(suffix), "{suffix}");
        }
    }
}
