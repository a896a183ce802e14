//! The Lua scripts that make multi-step changes atomic. Every script touches only keys of one
//! stream (one hash tag), so it also runs on Redis Cluster. Every script starts with
//! [`PRELUDE`]: the stored names of [`crate::schema`] as Lua locals, then shared helpers; a
//! script never spells a key segment or field name itself.

use std::sync::LazyLock;

use redis::Script;

use crate::schema;

/// Lua helpers shared by the scripts (prepended to every body, after the schema's names).
const HELPERS: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The field of an entry in the subscription's last-error hash (`r:` for redrive entries).
local function error_field(del, id)
  if del then return E_REDRIVE .. id end
  return E_STREAM .. id
end
-- Whether entry id `a` comes after entry id `b` (both `<ms>-<seq>`).
local function id_after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am) or 0, tonumber(as) or 0, tonumber(bm) or 0, tonumber(bs) or 0
  return am > bm or (am == bm and as > bs)
end
-- The fields of a stored entry: payload, type, origin entry id (`id` unless it is a requeued
-- dead letter), traceparent.
local function entry_fields(f, id)
  local payload, etype, origin, tp = '', '', id, ''
  for i = 1, #f, 2 do
    if f[i] == F_EVENT then payload = f[i + 1] elseif f[i] == F_TYPE then etype = f[i + 1]
    elseif f[i] == F_ORIGIN then origin = f[i + 1] elseif f[i] == F_TRACEPARENT then tp = f[i + 1] end
  end
  return payload, etype, origin, tp
end
-- Appends a dead letter to `dlq` and keeps that queue at most `cap` entries long (0 = no cap):
-- the oldest go, counted in the subscription hash `sub` (`dlq_overflow`).
local function add_dead_letter(dlq, sub, cap, stream_name, group, origin, attempts, reason, owner, payload, etype, tp)
  redis.call('XADD', dlq, '*', D_STREAM, stream_name, D_ENTRY_ID, origin, D_SUBSCRIPTION, group,
    D_ATTEMPTS, attempts, D_REASON, reason, D_CONSUMER, owner, D_TIME_MS, string.format('%.0f', now_ms()),
    F_EVENT, payload, F_TYPE, etype, F_TRACEPARENT, tp)
  if cap > 0 then
    local n = redis.call('XTRIM', dlq, 'MAXLEN', cap)
    if n > 0 and redis.call('EXISTS', sub) == 1 then redis.call('HINCRBY', sub, S_DLQ_OVERFLOW, n) end
  end
end
-- Counts an entry whose data vanished while it was pending (trimmed outside eventflow).
local function count_vanished(sub, n)
  if n > 0 and redis.call('EXISTS', sub) == 1 then redis.call('HINCRBY', sub, S_RETENTION_DROPPED, n) end
end
-- Acks pending entry `id` of `source` and, unless its data is gone, appends it to `dlq`, with
-- the consumer's last nack reason (from `errors`) added to a max-attempts reason.
-- Redrive entries (`del`) are deleted once settled. Returns 1 when dead-lettered, 2 if its data
-- was gone (counted in `sub`), and the entry's traceparent.
-- The writes that need memory come first: when Redis is out of memory (a script without flags
-- runs until its first such write) it fails before the entry is acked, so nothing is lost.
local function dead_letter(source, dlq, errors, sub, cap, group, id, owner, count, reason, stream_name, del)
  local field = error_field(del, id)
  local last = redis.call('HGET', errors, field)
  if last and reason == 'max delivery attempts' then reason = reason .. '; last error: ' .. last end
  local e = redis.call('XRANGE', source, id, id)
  local tp = ''
  if #e > 0 then
    local payload, etype, origin
    payload, etype, origin, tp = entry_fields(e[1][2], id)
    add_dead_letter(dlq, sub, cap, stream_name, group, origin, count, reason, owner, payload, etype, tp)
  else
    count_vanished(sub, 1)
  end
  redis.call('HDEL', errors, field)
  redis.call('XACK', source, group, id)
  if del then redis.call('XDEL', source, id) end
  if #e == 0 then return 2, '' end
  return 1, tp
