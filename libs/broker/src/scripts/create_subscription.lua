if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 1 end
redis.call('UNLINK', unpack(KEYS, 5))
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(r) == 'table' and r.err then
  if not string.find(r.err, 'BUSYGROUP') then return redis.error_reply(r.err) end
  -- A leftover group without settings (an interrupted delete): start it afresh.
  redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
end
local failed = ensure_group(KEYS[5], ARGV[1])
if failed then return failed end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('SADD', KEYS[4], ARGV[1])
return 2
