local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #p == 0 then return 0 end
if ARGV[3] ~= '' and p[1][2] ~= ARGV[3] then return 0 end
if tonumber(ARGV[4]) > 0 and p[1][4] ~= tonumber(ARGV[4]) then return 0 end
local r = dead_letter(KEYS[1], KEYS[2], KEYS[3], KEYS[4], tonumber(ARGV[8]), ARGV[1], ARGV[2], p[1][2], p[1][4],
  ARGV[5], ARGV[6], ARGV[7] == '1', gate(ARGV[9], ARGV[1]))
return r
