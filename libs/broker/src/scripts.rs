//! The Lua scripts that make multi-step changes atomic. Every script touches only keys of one
//! stream (one hash tag), so it also runs on Redis Cluster. Every script starts with
//! the same prelude: the stored names of [`crate::schema`] as Lua locals, then shared helpers; a
//! script never spells a key segment or field name itself.

use std::sync::LazyLock;

use redis::{Script, Value};

pub(crate) use self::call::{Call, ScriptInput, run, run_batch, run_calls};
use crate::{
    BreakerPolicy, BrokerError, Keys, NewEvent, Published, Result, Source, ack_id::AckId, admin::millis, schema,
};

mod call;

/// Lua helpers shared by the scripts (prepended to every body, after the schema's names).
const HELPERS: &str = include_str!("scripts/prelude.lua");

/// What every script starts with: the stored names as Lua locals, generated from
/// [`crate::schema`] (scripts never spell a key segment or field name), then [`HELPERS`].
static PRELUDE: LazyLock<String> = LazyLock::new(|| format!("{}{HELPERS}", schema::lua_constants()));

/// A script: [`PRELUDE`], then `body`.
fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{}{body}", *PRELUDE))
}

/// A boolean argument as the scripts read it.
fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// Appends a batch of events to one stream, atomically: stream check (settings read once),
/// a dedup check of all the call's event ids, XADD per new event and one HSET of the new ids
/// into the stream's current dedup bucket; the stream's size mark (`meta` field `size_mark`) is
/// raised to the largest payload stored when it exceeds it (one compare per call), in the same
/// script, so no entry is ever larger than the mark (the native reads of `delivery::fetcher`
/// rely on it). It does not trim: retention goes through [`TRIM`], which accounts for
/// unsettled events.
///
/// Dedup (window `w` > 0): ids live in hashes of the stream, one per `w`-wide slice of Redis
/// time (`dedup_ids:<w>:<floor(ms / w)>`, field = event id, value = the first publish's entry
/// id). The script reads `TIME` once and HMGETs the ids from the current and the previous
/// bucket; a found id is a duplicate only if its entry id's time is less than `w` ago (exactly
/// the TTL semantics of layout 1's per-event keys), else it is stored anew. The first write into
/// a bucket sets its expiry (the end of the next bucket plus a margin of min(`w`, 60 s)) and
/// UNLINKs the bucket before the previous one, so a busy stream's big hashes are freed in
/// Redis's background thread rather than expired in its main thread. After a window change the
/// old width's buckets are consulted (with the old window) until their ids are older than it
/// (meta `dedup_old`); a stream created by layout 1 also reads its per-event keys for one window
/// after its first publish here (meta `dedup_legacy_until`).
///
/// KEYS: stream, meta. ARGV: event id, payload, type, traceparent, ordering key per event (''
/// = none: the entry gets no such field). A repeat within the call is caught too.
/// Returns `{0}` if the stream does not exist, else `{ids, trim}`: `ids` one string of the
/// events' entry ids in order, separated by single spaces, a duplicate's id (the entry first
/// stored under its event id) prefixed with `=`; `trim` 1 if the stream needs a trim, else 0:
/// when it is more than 1/64 of its max length (at least 1, at most 1000 entries) over it, so
/// trims come in chunks rather than one entry per publish. (One string, not two values per
/// event: the client parses each RESP value at a cost far above splitting a string.)
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/publish.lua")));

/// A [`PUBLISH`] call to `stream` with its KEYS and no events yet, with room for the ARGV of
/// `sized` (events are then added with [`push_publish_event`], in order).
pub(crate) fn publish_call<'e>(keys: &Keys, stream: &str, sized: impl Iterator<Item = &'e NewEvent>) -> Call {
    let (stream_key, meta) = (keys.stream(stream), keys.meta(stream));
    let (mut events, mut arg_bytes) = (0, 0);
    for e in sized {
        events += 1;
        arg_bytes += e.id.len() + e.payload.len() + e.event_type.len() + e.traceparent.len() + e.ordering_key.len();
    }
    let sizes = ((2, stream_key.len() + meta.len()), (5 * events, arg_bytes));
    Call::with_capacity(&PUBLISH, sizes.0, sizes.1).key(stream_key).key(meta)
}

/// Appends `event`'s five ARGV fields to a [`PUBLISH`] call (see [`publish_call`]).
pub(crate) fn push_publish_event(call: &mut Call, event: &NewEvent) {
    call.push_arg(&event.id);
    call.push_arg(&event.payload);
    call.push_arg(&event.event_type);
    call.push_arg(&event.traceparent);
    call.push_arg(&event.ordering_key);
}

/// Reads the reply of a [`PUBLISH`] call of `expected` events to `stream`: `{0}`, or the
/// events' ids and the needs-trim flag.
pub(crate) fn parse_publish(stream: &str, expected: usize, reply: Value) -> Result<(Vec<Published>, bool)> {
    let items: Vec<Value> = redis::from_redis_value(reply)?;
    let (ids, trim) = match items.as_slice() {
        [Value::Int(0)] => return Err(BrokerError::NotFound(format!("stream {stream:?}"))),
        [Value::BulkString(ids), Value::Int(trim)] => (ids, *trim == 1),
        _ => return Err(BrokerError::Internal(format!("unexpected publish reply {items:?}"))),
    };
    let mut out = Vec::with_capacity(expected);
    // No events means an empty string: no ids (splitting it would give one empty one).
    for id in ids.split(|&b| b == b' ').filter(|_| expected > 0) {
        let (duplicate, id) = match id.strip_prefix(b"=") {
            Some(first) => (true, first),
            None => (false, id),
        };
        let entry_id = std::str::from_utf8(id)
            .ok()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| BrokerError::Internal(format!("publish reply with entry id {id:?}")))?;
        out.push(Published { entry_id: entry_id.to_string(), duplicate, partition: 0 });
    }
    if out.len() != expected {
        return Err(BrokerError::Internal(format!("publish reply of {} ids for {expected} events", out.len())));
    }
    Ok((out, trim))
}