end
";

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
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local m = redis.call('HMGET', KEYS[2], M_CREATED_MS, M_MAX_LEN, M_MAX_AGE_MS, M_DEDUP_MS)
if not m[1] then return {0} end
local dedup = tonumber(m[4]) or 0
-- Settings stored before windows were bounded: never past 7 days (a larger PX fails).
if dedup > 604800000 then dedup = 604800000 end
local out = {}
local stored = 0
local seen = {}
if dedup > 0 and #KEYS > 2 then seen = redis.call('MGET', unpack(KEYS, 3)) end
local fresh = {}
for i = 3, #KEYS do
  local prev = seen[i - 2] or fresh[KEYS[i]]
  if prev then
    out[#out + 1] = 2
    out[#out + 1] = prev
  else
    local a = (i - 3) * 3
    local id = redis.call('XADD', KEYS[1], '*', F_EVENT, ARGV[a + 1], F_TYPE, ARGV[a + 2], F_TRACEPARENT, ARGV[a + 3])
    if dedup > 0 then
      redis.call('SET', KEYS[i], id, 'PX', dedup)
      fresh[KEYS[i]] = id
    end
    out[#out + 1] = 1
    out[#out + 1] = id
    stored = stored + 1
  end
end
local trim = 0
local max_len = tonumber(m[2]) or 0
if stored > 0 and max_len > 0 then
  local slack = math.min(1000, math.max(1, math.floor(max_len / 64)))
  if redis.call('XLEN', KEYS[1]) > max_len + slack then trim = 1 end
end
out[#out + 1] = trim
return out
",
    )
});

/// Creates a subscription: its settings hash and its consumer group, positioned at the start id (`ARGV[2]`).
/// Whatever an earlier subscription of the same name left behind (its redrive stream, dead
/// letters, backoffs, last errors, breaker: written by a session that outlived a delete) is
/// unlinked first, so a new subscription never inherits any of it.
///
/// KEYS: stream, meta, sub hash, subs set, redrive stream, then dlq, delay set, redrive delay
/// set, last-error hash, breaker hash. ARGV: name, start id, then field/value pairs.
/// Returns 0 if the stream does not exist, 1 if the subscription exists, 2 when created.
pub static CREATE_SUBSCRIPTION: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 1 end
redis.call('UNLINK', unpack(KEYS, 5))
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(r) == 'table' and r.err then
  if not string.find(r.err, 'BUSYGROUP') then return redis.error_reply(r.err) end
  -- A leftover group without settings (an interrupted delete): start it afresh.
  redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
end
redis.call('XGROUP', 'CREATE', KEYS[5], ARGV[1], '0', 'MKSTREAM')
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('SADD', KEYS[4], ARGV[1])
return 2
",
    )
});

/// Dead-letters one pending entry if it is still the delivery the caller means.
///
/// KEYS: source stream, dlq, last-error hash, subscription hash. ARGV: group, entry id, owner
/// ('' = any), attempt (0 = any), reason, stream name, delete after settling ('1' for redrive
/// entries), dead-letter queue cap (0 = none).
/// Returns 0 if the entry is not (or no longer) that delivery, 1 when dead-lettered, 2 when
/// its data was gone (it is only acked, and counted).
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return 0 end
if tonumber(ARGV[4]) > 0 and p[1][4] ~= tonumber(ARGV[4]) then return 0 end
local r = dead_letter(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[8]), ARGV[1], ARGV[2], p[1][2], p[1][4],
  ARGV[5], ARGV[6], ARGV[7] == '1')
