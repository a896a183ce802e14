local failed = ensure_group(KEYS[2], ARGV[1])
if failed then return failed end
local g = gate(ARGV[2], ARGV[1])
local out = {}
for i = 3, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e == 0 then
    out[#out + 1] = 0
  else
    local payload, etype, origin, tp, key = entry_fields(e[1][2], '', D_ENTRY_ID)
    local id
    if key == '' then
      id = redis.call('XADD', KEYS[2], '*', F_EVENT, payload, F_TYPE, etype, F_ORIGIN, origin, F_TRACEPARENT, tp)
    else
      id = redis.call('XADD', KEYS[2], '*', F_EVENT, payload, F_TYPE, etype, F_ORIGIN, origin, F_TRACEPARENT, tp,
        F_KEY, key)
      -- Back at the head of its key: the head now if the key is free, else first in line.
      if g then gate_admit(g, key, true, id, origin) end
    end
    redis.call('XDEL', KEYS[1], ARGV[i])
    out[#out + 1] = 1
  end
end
return out
