//! Every name the broker stores in Redis, in one place: key suffixes, the fields of event
//! entries, dead letters and the settings hashes, the prefixes of the last-error and breaker
//! hash fields, consumer names, and the version of this layout.
//!
//! Rust code uses the constants below; Lua scripts use the same names as Lua locals
//! (`local F_EVENT = 'e'`, ...), which [`lua_constants`] generates from this module and
//! [`crate::scripts`] prepends to every script, so the two can never disagree. Each group is a
//! module with an `ALL` list (Lua name, value), which also lets a test check docs/architecture.md's
//! tables against this module in both directions.
//!
//! Changing a stored name changes the layout: raise [`LAYOUT_VERSION`] and add a migration
//! ([`crate::layout`]).

/// The version of the Redis layout this code reads and writes, stored in `<p>:layout` (see
/// [`crate::layout`]). Version 1 is the layout as it was when versioning began, so a deployment
/// without the key is at version 1. Version 2 keeps dedup ids in per-stream time-bucket hashes
/// ([`key::DEDUP_IDS`]) instead of one key per event ([`key::DEDUP`]).
pub const LAYOUT_VERSION: u32 = 2;

/// Declares one group of names: a module with a doc, a `&str` constant per name, and `ALL`
/// pairing each Lua local name (`<lua prefix><CONSTANT>`) with its value.
macro_rules! names {
    ($(#[doc = $mdoc:literal])* $m:ident, $lua:literal { $($(#[doc = $doc:literal])* $name:ident = $value:literal;)* }) => {
        $(#[doc = $mdoc])*
        pub mod $m {
            $($(#[doc = $doc])* pub const $name: &str = $value;)*
            /// Every name of this group: (Lua local name, value).
            pub const ALL: &[(&str, &str)] = &[$((concat!($lua, stringify!($name)), $value)),*];
        }
    };
}

names! {
    /// Key segments after the prefix (`<p>:<segment>`) or after a stream's hash tag
    /// (`<p>:{<s>}:<segment>[:<n>]`); [`crate::Keys`] builds the keys from them.
    key, "K_" {
        /// `<p>:streams`: sorted set of every stream name, for listing in name order.
        STREAMS = "streams";
        /// `<p>:layout`: the layout version ([`super::LAYOUT_VERSION`]) of the data under the prefix.
        LAYOUT = "layout";
        /// `<p>:{<s>}:meta`: stream settings (fields in [`super::meta`]).
        META = "meta";
        /// `<p>:{<s>}:subs`: set of the stream's subscription names.
        SUBS = "subs";
        /// `<p>:{<s>}:sub:<n>`: subscription settings and counters (fields in [`super::sub`]).
        SUB = "sub";
        /// `<p>:{<s>}:dlq:<n>`: dead letters of subscription `<n>` (fields in [`super::dead_letter`]).
        DLQ = "dlq";
        /// `<p>:{<s>}:redrive:<n>`: dead letters requeued into subscription `<n>` only.
        REDRIVE = "redrive";
        /// `<p>:{<s>}:delay:<n>` and `<p>:{<s>}:redrive:<n>:delay`: entries waiting out a retry backoff.
        DELAY = "delay";
        /// `<p>:{<s>}:errors:<n>`: last nack reasons of pending entries (fields in [`super::error_field`]).
        ERRORS = "errors";
        /// `<p>:{<s>}:breaker:<n>`: the circuit breaker of `<n>` (fields in [`super::breaker`]).
        BREAKER = "breaker";
        /// `<p>:{<s>}:dedup:<event id>`: layout 1's dedup key, the entry id of the first publish of
        /// an event id (TTL: the window). Layout 2 only reads them, for one window after a
        /// stream's first publish by layout 2 (meta [`super::meta::DEDUP_LEGACY_UNTIL`]).
        DEDUP = "dedup";
        /// `<p>:{<s>}:dedup_ids:<width ms>:<index>`: hash of event id → entry id of its first
        /// publish, for the ids first published in `[index × width, (index + 1) × width)` ms
        /// (Redis time); width = the dedup window. Written by PUBLISH, one HSET per call.
        DEDUP_IDS = "dedup_ids";
        /// `<p>:{<s>}:deleting`: token of an unfinished deletion of the stream.
        DELETING = "deleting";
        /// `<p>:{<s>}:heads:<n>`: ordered subscriptions: each ordering key's head (the one entry
        /// of the key that may be in flight) and back (fields in [`super::gate`]).
        HEADS = "heads";
        /// `<p>:{<s>}:waiting:<n>`: ordered subscriptions: entries held back behind their key's
        /// head, in delivery order (sorted set, all scores 0, ordered by member).
        WAITING = "waiting";
        /// `<p>:{<s>}:blocked:<n>`: ordered subscriptions: keys with waiting entries, scored by
        /// the publish time (ms) of the key's next waiting entry.
        BLOCKED = "blocked";
    }
}

names! {
    /// Fields of an entry of an event stream or a redrive stream.
    entry, "F_" {
        /// The protobuf-encoded CloudEvent: what is delivered, as stored.
        EVENT = "e";
        /// The event's type, so type filters work without decoding the event.
        TYPE = "t";
        /// Redrive entries only: the entry id the event had on the stream, kept for dead letters.
        ORIGIN = "o";
        /// The event's W3C traceparent, for spans without decoding the event. PUBLISH stores it
        /// only when the event has one (since session 15; entries written earlier and by the
        /// other scripts may hold ''): absent and '' both mean none.
        TRACEPARENT = "p";
        /// The event's ordering key (its CloudEvents `partitionkey`), only when it has one, so
        /// ordered subscriptions gate entries without decoding them.
        KEY = "k";
    }
}

names! {
    /// Fields of a dead letter (an entry of a `dlq:` stream) besides the event's own
    /// [`crate::schema::entry::EVENT`], [`crate::schema::entry::TYPE`] and
    /// [`crate::schema::entry::TRACEPARENT`].
    dead_letter, "D_" {
        /// The stream the event was published to.
        STREAM = "stream";
        /// The event's entry id on that stream (the original one for a requeued event).
        ENTRY_ID = "entry_id";
        /// The subscription it failed in.
        SUBSCRIPTION = "subscription";
        /// Delivery attempts it had.
        ATTEMPTS = "attempts";
        /// Why it was dead-lettered (with the last nack reason, if any).
        REASON = "reason";
        /// The consumer that held it last ('' if none).
        CONSUMER = "consumer";
        /// When it was dead-lettered, ms since the epoch by Redis time.
        TIME_MS = "time_ms";
    }
}

names! {
    /// Prefixes of the last-error hash's fields, followed by the entry id: the same entry id can
    /// be pending on the stream and on the redrive stream.
    error_field, "E_" {
        /// An entry of the stream.
        STREAM = "s:";
        /// An entry of the redrive stream.
        REDRIVE = "r:";
    }
}

names! {
    /// Fields of an ordered subscription's `heads:` hash besides the head references (`s:<entry
    /// id>` / `r:<entry id>`, the [`crate::schema::error_field`] prefixes), which map a head back to
    /// its ordering key.
    gate, "G_" {
        /// Prefix of an ordering key's field (`k:<key>`), holding the reference of its head.
        KEY = "k:";
    }
}

names! {
    /// Fields and values of a circuit-breaker hash.
    breaker, "B_" {
        /// The state: [`CLOSED`], [`OPEN`] or [`HALF_OPEN`].
        STATE = "state";
        /// While open: when it may half-open (ms, Redis time).
        UNTIL = "until";
        /// When it last opened (ms, Redis time).
        OPENED = "opened";
        /// How often it opened.
        OPENS = "opens";
        /// While half-open: probes left to hand out.
        PROBES = "probes";
        /// While half-open: probes acked so far.
        PROBE_OK = "probe_ok";
        /// While half-open: when probes were last handed out (ms), to refill lost ones.
        SINCE = "since";
        /// Prefix of a per-second success count (`s:<unix second>`).
        SUCCESSES = "s:";
        /// Prefix of a per-second failure count (`f:<unix second>`).
        FAILURES = "f:";
        /// State value: delivering normally (also when the hash is absent).
        CLOSED = "c";
        /// State value: delivery paused.
        OPEN = "o";
        /// State value: delivering a few probes.
        HALF_OPEN = "h";
    }
}

names! {
    /// Fields of a stream's settings hash (`meta`).
    meta, "M_" {
        /// When the stream was created (ms); its presence means the stream exists.
        CREATED_MS = "created_ms";
        /// Retention: most entries (0 = no limit).
        MAX_LEN = "max_len";
        /// Retention: oldest entry age in ms (0 = no limit).
        MAX_AGE_MS = "max_age_ms";
        /// Dedup window in ms (0 = no dedup).
        DEDUP_MS = "dedup_ms";
        /// '1': retention drops unsettled entries (counted) instead of dead-lettering them.
        DROP_UNSETTLED = "drop_unsettled";
        /// Partition 0 of a partitioned stream: its partition count (absent = 1).
        PARTITIONS = "partitions";
        /// Partition 0 of a partitioned stream: the stream's whole max length as requested
        /// (each partition's `max_len` is its share, rounded up).
        STREAM_MAX_LEN = "stream_max_len";
        /// The largest payload (bytes) ever stored in the stream, raised by PUBLISH in the
        /// script that stores it (absent until the first publish): sessions read natively
        /// while `count` × this fits their byte budget (see `crate::delivery::fetcher`).
        SIZE_MARK = "size_mark";
        /// `<width>:<index>` of the dedup bucket PUBLISH wrote last ([`super::key::DEDUP_IDS`]):
        /// a write into another one is the bucket's first (it sets its expiry and unlinks the
        /// bucket that can no longer be consulted).
        DEDUP_BUCKET = "dedup_bucket";
        /// Space-separated `<width>:<index>` of the last buckets of earlier dedup windows (the
        /// window was changed): consulted until their ids are older than their window, then
        /// unlinked.
        DEDUP_OLD = "dedup_old";
        /// Until when (ms, Redis time) layout 1's per-event dedup keys ([`super::key::DEDUP`]) are
        /// consulted: `0` for a stream created by layout 2; absent for one created by layout 1,
        /// until its first publish by layout 2 sets it to one window later.
        DEDUP_LEGACY_UNTIL = "dedup_legacy_until";
    }
}

names! {
    /// Fields of a subscription's settings hash (`sub:<n>`): settings, then counters.
    sub, "S_" {
        /// When the subscription was created (ms).
        CREATED_MS = "created_ms";
        /// Ack deadline in ms.
        ACK_DEADLINE_MS = "ack_deadline_ms";
        /// Max delivery attempts before dead-lettering.
        MAX_ATTEMPTS = "max_attempts";
        /// Retry policy: backoff after the first failure, ms.
        MIN_BACKOFF_MS = "min_backoff_ms";
        /// Retry policy: longest backoff, ms.
        MAX_BACKOFF_MS = "max_backoff_ms";
        /// Event types delivered, newline-separated ('' = all).
        TYPE_FILTER = "type_filter";
        /// Circuit-breaker policy `ratio,minimum,window_ms,open_ms,probes` ('' = none).
        BREAKER = "breaker";
        /// Push subscriptions: the endpoint URL events are POSTed to ('' or absent = a pull subscription).
        PUSH_ENDPOINT = "push_endpoint";
        /// Push: the Standard Webhooks signing secret (`whsec_...`).
        PUSH_SECRET = "push_secret";
        /// Push: the secret replaced by the last rotation ('' = none), signing until [`PUSH_PREVIOUS_UNTIL_MS`].
        PUSH_PREVIOUS_SECRET = "push_previous_secret";
        /// Push: when the replaced secret stops signing (ms since the epoch).
        PUSH_PREVIOUS_UNTIL_MS = "push_previous_until_ms";
        /// Push: how long a replaced secret keeps signing, ms.
        PUSH_ROTATION_MS = "push_rotation_ms";
        /// Push: time one POST may take, ms.
        PUSH_TIMEOUT_MS = "push_timeout_ms";
        /// Push: most POSTs in flight per pusher replica.
        PUSH_CONCURRENCY = "push_concurrency";
        /// Push: '1' = structured CloudEvents JSON, else binary mode.
        PUSH_STRUCTURED = "push_structured";
        /// '1': events of one ordering key are delivered one at a time, in publish order (fixed
        /// at creation).
        ORDERED = "ordered";
        /// '1': retention never trims an entry this subscription has not settled (its
        /// pending entries and those after its last-delivered id); set on the archive's
        /// subscriptions, so every event reaches the archive.
        RETENTION_HOLD = "retention_hold";
        /// Counter: entries acked unseen because the type filter excluded them.
        FILTERED = "filtered";
        /// Counter: unsettled entries dead-lettered by retention.
        RETENTION_DEAD_LETTERED = "retention_dead_lettered";
        /// Counter: unsettled entries dropped by retention or found trimmed away.
        RETENTION_DROPPED = "retention_dropped";
        /// Counter: dead letters removed by the dead-letter queue's cap.
        DLQ_OVERFLOW = "dlq_overflow";
    }
}

names! {
    /// Consumer names in a subscription's consumer group.
    consumer, "C_" {
        /// Holds nacked and released entries until a session claims them; the `_` cannot start a
        /// session consumer's name.
        PARKED = "_parked";
        /// Prefix of a session's consumer (`c-<uuid>`); only these are reaped when idle and empty.
        SESSION = "c-";
        /// Ordered subscriptions: holds entries waiting behind their key's head (never claimed
        /// as expired: CLAIM_DUE re-holds them).
        WAITING = "_waiting";
    }
}

/// Every group: (group name as docs/architecture.md's field table names it, its names).
pub const GROUPS: &[(&str, &[(&str, &str)])] = &[
    ("key", key::ALL),
    ("entry", entry::ALL),
    ("dead_letter", dead_letter::ALL),
    ("error_field", error_field::ALL),
    ("gate", gate::ALL),
    ("breaker", breaker::ALL),
    ("meta", meta::ALL),
    ("sub", sub::ALL),
    ("consumer", consumer::ALL),
];

/// The Lua locals naming every stored name (`local F_EVENT = 'e'` ...), prepended to every
/// script so the Lua code uses the names of this module, never literals.
pub fn lua_constants() -> String {
    let mut lua = String::from("-- Generated from libs/broker/src/schema.rs.\n");
    for (name, value) in GROUPS.iter().flat_map(|(_, names)| names.iter()) {
        lua.push_str(&format!("local {name} = '{value}'\n"));
    }
    lua
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_and_lua_names_unique() {
        let mut lua_names = std::collections::HashSet::new();
        for (name, value) in GROUPS.iter().flat_map(|(_, names)| names.iter()) {
            assert!(lua_names.insert(*name), "{name} twice");
            assert!(!value.is_empty() && value.chars().all(|c| c.is_ascii_lowercase() || "_:-".contains(c)), "{value}");
        }
    }

    #[test]
    fn the_lua_block_defines_every_name() {
        let lua = lua_constants();
        assert!(lua.contains("local F_EVENT = 'e'\n"), "{lua}");
        assert!(lua.contains("local E_REDRIVE = 'r:'\n"), "{lua}");
        assert!(lua.contains("local K_DEDUP = 'dedup'\n"), "{lua}");
    }
}