/// Creates a subscription: its settings hash and its consumer group, positioned at the start id (`ARGV[2]`).
/// Whatever an earlier subscription of the same name left behind (its redrive stream, dead
/// letters, backoffs, last errors, breaker: written by a session that outlived a delete) is
/// unlinked first, so a new subscription never inherits any of it.
///
/// KEYS: stream, meta, sub hash, subs set, redrive stream, then dlq, delay set, redrive delay
/// set, last-error hash, breaker hash, the ordering gate's heads, waiting and blocked keys.
/// ARGV: name, start id, then field/value pairs.
/// Returns 0 if the stream does not exist, 1 if the subscription exists, 2 when created.
pub static CREATE_SUBSCRIPTION: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/create_subscription.lua")));

/// Inputs of [`CREATE_SUBSCRIPTION`]. Reply: 0 if the stream does not exist, 1 if the
/// subscription exists, 2 when created.
pub(crate) struct CreateSubscription<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// The subscription.
    pub name: &'a str,
    /// Where its group starts (an entry id, or `$`).
    pub start_id: &'a str,
    /// Its settings fields.
    pub fields: &'a [(&'static str, String)],
}

impl ScriptInput for CreateSubscription<'_> {
    type Reply = i64;

    fn call(&self) -> Call {
        let (keys, stream, name) = (self.keys, self.stream, self.name);
        Call::new(&CREATE_SUBSCRIPTION)
            .key(keys.stream(stream))
            .key(keys.meta(stream))
            .key(keys.sub(stream, name))
            .key(keys.subs(stream))
            .key(keys.redrive(stream, name))
            .key(keys.dlq(stream, name))
            .key(keys.delay(stream, name))
            .key(keys.redrive_delay(stream, name))
            .key(keys.errors(stream, name))
            .key(keys.breaker(stream, name))
            .key(keys.heads(stream, name))
            .key(keys.waiting(stream, name))
            .key(keys.blocked(stream, name))
            .arg(name)
            .arg(self.start_id)
            .arg(self.fields)
    }

    fn parse(&self, reply: Value) -> Result<i64> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Dead-letters one pending entry if it is still the delivery the caller means; on an ordered
/// subscription its ordering key moves on to its next entry (kept in the dead letter).
///
/// KEYS: source stream, dlq, last-error hash, subscription hash. ARGV: group, entry id, owner
/// ('' = any), attempt (0 = any), reason, stream name, delete after settling ('1' for redrive
/// entries), dead-letter queue cap (0 = none), gate base ([`Keys::gate_base`]).
/// Returns 0 if the entry is not (or no longer) that delivery, 1 when dead-lettered, 2 when
/// its data was gone (it is only acked, and counted).
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/dead_letter.lua")));

/// One delivery a settlement script checks before it changes anything: the entry must still be
/// pending, held by `owner` at `attempt` (the ack id's view of it).
pub(crate) struct PendingDelivery<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The entry's stream.
    pub stream: &'a str,
    /// The subscription (its consumer group).
    pub subscription: &'a str,
    /// Where the entry is pending.
    pub source: Source,
    /// The entry.
    pub entry_id: &'a str,
    /// The consumer that must still hold it ('' = any, DEAD_LETTER only).
    pub owner: &'a str,
    /// The delivery attempt it must still be at (0 = any, DEAD_LETTER only).
    pub attempt: u32,
    /// The subscription's ordering gate ([`Keys::gate_base`]; '' = unordered).
    pub gate: String,
}

impl<'a> PendingDelivery<'a> {
    /// The delivery an ack id names, of a subscription whose gate base is `gate`.
    pub(crate) fn of(keys: &'a Keys, id: &'a AckId, gate: String) -> Self {
        Self {
            gate,
            keys,
            stream: &id.stream,
            subscription: &id.subscription,
            source: id.source,
            entry_id: &id.entry_id,
            owner: &id.consumer,
            attempt: id.attempt,
        }
    }
}

/// Inputs of [`DEAD_LETTER`]: one delivery to dead-letter. Reply: whether a dead letter was
/// written (not when the delivery is over, nor when its data was gone).
pub(crate) struct DeadLetter<'a> {
    /// The delivery.
    pub delivery: PendingDelivery<'a>,
    /// Why.
    pub reason: &'a str,
    /// The dead-letter queue's cap (0 = none).
    pub dlq_max_len: u64,
}

