local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not r or not r[1] or #r[1][2] == 0 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last > 0 then return {0, last[1][1]} end
  return {0, '0-0'}
end
local out, rest, budget, force = {}, {}, tonumber(ARGV[4]), ARGV[5] == '1'
local g, del = gate(ARGV[6], ARGV[1]), ARGV[7] == '1'
for _, e in ipairs(r[1][2]) do
  local payload, _, origin, _, key = entry_fields(e[2], e[1])
  if g and key ~= '' and not gate_admit(g, key, del, e[1], origin) then
    gate_hold(KEYS[1], ARGV[1], e[1])
  else
    local size = #payload
    if #rest == 0 and ((force and #out == 0) or size <= budget) then
      out[#out + 1] = e
      budget = budget - size
    else
      rest[#rest + 1] = e[1]
    end
  end
end
return {1, out, rest}
