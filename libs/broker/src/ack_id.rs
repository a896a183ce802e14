//! Ack ids: opaque to clients, self-describing to the broker, so any subscriber replica can
//! settle any delivery without shared memory — and authenticated, so a client cannot edit one
//! (say, to name another subscription) and settle a delivery it was never given.
//!
//! # Format (version 2)
//! An ack id is base64url (no padding) of `payload || tag`:
//! * `payload` is binary: the version byte `2`; stream, subscription (each one length byte and
//!   the name); the source (`0` the stream, `1` the subscription's redrive stream); the entry
//!   id as two LEB128 varints (milliseconds, sequence); the consumer (length byte and name); the
//!   delivery attempt and delivery time (ms since the epoch, for ack latency) as varints; and the
//!   event's traceparent (so settlement spans join the event's trace on any replica) as `0`
//!   (none) or `1` and its 26 bytes (version, trace id, parent id, flags).
//! * `tag` is the first [`TAG_BYTES`] bytes of HMAC-SHA256 over `payload`, keyed by the ack key
//!   ([`AckKeys`]) every subscriber replica shares. Decoding verifies the tag in constant time
//!   against the current key and then the previous one (accepted during a rotation); an ack id
//!   whose tag matches neither, or whose payload is malformed, is invalid.
//!
//! Binary fields keep an ack id at most 256 characters for names up to 32 characters, whatever
//! the event carries: the traceparent is kept only in its compact form and only when it is valid
//! W3C Trace Context (`eventflow_tracecontext`). Version-1 ack ids (plain text, no tag) are no
//! longer accepted: anyone could forge them.
//!
//! The consumer and attempt pin one delivery: once the event is redelivered (another consumer or
//! a higher attempt), the old ack id can still acknowledge it but no longer extend or reject it.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use eventflow_tracecontext::compact_traceparent;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::BrokerError;
use crate::keys::{validate_name, validate_partition_name};
use crate::model::Source;

/// The format version this module writes and reads.
const VERSION: u8 = 2;
/// Bytes of the HMAC-SHA256 tag kept: 128 bits make forging by guessing hopeless while keeping
/// ack ids short.
pub const TAG_BYTES: usize = 16;
/// Fewest bytes of an ack key: 256 bits, HMAC-SHA256's strength.
pub const MIN_KEY_BYTES: usize = 32;
/// Longest ack id accepted before decoding: a bound on the work an invalid one causes (the
/// longest valid one, with 128-character names, is under 600 characters).
const MAX_ACK_ID_CHARS: usize = 1024;

/// Where a broker gets the ack keys in force now: they may change while it runs (the
/// subscriber reloads its key files when they change, `eventflow_runtime::watched`). Asked once
/// per ack id signed and once per settlement call, so it must be cheap.
pub trait AckKeySource: Send + Sync + std::fmt::Debug {
    /// The keys to sign and verify with now.
    fn current(&self) -> Arc<AckKeys>;
}

/// Keys that never change (tests, a process without key files).
impl AckKeySource for Arc<AckKeys> {
    fn current(&self) -> Arc<AckKeys> {
        self.clone()
    }
}

/// The keys ack ids are authenticated with: the current one (signs and verifies) and, during a
/// rotation, the previous one (verifies only). The key bytes are never printed.
#[derive(Clone)]
pub struct AckKeys {
    /// Signs new ack ids and verifies them.
    current: Hmac<Sha256>,
    /// Still verifies ack ids signed before the rotation to `current`, so deliveries in flight
    /// during a rolling restart settle on any replica.
    previous: Option<Hmac<Sha256>>,
    /// Whether `current` was made up at start rather than shared by the replicas (for logs).
    ephemeral: bool,
}

impl std::fmt::Debug for AckKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckKeys")
            .field("previous", &self.previous.is_some())
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

