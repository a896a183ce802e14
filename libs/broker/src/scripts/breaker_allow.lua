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