impl ScriptInput for DeadLetter<'_> {
    type Reply = bool;

    fn call(&self) -> Call {
        let d = &self.delivery;
        let (keys, stream, sub) = (d.keys, d.stream, d.subscription);
        Call::new(&DEAD_LETTER)
            .key(keys.source(stream, sub, d.source))
            .key(keys.dlq(stream, sub))
            .key(keys.errors(stream, sub))
            .key(keys.sub(stream, sub))
            .arg(sub)
            .arg(d.entry_id)
            .arg(d.owner)
            .arg(d.attempt)
            .arg(self.reason)
            .arg(stream)
            .arg(flag(d.source == Source::Redrive))
            .arg(self.dlq_max_len)
            .arg(&d.gate)
    }

    /// 2 = its data was gone (counted as dropped): no dead letter exists, so not applied.
    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(matches!(reply, Value::Int(1)))
    }
}

/// Changes when one pending entry is due, if it is still the delivery the caller means; JUSTID
/// keeps the delivery count.
/// * extend / delay (`owner` stays): `IDLE = idle ms`, due when idle reaches the ack deadline;
/// * nack (`owner` = parking consumer): due at once (`IDLE = idle ms` = the deadline), or,
///   with a retry backoff, parked with IDLE 0 and listed in the delay set until `backoff ms`.
///
/// A nack's reason, if given, is kept in the last-error hash until the entry is settled.
///
/// An entry whose data is gone ends its key's turn on an ordered subscription.
///
/// KEYS: source stream, delay set, last-error hash. ARGV: group, entry id, owner, attempt, new
/// owner, idle ms, backoff ms, last-error field, reason ('' = none), gate base.
/// Returns 0 if the delivery is over, 1 when modified.
pub static MODIFY_DEADLINE: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/modify_deadline.lua")));

/// Inputs of [`MODIFY_DEADLINE`]: one delivery whose due time changes. Reply: whether it was
/// still that delivery (and so modified).
pub(crate) struct ModifyDeadline<'a> {
    /// The delivery.
    pub delivery: PendingDelivery<'a>,
    /// Who holds it afterwards (the parking consumer for a nack).
    pub new_owner: &'a str,
    /// Its idle time afterwards, ms (due when it reaches the ack deadline).
    pub idle_ms: u64,
    /// Retry backoff to park it for, ms (0 = none).
    pub backoff_ms: u64,
    /// A nack's reason, kept until the entry is settled ('' = none).
    pub reason: &'a str,
}

impl ScriptInput for ModifyDeadline<'_> {
    type Reply = bool;

    fn call(&self) -> Call {
        let d = &self.delivery;
        let (keys, stream, sub) = (d.keys, d.stream, d.subscription);
        Call::new(&MODIFY_DEADLINE)
            .key(keys.source(stream, sub, d.source))
            .key(keys.source_delay(stream, sub, d.source))
            .key(keys.errors(stream, sub))
            .arg(sub)
            .arg(d.entry_id)
            .arg(d.owner)
            .arg(d.attempt)
            .arg(self.new_owner)
            .arg(self.idle_ms)
            .arg(self.backoff_ms)
            .arg(Keys::error_field(d.source, d.entry_id))
            .arg(self.reason)
            .arg(&d.gate)
    }

    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(matches!(reply, Value::Int(1)))
    }
}

/// Releases a consumer, one chunk per call (callers repeat until it is done, so no call grows
/// with the consumer's pending list): hands up to 1000 of its pending entries to the parking
/// consumer, due at once, and deletes the consumer once it holds nothing.
///
/// KEYS: stream. ARGV: group, consumer, parking consumer, idle ms.
/// Returns `{entries released, 1 when the consumer is deleted (done) else 0}`.
pub static RELEASE_CONSUMER: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/release_consumer.lua")));

/// Inputs of [`RELEASE_CONSUMER`]: one chunk. Reply: `(entries released, 1 when the consumer
/// is deleted)`.
pub(crate) struct ReleaseConsumer<'a> {
    /// The source stream.
    pub source: String,
    /// The subscription (its consumer group).
    pub group: &'a str,
    /// The consumer to release.
    pub consumer: &'a str,
    /// Idle time of released entries, ms (the ack deadline: due at once).
    pub idle_ms: u64,
}

impl ScriptInput for ReleaseConsumer<'_> {
    type Reply = (u64, u8);

    fn call(&self) -> Call {
        Call::new(&RELEASE_CONSUMER)
            .key(&self.source)
            .arg(self.group)
            .arg(self.consumer)
            .arg(schema::consumer::PARKED)
            .arg(self.idle_ms)
    }

    fn parse(&self, reply: Value) -> Result<Self::Reply> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Claims what is due for one session, atomically (so replicas never claim one entry twice):
/// 1. entries whose retry backoff is over (delay set score <= now);
/// 2. deliveries whose ack deadline passed (`XPENDING IDLE`): entries still in the delay set are
///    re-parked; those at max attempts are dead-lettered; an expired delivery with a retry
///    backoff is parked until it is over; the rest are claimed.
///
/// A claim increments the delivery count, which is returned with the entry. An entry whose data
/// vanished (trimmed outside eventflow) is dropped from the pending list by XCLAIM and counted
/// in the subscription's `retention_dropped`.
///
/// On an ordered subscription, entries held behind their key's head (consumer `_waiting`) are
/// never claimed as expired: they are held again (or, if the gate lost track of them, gated
/// again); dead-lettering or a vanished entry moves its key on.
///
/// KEYS: source stream, delay set, dlq, last-error hash, subscription hash. ARGV: group, me,
/// deadline ms, room, max attempts, stream name, parking consumer, delete-after-settle ('1' for
/// redrive), dead-letter queue cap, gate base ('' = unordered), then the backoff ms after
/// attempt 1, 2, ... (the last repeats).
/// Returns `{ {{id, count, fields}...}, {{dead-lettered id, traceparent}...}, expired }`.
pub static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/claim_due.lua")));

