local out = {}
local del, count_filtered = ARGV[2] == '1', ARGV[3] == '1'
local acked = 0
local errors = redis.call('EXISTS', KEYS[2]) == 1
for i = 4, #ARGV do
  local n = settle(KEYS[1], KEYS[2], ARGV[1], ARGV[i], del, errors)
  acked = acked + n
  out[#out + 1] = n
end
if count_filtered and acked > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], S_FILTERED, acked)
end
return out
