//! The Lua scripts that make multi-step changes atomic. Every script touches only keys of one
//! stream (one hash tag), so it also runs on Redis Cluster. Every script starts with
//! [`PRELUDE`]: the stored names of [`crate::schema`] as Lua locals, then shared helpers; a
//! script never spells a key segment or field name itself.

use std::sync::LazyLock;

use redis::Script;

use crate::schema;

/// Lua helpers shared by the scripts (prepended to every body, after the schema's names).
const HELPERS: &str = include_str!("scripts/prelude.lua");

/// What every script starts with: the stored names as Lua locals, generated from
/// [`crate::schema`] (scripts never spell a key segment or field name), then [`HELPERS`].
static PRELUDE: LazyLock<String> = LazyLock::new(|| format!("{}{HELPERS}", schema::lua_constants()));

/// A script: [`PRELUDE`], then `body`.
fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{}{body}", *PRELUDE))
}

/// Appends a batch of events to one stream, atomically: stream check (settings read once),
/// per event a dedup check, XADD and the dedup key with the window as TTL. It does not trim:
/// retention goes through [`TRIM`], which accounts for unsettled events.
///
/// KEYS: stream, meta, then one dedup key per event (read with one MGET; a repeat within the
/// batch is caught too). ARGV: payload, type, traceparent per event.
/// Returns `{0}` if the stream does not exist, else per event `code, id` (1 stored, 2 duplicate
/// of the entry `id`), flattened, then 1 if the stream needs a trim, else 0: when it is more
/// than 1/64 of its max length (at least 1, at most 1000 entries) over it, so trims come in
/// chunks rather than one entry per publish.
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/publish.lua")));

/// Creates a subscription: its settings hash and its consumer group, positioned at the start id (`ARGV[2]`).
/// Whatever an earlier subscription of the same name left behind (its redrive stream, dead
/// letters, backoffs, last errors, breaker: written by a session that outlived a delete) is
/// unlinked first, so a new subscription never inherits any of it.
///
/// KEYS: stream, meta, sub hash, subs set, redrive stream, then dlq, delay set, redrive delay
/// set, last-error hash, breaker hash. ARGV: name, start id, then field/value pairs.
/// Returns 0 if the stream does not exist, 1 if the subscription exists, 2 when created.
pub static CREATE_SUBSCRIPTION: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/create_subscription.lua")));

/// Dead-letters one pending entry if it is still the delivery the caller means.
///
/// KEYS: source stream, dlq, last-error hash, subscription hash. ARGV: group, entry id, owner
/// ('' = any), attempt (0 = any), reason, stream name, delete after settling ('1' for redrive
/// entries), dead-letter queue cap (0 = none).
/// Returns 0 if the entry is not (or no longer) that delivery, 1 when dead-lettered, 2 when
/// its data was gone (it is only acked, and counted).
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/dead_letter.lua")));

/// Changes when one pending entry is due, if it is still the delivery the caller means; JUSTID
/// keeps the delivery count.
/// * extend / delay (`owner` stays): `IDLE = idle ms`, due when idle reaches the ack deadline;
/// * nack (`owner` = parking consumer): due at once (`IDLE = idle ms` = the deadline), or,
///   with a retry backoff, parked with IDLE 0 and listed in the delay set until `backoff ms`.
///
/// A nack's reason, if given, is kept in the last-error hash until the entry is settled.
///
/// KEYS: source stream, delay set, last-error hash. ARGV: group, entry id, owner, attempt, new
/// owner, idle ms, backoff ms, last-error field, reason ('' = none).
/// Returns 0 if the delivery is over, 1 when modified.
pub static MODIFY_DEADLINE: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/modify_deadline.lua")));