/// Inputs of [`CLAIM_DUE`] for one session and source. Reply: the raw reply, which the session
/// turns into its entries (`delivery::fetcher`).
pub(crate) struct ClaimDue<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The subscription.
    pub config: &'a crate::SubscriptionConfig,
    /// Where to claim from.
    pub source: Source,
    /// The claiming session's consumer.
    pub consumer: &'a str,
    /// Most entries to claim.
    pub room: usize,
    /// The retry backoff after attempt 1, 2, ... in ms (the last repeats).
    pub backoffs_ms: Vec<u64>,
    /// The dead-letter queue's cap (0 = none).
    pub dlq_max_len: u64,
}

impl ScriptInput for ClaimDue<'_> {
    type Reply = Value;

    fn call(&self) -> Call {
        let (keys, config) = (self.keys, self.config);
        let (stream, sub) = (config.stream.as_str(), config.name.as_str());
        Call::new(&CLAIM_DUE)
            .key(keys.source(stream, sub, self.source))
            .key(keys.source_delay(stream, sub, self.source))
            .key(keys.dlq(stream, sub))
            .key(keys.errors(stream, sub))
            .key(keys.sub(stream, sub))
            .arg(sub)
            .arg(self.consumer)
            .arg(millis(config.ack_deadline))
            .arg(self.room)
            .arg(config.max_delivery_attempts)
            .arg(stream)
            .arg(schema::consumer::PARKED)
            .arg(flag(self.source == Source::Redrive))
            .arg(self.dlq_max_len)
            .arg(keys.gate_base(config))
            .arg(&self.backoffs_ms)
    }

    fn parse(&self, reply: Value) -> Result<Value> {
        Ok(reply)
    }
}

/// Moves a subscription's read position and clears its retry backoffs on the stream (everything
/// after the position is delivered again anyway; the redrive stream is not affected) — one short
/// atomic step. The pending entries at or before the position are acked afterwards, in bounded
/// chunks ([`SEEK_ACK`]), so a seek over a million pending entries never blocks Redis.
///
/// On an ordered subscription the ordering gate is cleared too: every entry after the position
/// is read again and gated afresh, and those at or before it are acked.
///
/// KEYS: stream, delay set, the gate's heads, waiting and blocked keys. ARGV: group, new
/// last-delivered id ('$' = the end).
/// Returns the position as an entry id ('$' resolved to the stream's last id), up to which
/// pending entries are to be acked.
pub static SEEK: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/seek.lua")));

/// Inputs of [`SEEK`]. Reply: the new position as an entry id.
pub(crate) struct Seek<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// The subscription (its consumer group).
    pub group: &'a str,
    /// The new last-delivered id (`$` = the end).
    pub id: &'a str,
}

impl ScriptInput for Seek<'_> {
    type Reply = String;

    fn call(&self) -> Call {
        let (keys, stream) = (self.keys, self.stream);
        Call::new(&SEEK)
            .key(keys.stream(stream))
            .key(keys.delay(stream, self.group))
            .key(keys.heads(stream, self.group))
            .key(keys.waiting(stream, self.group))
            .key(keys.blocked(stream, self.group))
            .arg(self.group)
            .arg(self.id)
    }

    fn parse(&self, reply: Value) -> Result<String> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Requeues dead letters into their subscription's redrive stream (and only there), keeping
/// the event bytes (with their trace context), the original entry id and the ordering key. On
/// an ordered subscription a requeued event goes back to the head of its key: the head at once
/// if the key is free, else first among its waiting entries.
///
/// KEYS: dlq, redrive stream. ARGV: group, gate base, then dead-letter ids.
/// Returns one 1 (requeued) or 0 (not found) per id.
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/requeue.lua")));

/// Inputs of [`REQUEUE`]: dead letters of one subscription. Reply: per id, whether it was
/// found (and requeued).
pub(crate) struct Requeue<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// The subscription whose dead letters these are.
    pub subscription: &'a str,
    /// The dead letters' ids.
    pub ids: &'a [String],
    /// The subscription's gate base ([`Keys::gate_base`]).
    pub gate: String,
}

impl ScriptInput for Requeue<'_> {
    type Reply = Vec<bool>;

    fn call(&self) -> Call {
        let (keys, stream, sub) = (self.keys, self.stream, self.subscription);
        Call::new(&REQUEUE)
            .key(keys.dlq(stream, sub))
            .key(keys.redrive(stream, sub))
            .arg(sub)
            .arg(&self.gate)
            .arg(self.ids)
    }

    fn parse(&self, reply: Value) -> Result<Vec<bool>> {
        let moved: Vec<i64> = redis::from_redis_value(reply)?;
        Ok(moved.into_iter().map(|m| m == 1).collect())
    }
}

/// Appends archived events to a subscription's redrive stream, so only that subscription
/// receives them again (as a dead-letter requeue does): checks the subscription exists and
/// its redrive group too, then one XADD per event with the event bytes, type, origin entry id
/// and traceparent.
///
/// KEYS: subscription settings, redrive stream. ARGV: subscription name, then per event:
/// payload, type, origin entry id, traceparent. Returns the events added, or -1 when the
/// subscription does not exist.
pub static REPLAY: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/replay.lua")));

