if redis.call('EXISTS', KEYS[1]) == 0 then
  return {0, redis.call('GET', KEYS[2]) or ''}
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('UNLINK', KEYS[1])
for i = 3, #KEYS, 1000 do
  redis.call('UNLINK', unpack(KEYS, i, math.min(i + 999, #KEYS)))
end
return {1, ARGV[1]}
