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