/// Inputs of [`REPLAY`]: archived events for one subscription. Reply: events added, `None`
/// when the subscription does not exist.
pub(crate) struct Replay<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// The subscription that receives them.
    pub subscription: &'a str,
    /// The events, in order.
    pub events: &'a [crate::model::ReplayEvent],
}

impl ScriptInput for Replay<'_> {
    type Reply = Option<u64>;

    fn call(&self) -> Call {
        let (keys, stream, sub) = (self.keys, self.stream, self.subscription);
        let mut call = Call::new(&REPLAY).key(keys.sub(stream, sub)).key(keys.redrive(stream, sub)).arg(sub);
        for e in self.events {
            call = call.arg(e.payload.as_slice()).arg(&e.event_type).arg(&e.entry_id).arg(&e.traceparent);
        }
        call
    }

    fn parse(&self, reply: Value) -> Result<Option<u64>> {
        let added: i64 = redis::from_redis_value(reply)?;
        Ok(u64::try_from(added).ok())
    }
}

/// Asks a subscription's circuit breaker how many deliveries it allows now, moving it from
/// open to half-open when the open time is over (and refilling half-open probes that were
/// handed out but never settled within `open ms`).
///
/// KEYS: breaker hash. ARGV: wanted, half-open probes, open ms.
/// Returns `{allowed, state ('c'|'o'|'h'), ms until open ends}`.
pub static BREAKER_ALLOW: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/breaker_allow.lua")));

/// Inputs of [`BREAKER_ALLOW`]. Reply: `(allowed, state, ms until open ends)`.
pub(crate) struct BreakerAllow<'a> {
    /// The breaker hash.
    pub key: String,
    /// Deliveries wanted.
    pub want: usize,
    /// The subscription's breaker policy.
    pub policy: &'a BreakerPolicy,
}

impl ScriptInput for BreakerAllow<'_> {
    type Reply = (usize, String, u64);

    fn call(&self) -> Call {
        Call::new(&BREAKER_ALLOW)
            .key(&self.key)
            .arg(self.want)
            .arg(self.policy.half_open_probes)
            .arg(millis(self.policy.open_duration))
    }

    fn parse(&self, reply: Value) -> Result<Self::Reply> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Records delivery outcomes in a subscription's circuit breaker and moves its state:
/// closed -> open when the window's failure share reaches the ratio (with enough outcomes);
/// half-open -> open on any failure, -> closed when `probes` successes arrived.
///
/// KEYS: breaker hash. ARGV: successes, failures, window s, minimum requests, failure ratio,
/// open ms, probes. Returns the state after recording ('c'|'o'|'h').
pub static BREAKER_RECORD: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/breaker_record.lua")));

/// Inputs of [`BREAKER_RECORD`]. Reply: the state after recording.
pub(crate) struct BreakerRecord<'a> {
    /// The breaker hash.
    pub key: String,
    /// Successes to record.
    pub ok: usize,
    /// Failures to record.
    pub bad: usize,
    /// The subscription's breaker policy.
    pub policy: &'a BreakerPolicy,
}

impl ScriptInput for BreakerRecord<'_> {
    type Reply = String;

    fn call(&self) -> Call {
        let policy = self.policy;
        Call::new(&BREAKER_RECORD)
            .key(&self.key)
            .arg(self.ok)
            .arg(self.bad)
            .arg(policy.window.as_secs().max(1))
            .arg(policy.minimum_requests)
            .arg(policy.failure_ratio)
            .arg(millis(policy.open_duration))
            .arg(policy.half_open_probes)
    }

    fn parse(&self, reply: Value) -> Result<String> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Sets fields of a settings hash only if it exists (an update must not resurrect a deleted
/// stream or subscription).
///
/// KEYS: hash. ARGV: field/value pairs. Returns 0 if the hash does not exist, 1 when updated.
pub static UPDATE_HASH: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/update_hash.lua")));

/// Inputs of [`UPDATE_HASH`]. Reply: whether the hash existed (and was updated).
pub(crate) struct UpdateHash<'a> {
    /// The settings hash.
    pub key: String,
    /// The fields to set.
    pub fields: &'a [(&'static str, String)],
}

impl ScriptInput for UpdateHash<'_> {
    type Reply = bool;

    fn call(&self) -> Call {
        Call::new(&UPDATE_HASH).key(&self.key).arg(self.fields)
    }

    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(matches!(reply, Value::Int(1)))
    }
}

/// Acknowledges entries of one source: replies with their count when every one was pending,
/// else with one flag per id (1 acked, 0 not pending); redrive
/// entries are deleted once acked; their last errors are forgotten. Entries the type filter
/// excluded are acked the same way and counted in the subscription's `filtered`.
///
/// On an ordered subscription each acked head hands its key on to the key's next entry.
///
/// KEYS: source stream, last-error hash, subscription hash. ARGV: group, delete ('1' for
/// redrive), count as filtered ('1' or '0'), gate base, then entry ids.
pub static ACK: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/ack.lua")));

/// Inputs of [`ACK`]: entries of one source of one subscription. Parsed reply: per entry,
/// whether it was pending (and so acked).
pub(crate) struct Ack<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The entries' stream.
    pub stream: &'a str,
    /// The subscription (its consumer group).
    pub subscription: &'a str,
    /// Where the entries are pending.
    pub source: Source,
    /// Whether they are entries the type filter excluded (counted in `filtered`).
    pub filtered: bool,
    /// The entries, in order.
    pub entry_ids: Vec<&'a str>,
    /// The subscription's gate base ([`Keys::gate_base`]).
    pub gate: String,
}

