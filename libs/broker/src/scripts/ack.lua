local out = {}
local del, count_filtered = ARGV[2] == '1', ARGV[3] == '1'
local g = gate(ARGV[4], ARGV[1])
local acked = 0
local errors = redis.call('EXISTS', KEYS[2]) == 1
for i = 5, #ARGV do
  local n = settle(KEYS[1], KEYS[2], ARGV[1], ARGV[i], del, errors)
  if g then gate_release(g, error_field(del, ARGV[i])) end
  acked = acked + n
  out[#out + 1] = n
end
if count_filtered and acked > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], S_FILTERED, acked)
end
return out
