redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2])
redis.call('UNLINK', unpack(KEYS, 2))
if ARGV[2] ~= '$' then return ARGV[2] end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return redis.error_reply('XINFO STREAM without last-generated-id')