impl ScriptInput for Ack<'_> {
    type Reply = Vec<bool>;

    fn call(&self) -> Call {
        let (keys, stream, sub) = (self.keys, self.stream, self.subscription);
        Call::new(&ACK)
            .key(keys.source(stream, sub, self.source))
            .key(keys.errors(stream, sub))
            .key(keys.sub(stream, sub))
            .arg(sub)
            .arg(flag(self.source == Source::Redrive))
            .arg(flag(self.filtered))
            .arg(&self.gate)
            .arg(&self.entry_ids)
    }

    fn parse(&self, reply: Value) -> Result<Vec<bool>> {
        let expected = self.entry_ids.len();
        let flags: Vec<bool> = match reply {
            // Every id acked: the script replies with the count alone.
            Value::Int(n) if usize::try_from(n) == Ok(expected) => return Ok(vec![true; expected]),
            Value::Array(flags) => flags.iter().map(ack_flag).collect::<Result<_>>()?,
            other => return Err(BrokerError::Internal(format!("unexpected ack reply {other:?}"))),
        };
        if flags.len() != expected {
            return Err(BrokerError::Internal(format!("ack reply of {} flags for {expected} ids", flags.len())));
        }
        Ok(flags)
    }
}

/// One id's outcome in a per-id ACK reply: 1 acked, 0 not pending.
fn ack_flag(flag: &Value) -> Result<bool> {
    match flag {
        Value::Int(n) => Ok(*n > 0),
        other => Err(BrokerError::Internal(format!("unexpected ack flag {other:?}"))),
    }
}

/// Deletes consumers of a group that hold nothing and have been idle longer than `idle ms`:
/// sessions of crashed replicas, or closed while Redis was unreachable. Only session consumers
/// (`c-...`); the 0-pending check is here because DELCONSUMER drops a consumer's pending list.
///
/// KEYS: stream. ARGV: group, idle ms. Returns the number deleted.
pub static REAP_CONSUMERS: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/reap_consumers.lua")));

/// Inputs of [`REAP_CONSUMERS`]. Reply: the number deleted.
pub(crate) struct ReapConsumers<'a> {
    /// The source stream.
    pub source: String,
    /// The subscription (its consumer group).
    pub group: &'a str,
    /// Idle time beyond which an empty session consumer goes, ms.
    pub idle_ms: u64,
}

impl ScriptInput for ReapConsumers<'_> {
    type Reply = u64;

    fn call(&self) -> Call {
        Call::new(&REAP_CONSUMERS).key(&self.source).arg(self.group).arg(self.idle_ms)
    }

    fn parse(&self, reply: Value) -> Result<u64> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Applies a stream's retention to its oldest entries, at most `chunk` of them per call (each
/// call stays short; callers repeat while it reports more): entries beyond the max length and
/// entries older than the max age (by Redis time). Before removing them it settles them for every subscription that had not: entries
/// pending in a subscription's group, or not yet delivered to it (after its last-delivered id),
/// are dead-lettered there with reason `retention` (and the last nack reason, if any), or,
/// when the stream's settings say `drop_unsettled`, counted in the subscription's
/// `retention_dropped`; pending ones are acked and their backoff and last error forgotten.
///
/// The per-subscription keys are built here from `base` (`<p>:{<s>}:`, the stream's hash tag,
/// so they share the slot of `KEYS[1]`) and the group names, as [`crate::keys`] lays them out:
/// the set of subscriptions can change between a caller's read and this call.
///
/// A subscription with a retention hold (`retention_hold` = 1, the archive's) is never
/// trimmed past: the chunk stops before its oldest pending entry and after its last-delivered
/// id, and `more` is then 0 (what is left waits for that subscription).
///
/// KEYS: stream, meta. ARGV: key base, chunk, dead-letter queue cap, stream name.
/// Returns `{removed, dead-lettered, dropped, more}` (`more` = 1 if a full chunk was removed).
pub static TRIM: LazyLock<Script> = LazyLock::new(|| with_prelude(TRIM_SOURCE));

/// Inputs of [`TRIM`]: one chunk of a stream's retention. Reply: `[removed, dead-lettered,
/// dropped, more]`.
pub(crate) struct Trim<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// Most entries removed by this call.
    pub chunk: usize,
    /// The dead-letter queues' cap (0 = none).
    pub dlq_max_len: u64,
}

impl ScriptInput for Trim<'_> {
    type Reply = [u64; 4];

    fn call(&self) -> Call {
        let (keys, stream) = (self.keys, self.stream);
        Call::new(&TRIM)
            .key(keys.stream(stream))
            .key(keys.meta(stream))
            .arg(keys.base(stream))
            .arg(self.chunk)
            .arg(self.dlq_max_len)
            .arg(stream)
    }

    fn parse(&self, reply: Value) -> Result<[u64; 4]> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// The body of [`TRIM`].
pub(crate) const TRIM_SOURCE: &str = include_str!("scripts/trim.lua");

