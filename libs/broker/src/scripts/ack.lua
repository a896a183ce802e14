local out = {}
local del = ARGV[2] == '1'
local errors = redis.call('EXISTS', KEYS[2]) == 1
for i = 3, #ARGV do
  local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  if n == 1 and del then redis.call('XDEL', KEYS[1], ARGV[i]) end
  if errors then redis.call('HDEL', KEYS[2], error_field(del, ARGV[i])) end
  out[#out + 1] = n
end
return out