impl AckKeys {
    /// Keys from the bytes of the current key and, during a rotation, the previous one; each
    /// must have at least [`MIN_KEY_BYTES`] bytes.
    pub fn new(current: &[u8], previous: Option<&[u8]>) -> Result<Self, BrokerError> {
        let mac = |field: &str, key: &[u8]| {
            if key.len() < MIN_KEY_BYTES {
                return Err(BrokerError::invalid(field, format!("must have at least {MIN_KEY_BYTES} bytes")));
            }
            Hmac::<Sha256>::new_from_slice(key).map_err(|e| BrokerError::invalid(field, e.to_string()))
        };
        Ok(Self {
            current: mac("ack_key_file", current)?,
            previous: previous.map(|key| mac("ack_key_previous_file", key)).transpose()?,
            ephemeral: false,
        })
    }

    /// A random key of this process only: its ack ids settle on no other replica, and not
    /// after a restart.
    pub fn random() -> Result<Self, BrokerError> {
        let mut key = [0u8; MIN_KEY_BYTES];
        getrandom::fill(&mut key).map_err(|e| BrokerError::Internal(format!("no random ack key: {e}")))?;
        Ok(Self { ephemeral: true, ..Self::new(&key, None)? })
    }

    /// Whether a previous key is still accepted.
    pub fn has_previous(&self) -> bool {
        self.previous.is_some()
    }

    /// Whether the key was made up at start ([`AckKeys::random`]).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The tag of `payload` under the current key.
    fn sign(&self, payload: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = self.current.clone();
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// Whether `tag` is the tag of `payload` under the current or the previous key (constant
    /// time in the tag's bytes).
    fn verify(&self, payload: &[u8], tag: &[u8]) -> bool {
        std::iter::once(&self.current).chain(self.previous.as_ref()).any(|key| {
            let mut mac = key.clone();
            mac.update(payload);
            mac.verify_truncated_left(tag).is_ok()
        })
    }
}

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

/// The parts of one ack id, borrowed: what a delivery encodes without copying the stream,
/// subscription, consumer and entry id of every event it hands out.
#[derive(Debug, Clone, Copy)]
pub struct AckIdRef<'a> {
    /// See [`AckId::stream`].
    pub stream: &'a str,
    /// See [`AckId::subscription`].
    pub subscription: &'a str,
    /// See [`AckId::source`].
    pub source: Source,
    /// See [`AckId::entry_id`].
    pub entry_id: &'a str,
    /// See [`AckId::consumer`].
    pub consumer: &'a str,
    /// See [`AckId::attempt`].
    pub attempt: u32,
    /// See [`AckId::delivered_ms`].
    pub delivered_ms: u64,
    /// See [`AckId::traceparent`].
    pub traceparent: Option<&'a str>,
}

impl AckIdRef<'_> {
    /// Encodes and signs the ack id handed to clients. Names longer than 255 bytes or an entry
    /// id that is not `<ms>-<seq>` cannot occur (names are validated, entry ids come from
    /// Redis); such an ack id would not decode. The bytes are built on the stack: the only
    /// allocation is the returned text.
    pub fn encode(&self, keys: &AckKeys) -> String {
        let mut out = Writer::default();
        out.push(VERSION);
        out.name(self.stream);
        out.name(self.subscription);
        out.push(match self.source {
            Source::Stream => 0,
            Source::Redrive => 1,
        });
        let (ms, seq) = split_entry_id(self.entry_id).unwrap_or((u64::MAX, u64::MAX));
        out.varint(ms);
        out.varint(seq);
        out.name(self.consumer);
        out.varint(u64::from(self.attempt));
        out.varint(self.delivered_ms);
        match self.traceparent.and_then(compact_traceparent).and_then(traceparent_bytes) {
            Some(bytes) => {
                out.push(1);
                out.extend(&bytes);
            }
            None => out.push(0),
        }
        let tag = keys.sign(out.bytes());
        out.extend(&tag);
        URL_SAFE_NO_PAD.encode(out.bytes())
    }
}

