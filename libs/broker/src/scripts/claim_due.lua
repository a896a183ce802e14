local group, me, parked, sname = ARGV[1], ARGV[2], ARGV[7], ARGV[6]
local deadline, room, max = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local del = ARGV[8] == '1'
local cap = tonumber(ARGV[9])
local g = gate(ARGV[10], group)
local now = now_ms()
local claimed, dead, expired = {}, {}, 0
local function backoff(count)
  return tonumber(ARGV[10 + count]) or tonumber(ARGV[#ARGV]) or 0
end
local function claim(id)
  local c = redis.call('XCLAIM', KEYS[1], group, me, 0, id)
  if #c == 0 or not c[1] then
    redis.call('HDEL', KEYS[4], error_field(del, id))
    count_vanished(KEYS[5], 1)
    if g then gate_release(g, error_field(del, id)) end
    return
  end
  local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  claimed[#claimed + 1] = {c[1][1], p[1][4], c[1][2]}
  room = room - 1
end
local function retire(id, owner, count)
  local r, tp = dead_letter(KEYS[1], KEYS[3], KEYS[4], KEYS[5], cap, group, id, owner, count, 'max delivery attempts',
    sname, del, g)
  if r == 1 then dead[#dead + 1] = {id, tp} end
end
-- An entry held behind its key's head whose hold outlived the ack deadline: held again while
-- it is listed as waiting; one the gate lost track of (a seek cleared the gate) goes through
-- the gate again, and is claimed if that admits it.
local function recheck(id)
  local e = redis.call('XRANGE', KEYS[1], id, id)
  if #e == 0 or not g then
    claim(id)
    return
  end
  local _, _, origin, _, key = entry_fields(e[1][2], id)
  if key ~= '' and (redis.call('ZSCORE', g.waiting, waiting_member(key, del, id, origin))
      or not gate_admit(g, key, del, id, origin)) then
    gate_hold(KEYS[1], group, id)
  elseif room > 0 then
    claim(id)
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, room)) do
  redis.call('ZREM', KEYS[2], id)
  local p = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  if #p > 0 then
    if p[1][4] >= max then retire(id, p[1][2], p[1][4]) else claim(id) end
  end
end
if room > 0 then
  for _, e in ipairs(redis.call('XPENDING', KEYS[1], group, 'IDLE', deadline, '-', '+', room)) do
    local id, owner, count = e[1], e[2], e[4]
    if redis.call('ZSCORE', KEYS[2], id) then
      redis.call('XCLAIM', KEYS[1], group, parked, 0, id, 'IDLE', 0, 'JUSTID')
    elseif owner == C_WAITING then
      recheck(id)
    else
      if owner ~= parked then expired = expired + 1 end
      if count >= max then
        retire(id, owner, count)
      else
        local b = 0
        if owner ~= parked then b = backoff(count) end
        if b > 0 then
          park(KEYS[1], KEYS[2], group, parked, id, now + b)
        elseif room > 0 then
          claim(id)
        end
      end
    end
  end
end
return {claimed, dead, expired}