return r
",
    )
});

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
pub static MODIFY_DEADLINE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] or p[1][4] ~= tonumber(ARGV[4]) then return 0 end
local backoff = tonumber(ARGV[7])
local idle = ARGV[6]
if backoff > 0 then idle = 0 end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[5], 0, ARGV[2], 'IDLE', idle, 'JUSTID')
if #claimed == 0 then
  -- Its data was trimmed away: Redis dropped it from the pending list.
  redis.call('HDEL', KEYS[3], ARGV[8])
  return 0
end
if backoff > 0 then redis.call('ZADD', KEYS[2], now_ms() + backoff, ARGV[2]) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[3], ARGV[8], ARGV[9]) end
return 1
",
    )
});

/// Releases a consumer, one chunk per call (callers repeat until it is done, so no call grows
/// with the consumer's pending list): hands up to 1000 of its pending entries to the parking
/// consumer, due at once, and deletes the consumer once it holds nothing.
///
/// KEYS: stream. ARGV: group, consumer, parking consumer, idle ms.
/// Returns `{entries released, 1 when the consumer is deleted (done) else 0}`.
pub static RELEASE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
if #p == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
  return {0, 1}
end
local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0}
for _, e in ipairs(p) do args[#args + 1] = e[1] end
args[#args + 1] = 'IDLE'
args[#args + 1] = ARGV[4]
args[#args + 1] = 'JUSTID'
redis.call(unpack(args))
return {#p, 0}
",
    )
});

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
pub static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local group, me, parked, sname = ARGV[1], ARGV[2], ARGV[7], ARGV[6]
local deadline, room, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local del = ARGV[8] == '1'
local cap = tonumber(ARGV[9])
local now = now_ms()
local claimed, dead, expired = {}, {}, 0
local function backoff(count)
  return tonumber(ARGV[9 + count]) or tonumber(ARGV[#ARGV]) or 0
end
local function claim(id)
  local c = redis.call('XCLAIM', KEYS[1], group, me, 0, id)
  if #c == 0 or not c[1] then
    redis.call('HDEL', KEYS[4], error_field(del, id))
    count_vanished(KEYS[5], 1)
    return
  end
  local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  claimed[#claimed + 1] = {c[1][1], p[1][4], c[1][2]}
  room = room - 1
end
local function retire(id, owner, count)
  local r, tp = dead_letter(KEYS[1], KEYS[3], KEYS[4], KEYS[5], cap, group, id, owner, count, 'max delivery attempts',
    sname, del)
  if r == 1 then dead[#dead + 1] = {id, tp} end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, room)) do
  redis.call('ZREM', KEYS[2], id)
  local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if #p > 0 then
    if p[1][4] >= max then retire(id, p[1][2], p[1][4]) else claim(id) end
  end
end
if room > 0 then
  for _, e in ipairs(redis.call('XPENDING', KEYS[1], group, 'IDLE', deadline, '-', '+', room)) do
    local id, owner, count = e[1], e[2], e[4]
    if redis.call('ZSCORE', KEYS[2], id) then
      redis.call('XCLAIM', KEYS[1], group, parked, 0, id, 'IDLE', 0, 'JUSTID')
    else
      if owner ~= parked then expired = expired + 1 end
      if count >= max then
        retire(id, owner, count)
      else
        local b = 0
        if owner ~= parked then b = backoff(count) end
        if b > 0 then
          redis.call('ZADD', KEYS[2], now + b, id)
          redis.call('XCLAIM', KEYS[1], group, parked, 0, id, 'IDLE', 0, 'JUSTID')
        elseif room > 0 then
          claim(id)
        end
      end
    end
  end
end
return {claimed, dead, expired}
",
    )
});

/// Moves a subscription's read position and clears its retry backoffs on the stream (everything
/// after the position is delivered again anyway; the redrive stream is not affected) — one short
/// atomic step. The pending entries at or before the position are acked afterwards, in bounded
/// chunks ([`SEEK_ACK`]), so a seek over a million pending entries never blocks Redis.
///
/// KEYS: stream, delay set. ARGV: group, new last-delivered id ('$' = the end).
/// Returns the position as an entry id ('$' resolved to the stream's last id), up to which
/// pending entries are to be acked.
pub static SEEK: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2])
redis.call('UNLINK', KEYS[2])
if ARGV[2] ~= '$' then return ARGV[2] end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return redis.error_reply('XINFO STREAM without last-generated-id')
",
    )
});