impl AckId {
    /// Encodes and signs the ack id handed to clients ([`AckIdRef::encode`]).
    pub fn encode(&self, keys: &AckKeys) -> String {
        AckIdRef {
            stream: &self.stream,
            subscription: &self.subscription,
            source: self.source,
            entry_id: &self.entry_id,
            consumer: &self.consumer,
            attempt: self.attempt,
            delivered_ms: self.delivered_ms,
            traceparent: self.traceparent.as_deref(),
        }
        .encode(keys)
    }

    /// Decodes an ack id; `None` if it is malformed or its tag is not one of `keys`. The base64
    /// is decoded into a stack buffer and the names are checked before they are copied: the
    /// allocations are the four texts of the result (and a traceparent's).
    pub fn decode(ack_id: &str, keys: &AckKeys) -> Option<Self> {
        if ack_id.len() > MAX_ACK_ID_CHARS {
            return None;
        }
        let mut buf = [0u8; MAX_RAW_BYTES];
        let len = URL_SAFE_NO_PAD.decode_slice(ack_id, &mut buf).ok()?;
        let raw = buf.get(..len)?;
        let (payload, tag) = raw.split_at_checked(raw.len().checked_sub(TAG_BYTES)?)?;
        if !keys.verify(payload, tag) {
            return None;
        }
        let mut r = Reader(payload);
        if r.byte()? != VERSION {
            return None;
        }
        let stream = r.name()?;
        let subscription = r.name()?;
        let source = match r.byte()? {
            0 => Source::Stream,
            1 => Source::Redrive,
            _ => return None,
        };
        let (ms, seq) = (r.varint()?, r.varint()?);
        let consumer = r.name()?;
        let attempt = u32::try_from(r.varint()?).ok()?;
        let delivered_ms = r.varint()?;
        let traceparent = match r.byte()? {
            0 => None,
            1 => Some(traceparent_text(r.take(TRACEPARENT_BYTES)?)),
            _ => return None,
        };
        if !r.0.is_empty()
            || validate_partition_name("stream", stream).is_err()
            || validate_name("subscription", subscription).is_err()
            || validate_name("consumer", consumer).is_err()
        {
            return None;
        }
        Some(Self {
            stream: stream.to_string(),
            subscription: subscription.to_string(),
            source,
            // Two numbers: always a well-formed entry id.
            entry_id: entry_id_text(ms, seq),
            consumer: consumer.to_string(),
            attempt,
            delivered_ms,
            // Written in compact form above; kept only if valid.
            traceparent: traceparent.filter(|t| compact_traceparent(t) == Some(t.as_str())),
        })
    }
}

/// Bytes of a compact traceparent in binary: version, trace id, parent id, flags.
const TRACEPARENT_BYTES: usize = 1 + 16 + 8 + 1;

/// `<ms>-<seq>` as numbers.
fn split_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// `<ms>-<seq>` as text.
fn entry_id_text(ms: u64, seq: u64) -> String {
    let mut text = String::with_capacity(41);
    push_decimal(&mut text, ms);
    text.push('-');
    push_decimal(&mut text, seq);
    text
}

/// Appends `n` in decimal.
fn push_decimal(text: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.push_str(std::str::from_utf8(digits.get(start..).unwrap_or_default()).unwrap_or_default());
}

/// Most bytes of an encoded payload and tag: three names of 255 bytes (the most kept), the
/// varints at their longest, a traceparent and the tag take 848.
const MAX_ENCODED_BYTES: usize = 1024;
/// Most bytes [`MAX_ACK_ID_CHARS`] base64 characters decode to.
const MAX_RAW_BYTES: usize = MAX_ACK_ID_CHARS / 4 * 3;

/// Writes an ack id's bytes into a stack buffer ([`MAX_ENCODED_BYTES`], never exceeded).
struct Writer {
    buf: [u8; MAX_ENCODED_BYTES],
    len: usize,
}

impl Default for Writer {
    fn default() -> Self {
        Self { buf: [0; MAX_ENCODED_BYTES], len: 0 }
    }
}

