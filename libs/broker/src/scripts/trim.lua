local m = redis.call('HMGET', KEYS[2], M_CREATED_MS, M_MAX_LEN, M_MAX_AGE_MS, M_DROP_UNSETTLED)
if not m[1] or redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0, 0, 0} end
local max_len, max_age, drop = tonumber(m[2]) or 0, tonumber(m[3]) or 0, m[4] == '1'
local base, chunk, cap, sname = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local rows = {}
if max_len > 0 then
  local over = redis.call('XLEN', KEYS[1]) - max_len
  if over > 0 then rows = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(over, chunk)) end
end
if max_age > 0 and #rows < chunk then
  local cutoff = now_ms() - max_age
  if cutoff > 0 then
    local from = '-'
    if #rows > 0 then from = '(' .. rows[#rows][1] end
    local upto = '(' .. string.format('%.0f', cutoff) .. '-0'
    for _, r in ipairs(redis.call('XRANGE', KEYS[1], from, upto, 'COUNT', chunk - #rows)) do rows[#rows + 1] = r end
  end
end
if #rows == 0 then return {0, 0, 0, 0} end
local groups = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  groups[#groups + 1] = info
end
-- Retention holds: never cut an entry a holding subscription has not settled, i.e. stop
-- before its oldest pending entry and after its last-delivered id.
local held = false
for _, info in ipairs(groups) do
  if redis.call('HGET', base .. K_SUB .. ':' .. info['name'], S_RETENTION_HOLD) == '1' then
    local oldest = nil
    if info['pending'] > 0 then
      local p = redis.call('XPENDING', KEYS[1], info['name'], '-', '+', 1)
      if #p > 0 then oldest = p[1][1] end
    end
    local keep = 0
    for i, r in ipairs(rows) do
      if id_after(r[1], info['last-delivered-id']) or (oldest and not id_after(oldest, r[1])) then break end
      keep = i
    end
    if keep < #rows then
      held = true
      for i = #rows, keep + 1, -1 do rows[i] = nil end
    end
  end
end
if #rows == 0 then return {0, 0, 0, 0} end
local last = rows[#rows][1]
local dead, dropped = 0, 0
for _, info in ipairs(groups) do
  local group = info['name']
  local sub = base .. K_SUB .. ':' .. group
  if redis.call('EXISTS', sub) == 1 then
    local pending = {}
    if info['pending'] > 0 then
      for _, p in ipairs(redis.call('XPENDING', KEYS[1], group, '-', last, #rows + 100)) do pending[p[1]] = p end
    end
    local errors = base .. K_ERRORS .. ':' .. group
    local delay = base .. K_DELAY .. ':' .. group
    local dlq = base .. K_DLQ .. ':' .. group
    local g = nil
    if redis.call('HGET', sub, S_ORDERED) == '1' then g = gate(base, group) end
    local acks, g_dead, g_dropped = {}, 0, 0
    for _, r in ipairs(rows) do
      local id = r[1]
      local p = pending[id]
      if p or id_after(id, info['last-delivered-id']) then
        pending[id] = nil
        if p then acks[#acks + 1] = id end
        local field = error_field(false, id)
        local last_error = redis.call('HGET', errors, field)
        if last_error then redis.call('HDEL', errors, field) end
        redis.call('ZREM', delay, id)
        local payload, etype, origin, tp, key = entry_fields(r[2], id)
        if g then
          -- Its key moves on: out of the waiting set, and the next one is due if it was the head.
          if key ~= '' then redis.call('ZREM', g.waiting, waiting_member(key, false, id, id)) end
          gate_release(g, error_field(false, id))
        end
        if drop then
          g_dropped = g_dropped + 1
        else
          local reason = 'retention'
          if last_error then reason = reason .. '; last error: ' .. last_error end
          local attempts, owner = 0, ''
          if p then attempts, owner = p[4], p[2] end
          add_dead_letter(dlq, sub, cap, sname, group, origin, attempts, reason, owner, payload, etype, tp, key)
          g_dead = g_dead + 1
        end
      end
    end
    -- Pending entries at or before the cut whose data was already gone.
    for id, _ in pairs(pending) do
      acks[#acks + 1] = id
      g_dropped = g_dropped + 1
      redis.call('HDEL', errors, error_field(false, id))
      if g then gate_release(g, error_field(false, id)) end
    end
    if #acks > 0 then redis.call('XACK', KEYS[1], group, unpack(acks)) end
    if g_dead > 0 then redis.call('HINCRBY', sub, S_RETENTION_DEAD_LETTERED, g_dead) end
    if g_dropped > 0 then redis.call('HINCRBY', sub, S_RETENTION_DROPPED, g_dropped) end
    dead, dropped = dead + g_dead, dropped + g_dropped
  end
end
local ms, seq = string.match(last, '^(%d+)-(%d+)$')
redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%.0f', tonumber(seq) + 1))
local more = 0
if #rows >= chunk and not held then more = 1 end
return {#rows, dead, dropped, more}