/// Reads new entries for a session without blocking, bounded by bytes as well as count:
/// `XREADGROUP ... COUNT n STREAMS key >`, then returns entries while their payloads (field
/// `e`) fit in `budget` bytes (the first always when `force`, i.e. the session holds nothing
/// unsettled, so one event of any size is delivered). The rest were read into the session's
/// pending list too; only their ids are returned, and the session fetches them later with
/// [`FETCH`]. When there is nothing new it returns the stream's last entry id, read in the same
/// atomic step, so a session that then waits for entries after that id cannot miss one (see
/// `watch`).
///
/// On an ordered subscription every entry read goes through the ordering gate first: an entry
/// whose key has another entry in flight is held (consumer `_waiting`, delivery count 0) and
/// listed as waiting instead of returned.
///
/// KEYS: source stream. ARGV: group, consumer, count, budget, force ('1' or '0'), gate base,
/// redrive ('1' or '0').
/// Returns `{1, {{id, {field, value, ...}}...}, {id...}}`, or `{0, last id}` (`0-0` if empty).
pub static READ_NEW: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/read_new.lua")));

/// Inputs of [`READ_NEW`]. Reply: the raw reply, which the session turns into its entries
/// (`delivery::fetcher`).
pub(crate) struct ReadNew<'a> {
    /// The source stream.
    pub source: String,
    /// The subscription (its consumer group).
    pub group: &'a str,
    /// The reading session's consumer.
    pub consumer: &'a str,
    /// Most entries to read.
    pub count: usize,
    /// Payload bytes the returned entries may take.
    pub budget: usize,
    /// Whether the first entry is taken whatever its size.
    pub force: bool,
    /// The subscription's gate base ([`Keys::gate_base`]).
    pub gate: String,
    /// Whether `source` is the redrive stream.
    pub redrive: bool,
}

impl ScriptInput for ReadNew<'_> {
    type Reply = Value;

    fn call(&self) -> Call {
        Call::new(&READ_NEW)
            .key(&self.source)
            .arg(self.group)
            .arg(self.consumer)
            .arg(self.count)
            .arg(self.budget)
            .arg(flag(self.force))
            .arg(&self.gate)
            .arg(flag(self.redrive))
    }

    fn parse(&self, reply: Value) -> Result<Value> {
        Ok(reply)
    }
}

/// Fetches entries a session read but did not take yet ([`READ_NEW`]'s rest), bounded by bytes
/// like it: entries while their payloads fit in `budget` (the first always when `force`).
/// Entries no longer there (trimmed) are skipped.
///
/// KEYS: source stream. ARGV: budget, force ('1' or '0'), then entry ids in order.
/// Returns `{{{id, {field, value, ...}}...}, ids consumed}` (taken or skipped, from the front).
pub static FETCH: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/fetch.lua")));

/// Inputs of [`FETCH`]. Reply: the raw entry rows (turned into entries by the session) and how
/// many ids were consumed from the front.
pub(crate) struct FetchBacklog<'a> {
    /// The source stream.
    pub source: String,
    /// Payload bytes the entries may take.
    pub budget: usize,
    /// Whether the first entry is taken whatever its size.
    pub force: bool,
    /// The entry ids, in order.
    pub ids: &'a [String],
}

impl ScriptInput for FetchBacklog<'_> {
    type Reply = (Vec<Value>, usize);

    fn call(&self) -> Call {
        Call::new(&FETCH).key(&self.source).arg(self.budget).arg(flag(self.force)).arg(self.ids)
    }

    fn parse(&self, reply: Value) -> Result<Self::Reply> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Step one of deleting a stream, atomically: if its settings exist, leaves the durable
/// "deleting" marker (holding this deletion's token) and unlinks every key known by name — the
/// settings, the stream (with its consumer groups), the subscription set and each subscription's
/// keys. UNLINK frees big values in the background, so a stream of millions of entries does not
/// block Redis. Publishing and creating subscriptions fail from here on (no settings); the keys
/// not known by name (dedup keys) are swept afterwards, in bounded batches ([`SWEEP`]), while
/// the marker keeps a re-create from starting before the sweep is done.
///
/// KEYS: meta, marker, then every other key to unlink. ARGV: token.
/// Returns `{1, token}` when deleted, else `{0, pending token}` (`''` when no delete is pending).
pub static DELETE_STREAM: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/delete_stream.lua")));

/// Inputs of [`DELETE_STREAM`]. Reply: `(1, token)` when deleted, else `(0, pending token)`.
pub(crate) struct DeleteStream<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// Its subscriptions, whose keys go too.
    pub subscriptions: &'a [String],
    /// This deletion's token.
    pub token: &'a str,
}

impl ScriptInput for DeleteStream<'_> {
    type Reply = (i64, String);

    fn call(&self) -> Call {
        let (keys, stream) = (self.keys, self.stream);
        let mut call = Call::new(&DELETE_STREAM)
            .key(keys.meta(stream))
            .key(keys.deleting(stream))
            .key(keys.stream(stream))
            .key(keys.subs(stream))
            .arg(self.token);
        for sub in self.subscriptions {
            call = call.key(keys.subscription_keys(stream, sub));
        }
        call
    }

    fn parse(&self, reply: Value) -> Result<Self::Reply> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// One batch of the sweep after [`DELETE_STREAM`]: unlinks leftover keys of the deleted stream
/// (its `{<stream>}` keys found by SCAN), but only while the "deleting" marker is there —
/// without it the name may belong to a new stream whose keys must stay.
///
/// KEYS: marker, then the keys to unlink (never the marker). Returns -1 if the marker is gone,
/// else the number of keys unlinked.
pub static SWEEP: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/sweep.lua")));