impl Writer {
    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    fn extend(&mut self, bytes: &[u8]) {
        if let Some(to) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            to.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    fn push(&mut self, byte: u8) {
        self.extend(&[byte]);
    }

    /// A name as its length byte and bytes (at most 255 bytes kept; validated names are
    /// shorter).
    fn name(&mut self, name: &str) {
        let bytes = &name.as_bytes()[..name.len().min(255)];
        self.push(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
        self.extend(bytes);
    }

    /// `n` as an LEB128 varint.
    fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        self.push(n as u8);
    }
}

/// A compact traceparent (`vv-<32 hex>-<16 hex>-ff`, lowercase) as binary.
fn traceparent_bytes(compact: &str) -> Option<[u8; TRACEPARENT_BYTES]> {
    let text = compact.as_bytes();
    if text.len() != TRACEPARENT_BYTES * 2 + 3 {
        return None;
    }
    let mut digits = [0..2, 3..35, 36..52, 53..55].into_iter().flat_map(|range| text[range].iter());
    let mut out = [0u8; TRACEPARENT_BYTES];
    for byte in &mut out {
        let high = char::from(*digits.next()?).to_digit(16)?;
        let low = char::from(*digits.next()?).to_digit(16)?;
        *byte = (high * 16 + low) as u8;
    }
    Some(out)
}

/// The binary traceparent back as text (checked by the caller).
fn traceparent_text(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(TRACEPARENT_BYTES * 2 + 3);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 1 | 17 | 25) {
            text.push('-');
        }
        text.push(char::from(HEX[usize::from(byte >> 4)]));
        text.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    text
}

