local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', ARGV[2], tonumber(ARGV[3]))
if #p == 0 then return {0, 0} end
local ids, fields = {}, {}
for i, e in ipairs(p) do
  ids[i] = e[1]
  fields[i] = error_field(false, e[1])
end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('HDEL', KEYS[2], unpack(fields))
return {acked, #p}