/// Releases a consumer, one chunk per call (callers repeat until it is done, so no call grows
/// with the consumer's pending list): hands up to 1000 of its pending entries to the parking
/// consumer, due at once, and deletes the consumer once it holds nothing.
///
/// KEYS: stream. ARGV: group, consumer, parking consumer, idle ms.
/// Returns `{entries released, 1 when the consumer is deleted (done) else 0}`.
pub static RELEASE_CONSUMER: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/release_consumer.lua")));

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
/// KEYS: source stream, delay set, dlq, last-error hash, subscription hash. ARGV: group, me,
/// deadline ms, room, max attempts, stream name, parking consumer, delete-after-settle ('1' for
/// redrive), dead-letter queue cap, then the backoff ms after attempt 1, 2, ... (the last
/// repeats).
/// Returns `{ {{id, count, fields}...}, {{dead-lettered id, traceparent}...}, expired }`.
pub static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/claim_due.lua")));

/// Moves a subscription's read position and clears its retry backoffs on the stream (everything
/// after the position is delivered again anyway; the redrive stream is not affected) — one short
/// atomic step. The pending entries at or before the position are acked afterwards, in bounded
/// chunks ([`SEEK_ACK`]), so a seek over a million pending entries never blocks Redis.
///
/// KEYS: stream, delay set. ARGV: group, new last-delivered id ('$' = the end).
/// Returns the position as an entry id ('$' resolved to the stream's last id), up to which
/// pending entries are to be acked.
pub static SEEK: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/seek.lua")));

/// Requeues dead letters into their subscription's redrive stream (and only there), keeping
/// the event bytes (with their trace context) and the original entry id.
///
/// KEYS: dlq, redrive stream. ARGV: group, then dead-letter ids.
/// Returns one 1 (requeued) or 0 (not found) per id.
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/requeue.lua")));

/// Asks a subscription's circuit breaker how many deliveries it allows now, moving it from
/// open to half-open when the open time is over (and refilling half-open probes that were
/// handed out but never settled within `open ms`).
///
/// KEYS: breaker hash. ARGV: wanted, half-open probes, open ms.
/// Returns `{allowed, state ('c'|'o'|'h'), ms until open ends}`.
pub static BREAKER_ALLOW: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/breaker_allow.lua")));

/// Records delivery outcomes in a subscription's circuit breaker and moves its state:
/// closed -> open when the window's failure share reaches the ratio (with enough outcomes);
/// half-open -> open on any failure, -> closed when `probes` successes arrived.
///
/// KEYS: breaker hash. ARGV: successes, failures, window s, minimum requests, failure ratio,
/// open ms, probes. Returns the state after recording ('c'|'o'|'h').
pub static BREAKER_RECORD: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/breaker_record.lua")));

/// Sets fields of a settings hash only if it exists (an update must not resurrect a deleted
/// stream or subscription).
///
/// KEYS: hash. ARGV: field/value pairs. Returns 0 if the hash does not exist, 1 when updated.
pub static UPDATE_HASH: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/update_hash.lua")));

/// Acknowledges entries of one source, one reply per id (1 acked, 0 not pending); redrive
/// entries are deleted once acked; their last errors are forgotten.
///
/// KEYS: source stream, last-error hash. ARGV: group, delete ('1' for redrive), then entry ids.
pub static ACK: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/ack.lua")));

/// Deletes consumers of a group that hold nothing and have been idle longer than `idle ms`:
/// sessions of crashed replicas, or closed while Redis was unreachable. Only session consumers
/// (`c-...`); the 0-pending check is here because DELCONSUMER drops a consumer's pending list.
///
/// KEYS: stream. ARGV: group, idle ms. Returns the number deleted.
pub static REAP_CONSUMERS: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/reap_consumers.lua")));