/// Reads the binary payload front to back.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn name(&mut self) -> Option<&'a str> {
        let len = self.byte()?;
        std::str::from_utf8(self.take(usize::from(len))?).ok()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut n: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn keys(byte: u8) -> AckKeys {
        AckKeys::new(&[byte; 32], None).unwrap()
    }

    fn sample() -> AckId {
        AckId {
            stream: "orders".into(),
            subscription: "billing".into(),
            source: Source::Redrive,
            entry_id: "1700000000000-0".into(),
            consumer: "c-0192".into(),
            attempt: 3,
            delivered_ms: 1_700_000_000_500,
            traceparent: Some(TRACEPARENT.into()),
        }
    }

    #[test]
    fn round_trip() {
        let k = keys(1);
        let id = sample();
        assert_eq!(AckId::decode(&id.encode(&k), &k), Some(id.clone()));
        let id = AckId { traceparent: None, source: Source::Stream, entry_id: "0-18446744073709551615".into(), ..id };
        assert_eq!(AckId::decode(&id.encode(&k), &k), Some(id));
    }

    #[test]
    fn an_edited_byte_anywhere_makes_it_invalid() {
        let k = keys(1);
        let raw = URL_SAFE_NO_PAD.decode(sample().encode(&k)).unwrap();
        for i in 0..raw.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut edited = raw.clone();
                edited[i] ^= flip;
                assert_eq!(AckId::decode(&URL_SAFE_NO_PAD.encode(&edited), &k), None, "byte {i} ^ {flip:#x}");
            }
        }
        // Cut or extended.
        for edited in [&raw[..raw.len() - 1], &raw[1..], &[raw.as_slice(), &[0]].concat()] {
            assert_eq!(AckId::decode(&URL_SAFE_NO_PAD.encode(edited), &k), None);
        }
    }

    #[test]
    fn a_forged_payload_needs_the_key() {
        // The subscription edited and the tag recomputed under another key: still invalid.
        let (k, attacker) = (keys(1), keys(2));
        let forged = AckId { subscription: "payments".into(), ..sample() }.encode(&attacker);
        assert_eq!(AckId::decode(&forged, &k), None);
    }

    #[test]
    fn the_previous_key_is_accepted_during_a_rotation() {
        let (a, b) = ([1u8; 32], [2u8; 40]);
        let old = sample().encode(&AckKeys::new(&a, None).unwrap());
        let rotating = AckKeys::new(&b, Some(&a)).unwrap();
        assert_eq!(AckId::decode(&old, &rotating), Some(sample()));
        // New ack ids are signed with the new key only.
        let new = sample().encode(&rotating);
        assert_eq!(AckId::decode(&new, &AckKeys::new(&b, None).unwrap()), Some(sample()));
        assert_eq!(AckId::decode(&new, &AckKeys::new(&a, None).unwrap()), None);
        // After the rotation the old key is unknown.
        assert_eq!(AckId::decode(&old, &AckKeys::new(&b, None).unwrap()), None);
        assert_eq!(AckId::decode(&old, &AckKeys::random().unwrap()), None);
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_keys() {
        assert!(AckKeys::new(&[1; 31], None).is_err());
        assert!(AckKeys::new(&[1; 32], Some(&[2; 8])).is_err());
        let k = AckKeys::random().unwrap();
        assert!(k.is_ephemeral() && !keys(1).is_ephemeral());
        assert_eq!(format!("{:?}", keys(1)), "AckKeys { previous: false, ephemeral: false, .. }");
    }

    #[test]
    fn malformed_and_version_1_ids_are_rejected() {
        let k = keys(1);
        let v1 = URL_SAFE_NO_PAD.encode("1:orders:billing:s:1-0:c:1:0:");
        // The longest accepted text fills the stack buffer exactly: rejected, not a panic.
        for bad in ["", "!!!", "MTpvcmRlcnM", &v1, &"A".repeat(2000), &"A".repeat(MAX_ACK_ID_CHARS)] {
            assert_eq!(AckId::decode(bad, &k), None, "{bad:.20}");
        }
        // Well signed but malformed payloads.
        let signed = |payload: &[u8]| URL_SAFE_NO_PAD.encode([payload, &k.sign(payload)].concat());
        for bad in [
            &b""[..],
            b"\x02",
            b"\x01\x01a\x01b\x00\x01\x00\x01c\x01\x00\x00",
            b"\x02\x01a\x01b\x02\x01\x00\x01c\x01\x00\x00",
        ] {
            assert_eq!(AckId::decode(&signed(bad), &k), None, "{bad:?}");
        }
        assert!(AckId::decode(&signed(b"\x02\x01a\x01b\x00\x01\x00\x01c\x01\x00\x00"), &k).is_some());
        // A name that fails validation, even when signed.
        assert_eq!(AckId::decode(&signed(b"\x02\x01{\x01b\x00\x01\x00\x01c\x01\x00\x00"), &k), None);
    }

    #[test]
    fn ack_id_size_is_bounded_whatever_the_event_carries() {
        let k = keys(1);
        let name = "n".repeat(32);
        let id = |traceparent: Option<String>| AckId {
            stream: name.clone(),
            subscription: name.clone(),
            source: Source::Stream,
            entry_id: format!("{}-{}", u64::MAX, u64::MAX),
            consumer: "c-0192a3b4c5d6e7f8091a2b3c4d5e6f70".into(),
            attempt: u32::MAX,
            delivered_ms: u64::MAX,
            traceparent,
        };
        let with_valid = id(Some(TRACEPARENT.into())).encode(&k);
        let without = id(None).encode(&k);
        assert!(with_valid.len() <= 256, "{}", with_valid.len());
        // A later-version traceparent keeps only its first 55 characters.
        let longer = format!("{}-more-fields", TRACEPARENT.replacen("00", "01", 1));
        let later = id(Some(longer)).encode(&k);
        assert_eq!(later.len(), with_valid.len());
        assert_eq!(
            AckId::decode(&later, &k).and_then(|a| a.traceparent).as_deref(),
            Some(TRACEPARENT.replacen("00", "01", 1).as_str())
        );
        for junk in ["abc:def".to_string(), "ab".repeat(50_000), TRACEPARENT.to_uppercase(), "x".repeat(55)] {
            let encoded = id(Some(junk.clone())).encode(&k);
            assert_eq!(encoded.len(), without.len(), "{junk:.20}");
            assert_eq!(AckId::decode(&encoded, &k).and_then(|a| a.traceparent), None);
        }
    }
}
