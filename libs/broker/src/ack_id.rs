//! Ack ids: opaque to clients, self-describing to the broker, so any subscriber replica can
//! settle any delivery without shared memory.
//!
//! An ack id is base64url (no padding) of
//! `1:<stream>:<subscription>:<source>:<entry id>:<consumer>:<attempt>:<delivered ms>:<traceparent>`,
//! where source is `s` (the stream) or `r` (the subscription's redrive stream), the delivery
//! time gives ack latency, and the event's traceparent (possibly empty) lets settlement spans
//! join the event's trace on any replica.
//!
//! The traceparent is kept only in its 55-character compact form, and only when it is valid
//! W3C Trace Context (`eventflow_tracecontext`); anything else is left out. So an ack id stays
//! small whatever the event carries — including entries stored before publish validated trace
//! context. Decoding reads everything after the eighth `:` as the traceparent and ignores it if
//! it is not valid, so ack ids issued before that (which may end in anything) still settle.
//! The consumer and attempt pin one delivery: once the event is redelivered (another consumer or
//! a higher attempt), the old ack id can still acknowledge it but no longer extend or reject it.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use eventflow_tracecontext::compact_traceparent;

use crate::keys::validate_name;
use crate::model::{Source, is_entry_id};

/// The parts of one ack id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckId {
    /// The stream of the event.
    pub stream: String,
    /// The subscription (consumer group) it was delivered in.
    pub subscription: String,
    /// Which stream of the subscription the entry is in.
    pub source: Source,
    /// The stream entry id.
    pub entry_id: String,
    /// The Redis consumer it was delivered to.
    pub consumer: String,
    /// The delivery attempt.
    pub attempt: u32,
    /// When it was delivered, ms since the Unix epoch.
    pub delivered_ms: u64,
    /// The event's W3C traceparent, if it has a valid one. Encoding keeps only its compact
    /// form and drops an invalid one.
    pub traceparent: Option<String>,
}

impl AckId {
    /// Encodes the ack id handed to clients.
    pub fn encode(&self) -> String {
        let source = match self.source {
            Source::Stream => "s",
            Source::Redrive => "r",
        };
        let raw = format!(
            "1:{}:{}:{source}:{}:{}:{}:{}:{}",
            self.stream,
            self.subscription,
            self.entry_id,
            self.consumer,
            self.attempt,
            self.delivered_ms,
            self.traceparent.as_deref().and_then(compact_traceparent).unwrap_or("")
        );
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decodes an ack id; `None` if it is malformed.
    pub fn decode(ack_id: &str) -> Option<Self> {
        let raw = URL_SAFE_NO_PAD.decode(ack_id).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        // Nine fields; the last (traceparent) takes the rest, whatever an old ack id put there.
        let mut parts = raw.splitn(9, ':');
        if parts.next()? != "1" {
            return None;
        }
        let (stream, subscription) = (parts.next()?, parts.next()?);
        let source = match parts.next()? {
            "s" => Source::Stream,
            "r" => Source::Redrive,
            _ => return None,
        };
        let (entry_id, consumer) = (parts.next()?, parts.next()?);
        let attempt = parts.next()?.parse().ok()?;
        let delivered_ms = parts.next()?.parse().ok()?;
        let traceparent = compact_traceparent(parts.next()?);
        if validate_name("stream", stream).is_err()
            || validate_name("subscription", subscription).is_err()
            || validate_name("consumer", consumer).is_err()
            || !is_entry_id(entry_id)
        {
            return None;
        }
        Some(Self {
            stream: stream.into(),
            subscription: subscription.into(),
            source,
            entry_id: entry_id.into(),
            consumer: consumer.into(),
            attempt,
            delivered_ms,
            traceparent: traceparent.map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = AckId {
            stream: "orders".into(),
            subscription: "billing".into(),
            source: Source::Redrive,
            entry_id: "1700000000000-0".into(),
            consumer: "c-0192".into(),
            attempt: 3,
            delivered_ms: 1_700_000_000_500,
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        };
        assert_eq!(AckId::decode(&id.encode()), Some(id.clone()));
        let id = AckId { traceparent: None, ..id };
        assert_eq!(AckId::decode(&id.encode()), Some(id));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in ["", "!!!", "MTpvcmRlcnM", &URL_SAFE_NO_PAD.encode("1:a:b:s:notanid:c:1:0:")] {
            assert_eq!(AckId::decode(bad), None, "{bad}");
        }
        assert_eq!(AckId::decode(&URL_SAFE_NO_PAD.encode("2:a:b:s:1-0:c:1:0:")), None);
        assert_eq!(AckId::decode(&URL_SAFE_NO_PAD.encode("1:a:b:s:1-0:c:x:0:")), None);
        assert_eq!(AckId::decode(&URL_SAFE_NO_PAD.encode("1:a:b:x:1-0:c:1:0:")), None);
        assert_eq!(AckId::decode(&URL_SAFE_NO_PAD.encode("1:a:b:s:1-0:c:1")), None);
        assert!(AckId::decode(&URL_SAFE_NO_PAD.encode("1:a:b:s:1-0:c:1:0:")).is_some());
    }

    #[test]
    fn ack_ids_issued_with_any_traceparent_still_decode_without_it() {
        // Ack ids from before publish validated trace context may end in anything.
        for tail in ["bad{", ":extra", "abc:def", &"ab".repeat(50_000)] {
            let old = URL_SAFE_NO_PAD.encode(format!("1:a:b:s:1-0:c:1:0:{tail}"));
            let id = AckId::decode(&old).unwrap_or_else(|| panic!("{tail:.20}"));
            assert_eq!((id.entry_id.as_str(), id.traceparent), ("1-0", None));
        }
    }

    #[test]
    fn ack_id_size_does_not_depend_on_what_the_event_carries() {
        let valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let id = |traceparent: Option<String>| AckId {
            stream: "orders".into(),
            subscription: "billing".into(),
            source: Source::Stream,
            entry_id: "1700000000000-0".into(),
            consumer: "c-0192a3b4c5d6e7f8091a2b3c4d5e6f70".into(),
            attempt: 3,
            delivered_ms: 1_700_000_000_500,
            traceparent,
        };
        let with_valid = id(Some(valid.into())).encode();
        let without = id(None).encode();
        assert!(with_valid.len() <= 256, "{}", with_valid.len());
        // A later-version traceparent keeps only its first 55 characters.
        let longer = format!("{}-more-fields", valid.replacen("00", "01", 1));
        assert_eq!(id(Some(longer)).encode().len(), with_valid.len());
        for junk in ["abc:def".to_string(), "ab".repeat(50_000), valid.to_uppercase(), "x".repeat(55)] {
            let encoded = id(Some(junk.clone())).encode();
            assert_eq!(encoded.len(), without.len(), "{junk:.20}");
            assert_eq!(AckId::decode(&encoded).and_then(|a| a.traceparent), None);
        }
    }
}
