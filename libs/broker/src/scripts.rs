//! The Lua scripts that make multi-step changes atomic. Every script touches only keys of one
//! stream (one hash tag), so it also runs on Redis Cluster.

use std::sync::LazyLock;

use redis::Script;

/// Appends one event: stream check, dedup check, XADD with retention trim, dedup key with TTL.
///
/// KEYS: stream, meta, dedup key. ARGV: payload, event type.
/// Returns `{0}` if the stream does not exist, `{1, id}` when stored, `{2, id}` for a duplicate.
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local m = redis.call('HMGET', KEYS[2], 'created_ms', 'max_len', 'max_age_ms', 'dedup_ms')
if not m[1] then return {0} end
local dedup = tonumber(m[4]) or 0
if dedup > 0 then
  local prev = redis.call('GET', KEYS[3])
  if prev then return {2, prev} end
end
local max_len = tonumber(m[2]) or 0
local max_age = tonumber(m[3]) or 0
local id
if max_len > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', m[2], '*', 'e', ARGV[1], 't', ARGV[2])
else
  id = redis.call('XADD', KEYS[1], '*', 'e', ARGV[1], 't', ARGV[2])
end
if max_age > 0 then
  local t = redis.call('TIME')
  local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - max_age
  if min_ms > 0 then
    redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', min_ms))
  end
end
if dedup > 0 then redis.call('SET', KEYS[3], id, 'PX', dedup) end
return {1, id}
",
    )
});

/// Creates a subscription: its settings hash and its consumer group, positioned at ARGV[2].
///
/// KEYS: stream, meta, sub hash, subs set. ARGV: name, start id, then field/value pairs.
/// Returns 0 if the stream does not exist, 1 if the subscription exists, 2 when created.
pub static CREATE_SUBSCRIPTION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 1 end
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(r) == 'table' and r.err then
  if not string.find(r.err, 'BUSYGROUP') then return redis.error_reply(r.err) end
  redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2])
end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('SADD', KEYS[4], ARGV[1])
return 2
",
    )
});

/// Moves one pending entry to a dead-letter stream and acks it, if it is still the delivery the
/// caller means.
///
/// KEYS: stream, dlq. ARGV: group, entry id, owner ('' = any), attempt (0 = any),
/// min idle ms (0 = any), reason, stream name.
/// Returns 0 if the entry is not (or no longer) that pending delivery, 1 when dead-lettered,
/// 2 when its data was trimmed away (it is only acked).
pub static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
local owner, idle, count = p[1][2], p[1][3], p[1][4]
if ARGV[3] ~= '' and owner ~= ARGV[3] then return 0 end
if tonumber(ARGV[4]) > 0 and count ~= tonumber(ARGV[4]) then return 0 end
if idle < tonumber(ARGV[5]) then return 0 end
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if #e == 0 then return 2 end
local f = e[1][2]
local payload, etype = '', ''
for i = 1, #f, 2 do
  if f[i] == 'e' then payload = f[i + 1] elseif f[i] == 't' then etype = f[i + 1] end
end
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
redis.call('XADD', KEYS[2], '*', 'stream', ARGV[7], 'entry_id', ARGV[2], 'subscription', ARGV[1],
  'attempts', count, 'reason', ARGV[6], 'consumer', owner, 'time_ms', now, 'e', payload, 't', etype)
return 1
",
    )
});

/// Sets the idle time of one pending entry (nack, delay or lease extension), if it is still the
/// delivery the caller means; JUSTID keeps the delivery count.
///
/// KEYS: stream. ARGV: group, entry id, owner, attempt, new owner, idle ms.
/// Returns 0 if the delivery is over, 1 when modified.
pub static MODIFY_DEADLINE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] or p[1][4] ~= tonumber(ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[5], 0, ARGV[2], 'IDLE', ARGV[6], 'JUSTID')
return 1
",
    )
});

/// Releases a consumer: hands its pending entries to the parking consumer, due at once, and
/// deletes it. Bounded, so a pathological PEL cannot loop forever.
///
/// KEYS: stream. ARGV: group, consumer, parking consumer, idle ms.
/// Returns the number of entries released.
pub static RELEASE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local moved = 0
for _ = 1, 100 do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000, ARGV[2])
  if #p == 0 then break end
  local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0}
  for _, e in ipairs(p) do args[#args + 1] = e[1] end
  args[#args + 1] = 'IDLE'
  args[#args + 1] = ARGV[4]
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
  moved = moved + #p
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return moved
",
    )
});