/// Requeues dead letters into their subscription's redrive stream (and only there), keeping
/// the event bytes (with their trace context) and the original entry id.
///
/// KEYS: dlq, redrive stream. ARGV: group, then dead-letter ids.
/// Returns one 1 (requeued) or 0 (not found) per id.
pub static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local r = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP') then return redis.error_reply(r.err) end
local out = {}
for i = 2, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e == 0 then
    out[#out + 1] = 0
  else
    local f = e[1][2]
    local payload, etype, origin, tp = '', '', '', ''
    for j = 1, #f, 2 do
      if f[j] == F_EVENT then payload = f[j + 1] elseif f[j] == F_TYPE then etype = f[j + 1]
      elseif f[j] == D_ENTRY_ID then origin = f[j + 1] elseif f[j] == F_TRACEPARENT then tp = f[j + 1] end
    end
    redis.call('XADD', KEYS[2], '*', F_EVENT, payload, F_TYPE, etype, F_ORIGIN, origin, F_TRACEPARENT, tp)
    redis.call('XDEL', KEYS[1], ARGV[i])
    out[#out + 1] = 1
  end
end
return out
",
    )
});

/// Asks a subscription's circuit breaker how many deliveries it allows now, moving it from
/// open to half-open when the open time is over (and refilling half-open probes that were
/// handed out but never settled within `open ms`).
///
/// KEYS: breaker hash. ARGV: wanted, half-open probes, open ms.
/// Returns `{allowed, state ('c'|'o'|'h'), ms until open ends}`.
pub static BREAKER_ALLOW: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local now = now_ms()
local want = tonumber(ARGV[1])
local st = redis.call('HGET', KEYS[1], B_STATE) or B_CLOSED
if st == B_OPEN then
  local untl = tonumber(redis.call('HGET', KEYS[1], B_UNTIL) or '0')
  if now < untl then return {0, B_OPEN, untl - now} end
  redis.call('HSET', KEYS[1], B_STATE, B_HALF_OPEN, B_PROBES, ARGV[2], B_PROBE_OK, 0, B_SINCE, now)
  st = B_HALF_OPEN
end
if st == B_HALF_OPEN then
  local left = tonumber(redis.call('HGET', KEYS[1], B_PROBES) or '0')
  local since = tonumber(redis.call('HGET', KEYS[1], B_SINCE) or '0')
  if left <= 0 and now - since > tonumber(ARGV[3]) then
    left = tonumber(ARGV[2])
    redis.call('HSET', KEYS[1], B_SINCE, now)
  end
  local n = math.min(want, left)
  redis.call('HSET', KEYS[1], B_PROBES, left - n)
  return {n, B_HALF_OPEN, 0}
end
return {want, B_CLOSED, 0}
",
    )
});

/// Records delivery outcomes in a subscription's circuit breaker and moves its state:
/// closed -> open when the window's failure share reaches the ratio (with enough outcomes);
/// half-open -> open on any failure, -> closed when `probes` successes arrived.
///
/// KEYS: breaker hash. ARGV: successes, failures, window s, minimum requests, failure ratio,
/// open ms, probes. Returns the state after recording ('c'|'o'|'h').
pub static BREAKER_RECORD: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local ok, bad = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local st = redis.call('HGET', KEYS[1], B_STATE) or B_CLOSED
local function clear_window()
  local all = redis.call('HKEYS', KEYS[1])
  for _, k in ipairs(all) do
    local kind = string.sub(k, 1, 2)
    if kind == B_SUCCESSES or kind == B_FAILURES then redis.call('HDEL', KEYS[1], k) end
  end
