local failed = ensure_group(KEYS[2], ARGV[1])
if failed then return failed end
local out = {}
for i = 2, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e == 0 then
    out[#out + 1] = 0
  else
    local payload, etype, origin, tp = entry_fields(e[1][2], '', D_ENTRY_ID)
    redis.call('XADD', KEYS[2], '*', F_EVENT, payload, F_TYPE, etype, F_ORIGIN, origin, F_TRACEPARENT, tp)
    redis.call('XDEL', KEYS[1], ARGV[i])
    out[#out + 1] = 1
  end
end
return out
