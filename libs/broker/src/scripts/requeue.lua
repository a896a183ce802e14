local r = redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP') then return redis.error_reply(r.err) end
local out = {}
for i = 2, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e == 0 then
    out[#out + 1] = 0
  else
    local f = e[1][2]
    local payload, etype, origin, tp = '', '', '', ''
    for j = 1, #f, 2 do
      if f[j] == F_EVENT then payload = f[j + 1] elseif f[j] == F_TYPE then etype = f[j + 1]
      elseif f[j] == D_ENTRY_ID then origin = f[j + 1] elseif f[j] == F_TRACEPARENT then tp = f[j + 1] end
    end
    redis.call('XADD', KEYS[2], '*', F_EVENT, payload, F_TYPE, etype, F_ORIGIN, origin, F_TRACEPARENT, tp)
    redis.call('XDEL', KEYS[1], ARGV[i])
    out[#out + 1] = 1
  end
end
return out