end
local function open()
  clear_window()
  redis.call('HSET', KEYS[1], B_STATE, B_OPEN, B_UNTIL, now + tonumber(ARGV[6]), B_OPENED, now)
  redis.call('HINCRBY', KEYS[1], B_OPENS, 1)
  return B_OPEN
end
if st == B_OPEN then return B_OPEN end
if st == B_HALF_OPEN then
  if bad > 0 then return open() end
  if redis.call('HINCRBY', KEYS[1], B_PROBE_OK, ok) >= tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[1], B_STATE, B_CLOSED)
    return B_CLOSED
  end
  return B_HALF_OPEN
end
local sec = math.floor(now / 1000)
if ok > 0 then redis.call('HINCRBY', KEYS[1], B_SUCCESSES .. sec, ok) end
if bad > 0 then redis.call('HINCRBY', KEYS[1], B_FAILURES .. sec, bad) end
local from = sec - tonumber(ARGV[3]) + 1
local total, fails = 0, 0
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  local kind, at = string.sub(h[i], 1, 2), tonumber(string.sub(h[i], 3))
  if (kind == B_SUCCESSES or kind == B_FAILURES) and at then
    if at < from then
      redis.call('HDEL', KEYS[1], h[i])
    else
      total = total + tonumber(h[i + 1])
      if kind == B_FAILURES then fails = fails + tonumber(h[i + 1]) end
    end
  end
end
if total >= tonumber(ARGV[4]) and total > 0 and fails / total >= tonumber(ARGV[5]) then return open() end
redis.call('HSET', KEYS[1], B_STATE, B_CLOSED)
return B_CLOSED
",
    )
});

/// Sets fields of a settings hash only if it exists (an update must not resurrect a deleted
/// stream or subscription).
///
/// KEYS: hash. ARGV: field/value pairs. Returns 0 if the hash does not exist, 1 when updated.
pub static UPDATE_HASH: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
",
    )
});

/// Acknowledges entries of one source, one reply per id (1 acked, 0 not pending); redrive
/// entries are deleted once acked; their last errors are forgotten.
///
/// KEYS: source stream, last-error hash. ARGV: group, delete ('1' for redrive), then entry ids.
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local out = {}
local del = ARGV[2] == '1'
local errors = redis.call('EXISTS', KEYS[2]) == 1
for i = 3, #ARGV do
  local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  if n == 1 and del then redis.call('XDEL', KEYS[1], ARGV[i]) end
  if errors then redis.call('HDEL', KEYS[2], error_field(del, ARGV[i])) end
  out[#out + 1] = n
end
return out
",
    )
});

/// Deletes consumers of a group that hold nothing and have been idle longer than `idle ms`:
/// sessions of crashed replicas, or closed while Redis was unreachable. Only session consumers
/// (`c-...`); the 0-pending check is here because DELCONSUMER drops a consumer's pending list.
///
/// KEYS: stream. ARGV: group, idle ms. Returns the number deleted.
pub static REAP_CONSUMERS: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
local reaped = 0
for _, c in ipairs(consumers) do
  local info = {}
  for i = 1, #c, 2 do info[c[i]] = c[i + 1] end
  if info['pending'] == 0 and info['idle'] > tonumber(ARGV[2]) and string.sub(info['name'], 1, #C_SESSION) == C_SESSION then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    reaped = reaped + 1
  end
end
return reaped
",
    )
});

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
pub(crate) const TRIM_SOURCE: &str = r"
local m = redis.call('HMGET', KEYS[2], M_CREATED_MS, M_MAX_LEN, M_MAX_AGE_MS, M_DROP_UNSETTLED)
if not m[1] or redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0, 0} end
local max_len, max_age, drop = tonumber(m[2]) or 0, tonumber(m[3]) or 0, m[4] == '1'
local base, chunk, cap, sname = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local rows = {}
if max_len > 0 then
  local over = redis.call('XLEN', KEYS[1]) - max_len
  if over > 0 then rows = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(over, chunk)) end
