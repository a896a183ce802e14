if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local failed = ensure_group(KEYS[2], ARGV[1])
if failed then return failed end
local added = 0
for i = 2, #ARGV, 4 do
  redis.call('XADD', KEYS[2], '*', F_EVENT, ARGV[i], F_TYPE, ARGV[i + 1], F_ORIGIN, ARGV[i + 2], F_TRACEPARENT, ARGV[i + 3])
  added = added + 1
end
return added
