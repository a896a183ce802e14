local m = redis.call('HMGET', KEYS[2], M_CREATED_MS, M_MAX_LEN, M_MAX_AGE_MS, M_DEDUP_MS, M_SIZE_MARK,
  M_DEDUP_BUCKET, M_DEDUP_OLD, M_DEDUP_LEGACY_UNTIL)
if not m[1] then return {0} end
local dedup = tonumber(m[4]) or 0
-- Settings stored before windows were bounded: never past 7 days (a larger PX fails).
if dedup > 604800000 then dedup = 604800000 end
local n = #ARGV / 5
local ids = {}
for i = 1, n do ids[i] = ARGV[(i - 1) * 5 + 1] end
-- Dedup ids live in hashes `<stream key>:dedup_ids:<width>:<index>` (index = floor(ms / width)).
local base = KEYS[1] .. ':' .. K_DEDUP_IDS .. ':'
local now = 0
-- seen[i]: the entry id of an earlier publish of ids[i] within its window.
local seen = {}
local meta = {}
-- Looks the ids up in the two buckets `width` wide that can hold ids of the last `width` ms;
-- an id counts only if its entry (the first publish) is younger than the window.
local function consult(width)
  local c = math.floor(now / width)
  for b = c, c - 1, -1 do
    local got = redis.call('HMGET', base .. width .. ':' .. b, unpack(ids))
    for i = 1, n do
      local v = got[i]
      if v and not seen[i] and now - tonumber(string.match(v, '^%d+')) < width then seen[i] = v end
    end
  end
end
-- `<width>:<index>` of a bucket name.
local function split(mark)
  local w, i = string.match(mark, '^(%d+):(%-?%d+)$')
  return tonumber(w), tonumber(i)
end
if dedup > 0 and n > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  consult(dedup)
  -- Buckets of earlier windows (UpdateStream changed the width): consulted until their ids
  -- are older than their window, then unlinked.
  local old = {}
  for mark in string.gmatch(m[7] or '', '%S+') do old[#old + 1] = mark end
  if m[6] then
    local w = split(m[6])
    if w ~= dedup then
      local known = false
      for _, mark in ipairs(old) do known = known or mark == m[6] end
      if not known then old[#old + 1] = m[6] end
    end
  end
  local kept = {}
  for _, mark in ipairs(old) do
    local w, i = split(mark)
    if now < (i + 2) * w then
      kept[#kept + 1] = mark
      consult(w)
    else
      redis.call('UNLINK', base .. mark, base .. w .. ':' .. (i - 1))
    end
  end
  kept = table.concat(kept, ' ')
  if kept ~= (m[7] or '') then
    meta[#meta + 1] = M_DEDUP_OLD
    meta[#meta + 1] = kept
  end
  -- A stream of layout 1 (no such field): its per-event keys are consulted for one window.
  local v1 = tonumber(m[8])
  if not v1 then
    v1 = now + dedup
    meta[#meta + 1] = M_DEDUP_LEGACY_UNTIL
    meta[#meta + 1] = v1
  end
  if now < v1 then
    local keys, at = {}, {}
    for i = 1, n do
      if not seen[i] then
        keys[#keys + 1] = KEYS[1] .. ':' .. K_DEDUP .. ':' .. ids[i]
        at[#at + 1] = i
      end
    end
    if #keys > 0 then
      local got = redis.call('MGET', unpack(keys))
      for j = 1, #keys do
        if got[j] then seen[at[j]] = got[j] end
      end
    end
  end
end
local out = {}
local stored = 0
local largest = 0
local fresh = {}
local new = {}
for i = 1, n do
  local prev = seen[i] or fresh[ids[i]]
  if prev then
    out[#out + 1] = '=' .. prev
  else
    local a = (i - 1) * 5
    -- Traceparent and ordering key are stored only when the event has them: each field costs
    -- Lua-to-Redis argument conversions per XADD, and readers take an absent one as none.
    local id
    local tp, key = ARGV[a + 4], ARGV[a + 5]
    if tp == '' and key == '' then
      id = redis.call('XADD', KEYS[1], '*', F_EVENT, ARGV[a + 2], F_TYPE, ARGV[a + 3])
    elseif key == '' then
      id = redis.call('XADD', KEYS[1], '*', F_EVENT, ARGV[a + 2], F_TYPE, ARGV[a + 3], F_TRACEPARENT, tp)
    elseif tp == '' then
      id = redis.call('XADD', KEYS[1], '*', F_EVENT, ARGV[a + 2], F_TYPE, ARGV[a + 3], F_KEY, key)
    else
      id = redis.call('XADD', KEYS[1], '*', F_EVENT, ARGV[a + 2], F_TYPE, ARGV[a + 3], F_TRACEPARENT, tp, F_KEY, key)
    end
    if dedup > 0 then
      fresh[ids[i]] = id
      new[#new + 1] = ids[i]
      new[#new + 1] = id
    end
    out[#out + 1] = id
    stored = stored + 1
    if #ARGV[a + 2] > largest then largest = #ARGV[a + 2] end
  end
end
if #new > 0 then
  local c = math.floor(now / dedup)
  local mark = dedup .. ':' .. c
  redis.call('HSET', base .. mark, unpack(new))
  if m[6] ~= mark then
    -- The first write into this bucket: it is consulted until the end of the next one (plus a
    -- margin, so the UNLINK below normally removes it before it expires). The bucket before
    -- the previous one can no longer be consulted: unlinked (freed off Redis's main thread),
    -- and so is the last bucket written if it is older still.
    redis.call('PEXPIREAT', base .. mark, (c + 2) * dedup + math.min(dedup, 60000))
    local doomed = {base .. dedup .. ':' .. (c - 2)}
    if m[6] then
      local w, i = split(m[6])
      if w == dedup and i < c - 2 then doomed[2] = base .. m[6] end
    end
    redis.call('UNLINK', unpack(doomed))
    meta[#meta + 1] = M_DEDUP_BUCKET
    meta[#meta + 1] = mark
  end
end
-- The size mark only grows, in the same script as the XADDs: no entry is ever larger than it.
if stored > 0 and largest > (tonumber(m[5]) or 0) then
  meta[#meta + 1] = M_SIZE_MARK
  meta[#meta + 1] = largest
end
if #meta > 0 then redis.call('HSET', KEYS[2], unpack(meta)) end
local trim = 0
local max_len = tonumber(m[2]) or 0
if stored > 0 and max_len > 0 then
  local slack = math.min(1000, math.max(1, math.floor(max_len / 64)))
  if redis.call('XLEN', KEYS[1]) > max_len + slack then trim = 1 end
end
-- One string for all events: a reply of one value instead of two per event.
return {table.concat(out, ' '), trim}