end
if max_age > 0 and #rows < chunk then
  local cutoff = now_ms() - max_age
  if cutoff > 0 then
    local from = '-'
    if #rows > 0 then from = '(' .. rows[#rows][1] end
    local upto = '(' .. string.format('%.0f', cutoff) .. '-0'
    for _, r in ipairs(redis.call('XRANGE', KEYS[1], from, upto, 'COUNT', chunk - #rows)) do rows[#rows + 1] = r end
  end
end
if #rows == 0 then return {0, 0, 0, 0} end
local last = rows[#rows][1]
local dead, dropped = 0, 0
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local group = info['name']
  local sub = base .. K_SUB .. ':' .. group
  if redis.call('EXISTS', sub) == 1 then
    local pending = {}
    if info['pending'] > 0 then
      for _, p in ipairs(redis.call('XPENDING', KEYS[1], group, '-', last, #rows + 100)) do pending[p[1]] = p end
    end
    local errors = base .. K_ERRORS .. ':' .. group
    local delay = base .. K_DELAY .. ':' .. group
    local dlq = base .. K_DLQ .. ':' .. group
    local acks, g_dead, g_dropped = {}, 0, 0
    for _, r in ipairs(rows) do
      local id = r[1]
      local p = pending[id]
      if p or id_after(id, info['last-delivered-id']) then
        pending[id] = nil
        if p then acks[#acks + 1] = id end
        local field = error_field(false, id)
        local last_error = redis.call('HGET', errors, field)
        if last_error then redis.call('HDEL', errors, field) end
        redis.call('ZREM', delay, id)
        if drop then
          g_dropped = g_dropped + 1
        else
          local reason = 'retention'
          if last_error then reason = reason .. '; last error: ' .. last_error end
          local payload, etype, origin, tp = entry_fields(r[2], id)
          local attempts, owner = 0, ''
          if p then attempts, owner = p[4], p[2] end
          add_dead_letter(dlq, sub, cap, sname, group, origin, attempts, reason, owner, payload, etype, tp)
          g_dead = g_dead + 1
        end
      end
    end
    -- Pending entries at or before the cut whose data was already gone.
    for id, _ in pairs(pending) do
      acks[#acks + 1] = id
      g_dropped = g_dropped + 1
      redis.call('HDEL', errors, error_field(false, id))
    end
    if #acks > 0 then redis.call('XACK', KEYS[1], group, unpack(acks)) end
    if g_dead > 0 then redis.call('HINCRBY', sub, S_RETENTION_DEAD_LETTERED, g_dead) end
    if g_dropped > 0 then redis.call('HINCRBY', sub, S_RETENTION_DROPPED, g_dropped) end
    dead, dropped = dead + g_dead, dropped + g_dropped
  end
end
local ms, seq = string.match(last, '^(%d+)-(%d+)$')
redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
local more = 0
if #rows >= chunk then more = 1 end
return {#rows, dead, dropped, more}
";

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
pub static READ_NEW: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not r or not r[1] or #r[1][2] == 0 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then return {0, last[1][1]} end
  return {0, '0-0'}
end
local out, rest, budget, force = {}, {}, tonumber(ARGV[4]), ARGV[5] == '1'
for _, e in ipairs(r[1][2]) do
  local size = #(entry_fields(e[2], e[1]))
  if #rest == 0 and ((force and #out == 0) or size <= budget) then
    out[#out + 1] = e
    budget = budget - size
  else
    rest[#rest + 1] = e[1]
  end
end
return {1, out, rest}
",
    )
});

/// Fetches entries a session read but did not take yet ([`READ_NEW`]'s rest), bounded by bytes
/// like it: entries while their payloads fit in `budget` (the first always when `force`).
/// Entries no longer there (trimmed) are skipped.
///
/// KEYS: source stream. ARGV: budget, force ('1' or '0'), then entry ids in order.
/// Returns `{{{id, {field, value, ...}}...}, ids consumed}` (taken or skipped, from the front).
pub static FETCH: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local out, budget, force, used = {}, tonumber(ARGV[1]), ARGV[2] == '1', 0
for i = 3, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e > 0 then
    local size = #(entry_fields(e[1][2], e[1][1]))
    if size > budget and not (force and #out == 0) then break end
    out[#out + 1] = e[1]
    budget = budget - size
  end
  used = used + 1
end
return {out, used}
",
    )
});

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
pub static DELETE_STREAM: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, redis.call('GET', KEYS[2]) or ''}
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('UNLINK', KEYS[1])
for i = 3, #KEYS, 1000 do
  redis.call('UNLINK', unpack(KEYS, i, math.min(i + 999, #KEYS)))
end
return {1, ARGV[1]}
",
    )
});

/// One batch of the sweep after [`DELETE_STREAM`]: unlinks leftover keys of the deleted stream
/// (its `{<stream>}` keys found by SCAN), but only while the "deleting" marker is there —
/// without it the name may belong to a new stream whose keys must stay.
///
/// KEYS: marker, then the keys to unlink (never the marker). Returns -1 if the marker is gone,
/// else the number of keys unlinked.
pub static SWEEP: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if #KEYS == 1 then return 0 end
return redis.call('UNLINK', unpack(KEYS, 2))
",
    )
});

/// Ends a stream deletion: removes the "deleting" marker if it still holds this deletion's
/// token (a later deletion of a re-created stream has its own).
///
/// KEYS: marker. ARGV: token. Returns 1 when removed, 0 if it held another token or none.
pub static FINISH_DELETE: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
",
    )
});

