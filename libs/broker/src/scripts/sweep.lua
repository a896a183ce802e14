if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if #KEYS == 1 then return 0 end
return redis.call('UNLINK', unpack(KEYS, 2))
