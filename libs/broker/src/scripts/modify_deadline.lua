local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 or p[1][2] ~= ARGV[3] or p[1][4] ~= tonumber(ARGV[4]) then return 0 end
local backoff = tonumber(ARGV[7])
local claimed
if backoff > 0 then
  claimed = park(KEYS[1], KEYS[2], ARGV[1], ARGV[5], ARGV[2], now_ms() + backoff)
else
  claimed = #redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[5], 0, ARGV[2], 'IDLE', ARGV[6], 'JUSTID')
end
if claimed == 0 then
  -- Its data was trimmed away: Redis dropped it from the pending list; its key moves on.
  redis.call('HDEL', KEYS[3], ARGV[8])
  local g = gate(ARGV[10], ARGV[1])
  if g then gate_release(g, ARGV[8]) end
  return 0
end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[3], ARGV[8], ARGV[9]) end
return 1
