local m = redis.call('HMGET', KEYS[2], M_CREATED_MS, M_MAX_LEN, M_MAX_AGE_MS, M_DEDUP_MS, M_SIZE_MARK)
if not m[1] then return {0} end
local dedup = tonumber(m[4]) or 0
-- Settings stored before windows were bounded: never past 7 days (a larger PX fails).
if dedup > 604800000 then dedup = 604800000 end
local out = {}
local stored = 0
local largest = 0
local seen = {}
if dedup > 0 and #KEYS > 2 then seen = redis.call('MGET', unpack(KEYS, 3)) end
local fresh = {}
for i = 3, #KEYS do
  local prev = seen[i - 2] or fresh[KEYS[i]]
  if prev then
    out[#out + 1] = '=' .. prev
  else
    local a = (i - 3) * 4
    local id
    if ARGV[a + 4] == '' then
      id = redis.call('XADD', KEYS[1], '*', F_EVENT, ARGV[a + 1], F_TYPE, ARGV[a + 2], F_TRACEPARENT, ARGV[a + 3])
    else
      id = redis.call('XADD', KEYS[1], '*', F_EVENT, ARGV[a + 1], F_TYPE, ARGV[a + 2], F_TRACEPARENT, ARGV[a + 3],
        F_KEY, ARGV[a + 4])
    end
    if dedup > 0 then
      redis.call('SET', KEYS[i], id, 'PX', dedup)
      fresh[KEYS[i]] = id
    end
    out[#out + 1] = id
    stored = stored + 1
    if #ARGV[a + 1] > largest then largest = #ARGV[a + 1] end
  end
end
-- The size mark only grows, in the same script as the XADDs: no entry is ever larger than it.
if stored > 0 and largest > (tonumber(m[5]) or 0) then redis.call('HSET', KEYS[2], M_SIZE_MARK, largest) end
local trim = 0
local max_len = tonumber(m[2]) or 0
if stored > 0 and max_len > 0 then
  local slack = math.min(1000, math.max(1, math.floor(max_len / 64)))
  if redis.call('XLEN', KEYS[1]) > max_len + slack then trim = 1 end
end
-- One string for all events: a reply of one value instead of two per event.
return {table.concat(out, ' '), trim}
