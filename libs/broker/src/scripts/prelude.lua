-- Helpers shared by every script (after the names generated from schema.rs).
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
-- dead letter), traceparent. `origin_field` names the origin (F_ORIGIN unless given: a dead
-- letter keeps it in D_ENTRY_ID).
local function entry_fields(f, id, origin_field)
  origin_field = origin_field or F_ORIGIN
  local payload, etype, origin, tp = '', '', id, ''
  for i = 1, #f, 2 do
    if f[i] == F_EVENT then payload = f[i + 1] elseif f[i] == F_TYPE then etype = f[i + 1]
    elseif f[i] == origin_field then origin = f[i + 1] elseif f[i] == F_TRACEPARENT then tp = f[i + 1] end
  end
  return payload, etype, origin, tp
end
-- Creates consumer group `group` on `key` (and the stream) at its start unless it exists.
-- Returns an error reply to pass on, or nil.
local function ensure_group(key, group)
  local r = redis.pcall('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
  if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP') then return redis.error_reply(r.err) end
  return nil
end
-- Parks pending entry `id` of `source` until `due` ms (Redis time): hands it to the parking
-- consumer `parked` with idle 0 (so no deadline expiry claims it) and lists it in the delay set
-- `delay`. Returns 0 if its data was gone (XCLAIM dropped it from the pending list), else 1.
local function park(source, delay, group, parked, id, due)
  local claimed = redis.call('XCLAIM', source, group, parked, 0, id, 'IDLE', 0, 'JUSTID')
  if #claimed == 0 then return 0 end
  redis.call('ZADD', delay, due, id)
  return 1
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
-- Settles pending entry `id` of `source` for `group`: XACK, XDEL for a redrive entry (`del`,
-- it exists for this one subscription only), and, when `forget`, deletes its last error from
-- `errors` (callers pass whether there can be one, sparing an HDEL per entry). Returns 1 if it
-- was pending, else 0.
local function settle(source, errors, group, id, del, forget)
  local n = redis.call('XACK', source, group, id)
  if n == 1 and del then redis.call('XDEL', source, id) end
  if forget then redis.call('HDEL', errors, error_field(del, id)) end
  return n
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
  settle(source, errors, group, id, del, last ~= false)
  if #e == 0 then return 2, '' end
  return 1, tp
end
