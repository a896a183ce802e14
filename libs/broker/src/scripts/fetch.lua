local out, budget, force, used = {}, tonumber(ARGV[1]), ARGV[2] == '1', 0
for i = 3, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #e > 0 then
    local size = #(entry_fields(e[1][2], e[1][1]))
    if size > budget and not (force and #out == 0) then break end
    out[#out + 1] = e[1]
    budget = budget - size
  end
  used = used + 1
end
return {out, used}
