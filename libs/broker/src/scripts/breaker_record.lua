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
