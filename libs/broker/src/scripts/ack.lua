local out = {}
local del, count_filtered = ARGV[2] == '1', ARGV[3] == '1'
local g = gate(ARGV[4], ARGV[1])
local acked = 0
local errors = redis.call('EXISTS', KEYS[2]) == 1
local source, group = KEYS[1], ARGV[1]
if g or del or errors then
  for i = 5, #ARGV do
    local n = settle(source, KEYS[2], group, ARGV[i], del, errors)
    if g then gate_release(g, error_field(del, ARGV[i])) end
    acked = acked + n
    out[i - 4] = n
  end
else
  -- The usual case (no gate, no redrive entry, no last error kept): settle is a bare XACK.
  for i = 5, #ARGV do
    local n = redis.call('XACK', source, group, ARGV[i])
    acked = acked + n
    out[i - 4] = n
  end
end
if count_filtered and acked > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HINCRBY', KEYS[3], S_FILTERED, acked)
end
-- All acked (the usual case): the count alone, sparing a reply value per id.
if acked == #ARGV - 4 then return acked end
return out
