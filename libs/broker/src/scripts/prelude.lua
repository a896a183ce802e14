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
-- dead letter), traceparent, ordering key ('' if none). `origin_field` names the origin
-- (F_ORIGIN unless given: a dead letter keeps it in D_ENTRY_ID).
local function entry_fields(f, id, origin_field)
  origin_field = origin_field or F_ORIGIN
  local payload, etype, origin, tp, key = '', '', id, '', ''
  for i = 1, #f, 2 do
    if f[i] == F_EVENT then payload = f[i + 1] elseif f[i] == F_TYPE then etype = f[i + 1]
    elseif f[i] == origin_field then origin = f[i + 1] elseif f[i] == F_TRACEPARENT then tp = f[i + 1]
    elseif f[i] == F_KEY then key = f[i + 1] end
  end
  return payload, etype, origin, tp, key
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
-- the oldest go, counted in the subscription hash `sub` (`dlq_overflow`). The event's ordering
-- key (`key`, '' = none) is kept only when it has one.
local function add_dead_letter(dlq, sub, cap, stream_name, group, origin, attempts, reason, owner, payload, etype, tp,
                               key)
  local args = {'XADD', dlq, '*', D_STREAM, stream_name, D_ENTRY_ID, origin, D_SUBSCRIPTION, group,
    D_ATTEMPTS, attempts, D_REASON, reason, D_CONSUMER, owner, D_TIME_MS, string.format('%.0f', now_ms()),
    F_EVENT, payload, F_TYPE, etype, F_TRACEPARENT, tp}
  if key and key ~= '' then
    args[#args + 1] = F_KEY
    args[#args + 1] = key
  end
  redis.call(unpack(args))
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
-- Ordered subscriptions' per-key gate. One ordering key has at most one entry in flight, its
-- head; later entries of the key wait, held by the consumer C_WAITING (so no expiry claims
-- them) and listed in the waiting set in delivery order; when the head is settled (acked,
-- dead-lettered, or found gone) the next waiting entry becomes the head and is parked as due at
-- once, so the next CLAIM_DUE delivers it. Entries are named by references `s:<id>` (stream)
-- and `r:<id>` (redrive stream), the last-error field names. The heads hash maps `k:<key>` to
-- the key's head and the head back to its key. A waiting member is
-- `<key> NUL <rank><ms, 20 digits>-<seq, 20 digits>|<reference>`: rank 0 for requeued dead
-- letters (ordered by their original entry id, ahead of everything else of the key), 1 for
-- stream entries (by entry id); ZRANGEBYLEX on `[<key> NUL` .. `(<key> \1` finds a key's next.
-- The gate keys of an ordered subscription `group` (`base` = `<p>:{<s>}:`), or nil without a
-- gate (`base` = '').
local function gate(base, group)
  if base == '' then return nil end
  local redrive = base .. K_REDRIVE .. ':' .. group
  return {
    group = group,
    heads = base .. K_HEADS .. ':' .. group,
    waiting = base .. K_WAITING .. ':' .. group,
    blocked = base .. K_BLOCKED .. ':' .. group,
    sub = base .. K_SUB .. ':' .. group,
    stream = string.sub(base, 1, -2),
    delay = base .. K_DELAY .. ':' .. group,
    redrive = redrive,
    redrive_delay = redrive .. ':' .. K_DELAY,
  }
end
-- An entry id as 41 characters that sort like the id.
local function sort_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  ms, seq = ms or '0', seq or '0'
  return string.rep('0', 20 - #ms) .. ms .. '-' .. string.rep('0', 20 - #seq) .. seq
end
-- The waiting-set member of entry `id` (of the redrive stream when `del`; `origin` its
-- original entry id) with ordering key `key`.
local function waiting_member(key, del, id, origin)
  if del then return key .. '\0' .. '0' .. sort_id(origin) .. '|' .. E_REDRIVE .. id end
  return key .. '\0' .. '1' .. sort_id(id) .. '|' .. E_STREAM .. id
end
-- The publish time (ms) a waiting member of `key` sorts by.
local function member_ms(key, m)
  return tonumber(string.sub(m, #key + 3, #key + 22)) or 0
end
-- The next waiting member of `key`, or nil.
local function next_waiting(g, key)
  local m = redis.call('ZRANGEBYLEX', g.waiting, '[' .. key .. '\0', '(' .. key .. '\1', 'LIMIT', 0, 1)
  return m[1]
end
-- Holds pending entry `id` of `source` behind its key's head: owned by C_WAITING, idle 0, and
-- its delivery count reset (it was read, not delivered).
local function gate_hold(source, group, id)
  redis.call('XCLAIM', source, group, C_WAITING, 0, id, 'IDLE', 0, 'RETRYCOUNT', 0, 'JUSTID')
end
-- Whether entry `id` with ordering key `key` may be delivered now: when the key has no head
-- (the entry becomes it) or the entry is its head. Otherwise it is listed as waiting (the
-- caller holds it with `gate_hold` if it is pending).
local function gate_admit(g, key, del, id, origin)
  local ref = error_field(del, id)
  local head = redis.call('HGET', g.heads, G_KEY .. key)
  if not head then
    redis.call('HSET', g.heads, G_KEY .. key, ref, ref, key)
    return true
  end
  if head == ref then return true end
  local m = waiting_member(key, del, id, origin)
  redis.call('ZADD', g.waiting, 0, m)
  redis.call('ZADD', g.blocked, 'LT', member_ms(key, m), key)
  return false
end
-- Makes reference `ref`, its key's new head, deliverable: a pending entry is parked due at once
-- (the next CLAIM_DUE claims it); an unread requeued dead letter is delivered when read.
-- Returns true then; else 1 if its data is gone (XCLAIM drops such an entry from the pending
-- list), 0 if it was settled meanwhile (a stream entry is only ever gated once read).
local function gate_wake(g, ref, now)
  local del = string.sub(ref, 1, #E_REDRIVE) == E_REDRIVE
  local id = string.sub(ref, #E_STREAM + 1)
  local source, delay = g.stream, g.delay
  if del then source, delay = g.redrive, g.redrive_delay end
  if #redis.call('XCLAIM', source, g.group, C_PARKED, 0, id, 'IDLE', 0, 'JUSTID') > 0 then
    redis.call('ZADD', delay, now, id)
    return true
  end
  if #redis.call('XRANGE', source, id, id) == 0 then return 1 end
  if del then return true end
  return 0
end
-- Ends reference `ref`'s turn as its key's head (settled, dead-lettered or gone): the key's
-- next waiting entry becomes the head and is made due; the key is free when none waits. A
-- no-op when `ref` is no head.
local function gate_release(g, ref)
  local key = redis.call('HGET', g.heads, ref)
  if not key then return end
  redis.call('HDEL', g.heads, ref)
  local now = now_ms()
  while true do
    local m = next_waiting(g, key)
    if not m then
      redis.call('HDEL', g.heads, G_KEY .. key)
      redis.call('ZREM', g.blocked, key)
      return
    end
    redis.call('ZREM', g.waiting, m)
    local nref = string.match(m, '|([^|]+)$')
    redis.call('HSET', g.heads, G_KEY .. key, nref, nref, key)
    local woke = gate_wake(g, nref, now)
    if woke == true then
      local rest = next_waiting(g, key)
      if rest then redis.call('ZADD', g.blocked, member_ms(key, rest), key) else redis.call('ZREM', g.blocked, key) end
      return
    end
    redis.call('HDEL', g.heads, nref)
    count_vanished(g.sub, woke)
  end
end
-- Acks pending entry `id` of `source` and, unless its data is gone, appends it to `dlq`, with
-- the consumer's last nack reason (from `errors`) added to a max-attempts reason.
-- Redrive entries (`del`) are deleted once settled. With a gate `g` (ordered subscriptions)
-- the entry's key moves on (`gate_release`). Returns 1 when dead-lettered, 2 if its data was
-- gone (counted in `sub`), and the entry's traceparent.
-- The writes that need memory come first: when Redis is out of memory (a script without flags
-- runs until its first such write) it fails before the entry is acked, so nothing is lost.
local function dead_letter(source, dlq, errors, sub, cap, group, id, owner, count, reason, stream_name, del, g)
  local field = error_field(del, id)
  local last = redis.call('HGET', errors, field)
  if last and reason == 'max delivery attempts' then reason = reason .. '; last error: ' .. last end
  local e = redis.call('XRANGE', source, id, id)
  local tp = ''
  if #e > 0 then
    local payload, etype, origin, key
    payload, etype, origin, tp, key = entry_fields(e[1][2], id)
    add_dead_letter(dlq, sub, cap, stream_name, group, origin, count, reason, owner, payload, etype, tp, key)
  else
    count_vanished(sub, 1)
  end
  settle(source, errors, group, id, del, last ~= false)
  if g then gate_release(g, field) end
  if #e == 0 then return 2, '' end
  return 1, tp
end