/// Applies a stream's retention to its oldest entries, at most `chunk` of them per call (each
/// call stays short; callers repeat while it reports more): entries beyond the max length and
/// entries older than the max age (by Redis time). Before removing them it settles them for every subscription that had not: entries
/// pending in a subscription's group, or not yet delivered to it (after its last-delivered id),
/// are dead-lettered there with reason `retention` (and the last nack reason, if any), or,
/// when the stream's settings say `drop_unsettled`, counted in the subscription's
/// `retention_dropped`; pending ones are acked and their backoff and last error forgotten.
///
/// The per-subscription keys are built here from `base` (`<p>:{<s>}:`, the stream's hash tag,
/// so they share the slot of KEYS[1]) and the group names, as [`crate::keys`] lays them out:
/// the set of subscriptions can change between a caller's read and this call.
///
/// KEYS: stream, meta. ARGV: key base, chunk, dead-letter queue cap, stream name.
/// Returns `{removed, dead-lettered, dropped, more}` (`more` = 1 if a full chunk was removed).
pub static TRIM: LazyLock<Script> = LazyLock::new(|| with_prelude(TRIM_SOURCE));

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
/// KEYS: source stream. ARGV: group, consumer, count, budget, force ('1' or '0').
/// Returns `{1, {{id, {field, value, ...}}...}, {id...}}`, or `{0, last id}` (`0-0` if empty).
pub static READ_NEW: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/read_new.lua")));

/// Fetches entries a session read but did not take yet ([`READ_NEW`]'s rest), bounded by bytes
/// like it: entries while their payloads fit in `budget` (the first always when `force`).
/// Entries no longer there (trimmed) are skipped.
///
/// KEYS: source stream. ARGV: budget, force ('1' or '0'), then entry ids in order.
/// Returns `{{{id, {field, value, ...}}...}, ids consumed}` (taken or skipped, from the front).
pub static FETCH: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/fetch.lua")));

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

/// One batch of the sweep after [`DELETE_STREAM`]: unlinks leftover keys of the deleted stream
/// (its `{<stream>}` keys found by SCAN), but only while the "deleting" marker is there —
/// without it the name may belong to a new stream whose keys must stay.
///
/// KEYS: marker, then the keys to unlink (never the marker). Returns -1 if the marker is gone,
/// else the number of keys unlinked.
pub static SWEEP: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/sweep.lua")));

/// Ends a stream deletion: removes the "deleting" marker if it still holds this deletion's
/// token (a later deletion of a re-created stream has its own).
///
/// KEYS: marker. ARGV: token. Returns 1 when removed, 0 if it held another token or none.
pub static FINISH_DELETE: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/finish_delete.lua")));

/// Creates a stream's settings, atomically, unless the stream exists or a deletion of the
/// same name has not finished its sweep (its marker is still there): then nothing is written.
///
/// KEYS: meta, marker. ARGV: created ms, then field/value pairs.
/// Returns 0 if the stream exists, 1 if a deletion is pending, 2 when created.
pub static CREATE_STREAM: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/create_stream.lua")));

/// Deletes a subscription, atomically: its consumer group on the stream (with its pending
/// entries), its membership, settings, dead letters, redrive stream (with its group), backoffs,
/// last errors and breaker. UNLINK, so a big dead-letter queue does not block Redis.
///
/// KEYS: meta, stream, subs set, then the subscription's keys (settings hash first). ARGV: name.
/// Returns 0 if the stream does not exist, 1 if nothing of the subscription was there, 2 when
/// something was deleted.
pub static DELETE_SUBSCRIPTION: LazyLock<Script> =
    LazyLock::new(|| with_prelude(include_str!("scripts/delete_subscription.lua")));

/// One chunk of a seek ([`SEEK`]): acks up to `count` pending entries of the group at or before
/// `upto` and forgets their last errors. Bounded work per call; the caller repeats it until a
/// chunk comes back short.
///
/// KEYS: stream, last-error hash. ARGV: group, upto id, count.
/// Returns `{acked, pending entries found}`.
pub static SEEK_ACK: LazyLock<Script> = LazyLock::new(|| with_prelude(include_str!("scripts/seek_ack.lua")));