/// Creates a stream's settings, atomically, unless the stream exists or a deletion of the
/// same name has not finished its sweep (its marker is still there): then nothing is written.
///
/// KEYS: meta, marker. ARGV: created ms, then field/value pairs.
/// Returns 0 if the stream exists, 1 if a deletion is pending, 2 when created.
pub static CREATE_STREAM: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('HSET', KEYS[1], M_CREATED_MS, unpack(ARGV))
return 2
",
    )
});

/// Deletes a subscription, atomically: its consumer group on the stream (with its pending
/// entries), its membership, settings, dead letters, redrive stream (with its group), backoffs,
/// last errors and breaker. UNLINK, so a big dead-letter queue does not block Redis.
///
/// KEYS: meta, stream, subs set, then the subscription's keys (settings hash first). ARGV: name.
/// Returns 0 if the stream does not exist, 1 if nothing of the subscription was there, 2 when
/// something was deleted.
pub static DELETE_SUBSCRIPTION: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local found = redis.call('SREM', KEYS[3], ARGV[1])
local destroyed = redis.pcall('XGROUP', 'DESTROY', KEYS[2], ARGV[1])
if type(destroyed) == 'number' then found = found + destroyed end
found = found + redis.call('UNLINK', unpack(KEYS, 4))
if found > 0 then return 2 end
return 1
",
    )
});

/// One chunk of a seek ([`SEEK`]): acks up to `count` pending entries of the group at or before
/// `upto` and forgets their last errors. Bounded work per call; the caller repeats it until a
/// chunk comes back short.
///
/// KEYS: stream, last-error hash. ARGV: group, upto id, count.
/// Returns `{acked, pending entries found}`.
pub static SEEK_ACK: LazyLock<Script> = LazyLock::new(|| {
    with_prelude(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', ARGV[2], tonumber(ARGV[3]))
if #p == 0 then return {0, 0} end
local ids, fields = {}, {}
for i, e in ipairs(p) do
  ids[i] = e[1]
  fields[i] = error_field(false, e[1])
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('HDEL', KEYS[2], unpack(fields))
return {acked, #p}
",
    )
});