/// Inputs of [`SWEEP`]. Reply: -1 if the marker is gone, else the number of keys unlinked.
pub(crate) struct Sweep<'a> {
    /// The deletion marker.
    pub marker: &'a str,
    /// Keys to unlink.
    pub doomed: &'a [String],
}

impl ScriptInput for Sweep<'_> {
    type Reply = i64;

    fn call(&self) -> Call {
        Call::new(&SWEEP).key(self.marker).key(self.doomed)
    }

    fn parse(&self, reply: Value) -> Result<i64> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Ends a stream deletion: removes the "deleting" marker if it still holds this deletion's
/// token (a later deletion of a re-created stream has its own).
///
/// KEYS: marker. ARGV: token. Returns 1 when removed, 0 if it held another token or none.
pub static FINISH_DELETE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/finish_delete.lua")));

/// Inputs of [`FINISH_DELETE`]. Reply: whether the marker held the token (and was removed).
pub(crate) struct FinishDelete<'a> {
    /// The deletion marker.
    pub marker: &'a str,
    /// This deletion's token.
    pub token: &'a str,
}

impl ScriptInput for FinishDelete<'_> {
    type Reply = bool;

    fn call(&self) -> Call {
        Call::new(&FINISH_DELETE).key(self.marker).arg(self.token)
    }

    fn parse(&self, reply: Value) -> Result<bool> {
        Ok(matches!(reply, Value::Int(1)))
    }
}

/// Creates a stream's settings, atomically, unless the stream exists or a deletion of the
/// same name has not finished its sweep (its marker is still there): then nothing is written.
///
/// KEYS: meta, marker. ARGV: created ms, then field/value pairs.
/// Returns 0 if the stream exists, 1 if a deletion is pending, 2 when created.
pub static CREATE_STREAM: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/create_stream.lua")));

/// Inputs of [`CREATE_STREAM`]. Reply: 0 if the stream exists, 1 if a deletion is pending, 2
/// when created.
pub(crate) struct CreateStream<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// Its creation time (ms).
    pub created_ms: u64,
    /// Its other settings fields.
    pub fields: &'a [(&'static str, String)],
}

impl ScriptInput for CreateStream<'_> {
    type Reply = i64;

    fn call(&self) -> Call {
        let (keys, stream) = (self.keys, self.stream);
        Call::new(&CREATE_STREAM)
            .key(keys.meta(stream))
            .key(keys.deleting(stream))
            .arg(self.created_ms)
            .arg(self.fields)
    }

    fn parse(&self, reply: Value) -> Result<i64> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// Deletes a subscription, atomically: its consumer group on the stream (with its pending
/// entries), its membership, settings, dead letters, redrive stream (with its group), backoffs,
/// last errors and breaker. UNLINK, so a big dead-letter queue does not block Redis.
///
/// KEYS: meta, stream, subs set, then the subscription's keys (settings hash first). ARGV: name.
/// Returns 0 if the stream does not exist, 1 if nothing of the subscription was there, 2 when
/// something was deleted.
pub static DELETE_SUBSCRIPTION: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/delete_subscription.lua")));

/// Inputs of [`DELETE_SUBSCRIPTION`]. Reply: 0 if the stream does not exist, 1 if nothing of
/// the subscription was there, 2 when something was deleted.
pub(crate) struct DeleteSubscription<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// The subscription.
    pub name: &'a str,
}

impl ScriptInput for DeleteSubscription<'_> {
    type Reply = i64;

    fn call(&self) -> Call {
        let (keys, stream, name) = (self.keys, self.stream, self.name);
        Call::new(&DELETE_SUBSCRIPTION)
            .key(keys.meta(stream))
            .key(keys.stream(stream))
            .key(keys.subs(stream))
            .key(keys.subscription_keys(stream, name))
            .arg(name)
    }

    fn parse(&self, reply: Value) -> Result<i64> {
        Ok(redis::from_redis_value(reply)?)
    }
}

/// One chunk of a seek ([`SEEK`]): acks up to `count` pending entries of the group at or before
/// `upto` and forgets their last errors. Bounded work per call; the caller repeats it until a
/// chunk comes back short.
///
/// KEYS: stream, last-error hash. ARGV: group, upto id, count.
/// Returns `{acked, pending entries found}`.
pub static SEEK_ACK: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/seek_ack.lua")));

/// Inputs of [`SEEK_ACK`]. Reply: `(acked, pending entries found)`.
pub(crate) struct SeekAck<'a> {
    /// The key layout.
    pub keys: &'a Keys,
    /// The stream.
    pub stream: &'a str,
    /// The subscription (its consumer group).
    pub group: &'a str,
    /// Ack pending entries at or before this id.
    pub upto: &'a str,
    /// Most entries acked by this call.
    pub chunk: usize,
}

impl ScriptInput for SeekAck<'_> {
    type Reply = (u64, usize);

    fn call(&self) -> Call {
        let (keys, stream, group) = (self.keys, self.stream, self.group);
        Call::new(&SEEK_ACK)
            .key(keys.stream(stream))
            .key(keys.errors(stream, group))
            .arg(group)
            .arg(self.upto)
            .arg(self.chunk)
    }

    fn parse(&self, reply: Value) -> Result<Self::Reply> {
        Ok(redis::from_redis_value(reply)?)
    }
}
