if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local found = redis.call('SREM', KEYS[3], ARGV[1])
local destroyed = redis.pcall('XGROUP', 'DESTROY', KEYS[2], ARGV[1])
if type(destroyed) == 'number' then found = found + destroyed end
found = found + redis.call('UNLINK', unpack(KEYS, 4))
if found > 0 then return 2 end
return 1
