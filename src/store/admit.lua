-- bedrock-throttle: the ledger of one quota key, shared by a fleet (see src/store/mod.rs).
-- KEYS: 1 state hash, 2 requests ledger, 3 tokens ledger, 4 tokens-per-day ledger,
--       5 tickets (zset: ticket number -> waiter id), 6 ticket costs (hash: id -> "r t d expiry").
-- Ledger members are "<seq>:<amount>" scored by the server time (microseconds) of the charge.
-- Every key of a quota key shares one hash tag, so the script runs on one slot.
if redis.replicate_commands then redis.replicate_commands() end

local S, Q, QC = KEYS[1], KEYS[5], KEYS[6]
local Z = { KEYS[2], KEYS[3], KEYS[4] }
local DIM = { 'r', 't', 'd' }
local op = ARGV[1]

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function fmt(n) return string.format('%d', n) end
local function amount(member) return tonumber(string.match(member, ':(%d+)$')) end

-- The state hash, read once: quota set fleet-wide, usage and feedback of each dimension.
local F = { 'qset', 'q_r', 'q_t', 'q_d', 'u_r', 'u_t', 'u_d', 'e_r', 'tt_r', 'e_t', 'tt_t', 'e_d', 'tt_d' }
local state = {}
do
  local v = redis.call('HMGET', S, unpack(F))
  for j = 1, #F do state[F[j]] = v[j] end
end

-- The limits in force: those set fleet-wide by set_quota, else the caller's configuration.
local function limits(lr, lt, ld)
  if state.qset == '1' then
    return { tonumber(state.q_r), tonumber(state.q_t), tonumber(state.q_d) }
  end
  return { tonumber(lr), tonumber(lt), tonumber(ld) }
end

-- Drops the entries of dimension i that have left its window; returns what is still used.
local function expire(i, win)
  local z = Z[i]
  local field = 'u_' .. DIM[i]
  local used = tonumber(state[field] or '0')
  if used > 0 and redis.call('EXISTS', z) == 0 then
    -- The ledger is gone (evicted, flushed): so is its usage.
    redis.call('HDEL', S, field)
    return 0
  end
  local cutoff = now - win
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
  if #gone > 0 then
    local sum = 0
    for _, m in ipairs(gone) do sum = sum + amount(m) end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
    used = used - sum
    if used < 0 then used = 0 end
    redis.call('HSET', S, field, fmt(used))
  end
  return used
end

-- The effective limit of dimension i now (lowered by feedback, recovering linearly).
local function effective(i, limit, w, recover)
  local e = { state['e_' .. DIM[i]], state['tt_' .. DIM[i]] }
  if not e[1] then return limit end
  local step = math.ceil(recover * limit)
  if step < 1 then step = 1 end
  local eff = tonumber(e[1]) + math.floor(step * (now - tonumber(e[2])) / w)
  if eff >= limit then
    redis.call('HDEL', S, 'e_' .. DIM[i], 'tt_' .. DIM[i])
    return limit
  end
  return eff
end

-- Every key written lives a window (the longest, plus the margin) after its last write.
local function touch(ttl, keys)
  for _, k in ipairs(keys) do redis.call('PEXPIRE', k, ttl) end
end

local function book(i, at, amt)
  local seq = redis.call('HINCRBY', S, 'seq', 1)
  redis.call('ZADD', Z[i], at, fmt(seq) .. ':' .. fmt(amt))
  redis.call('HINCRBY', S, 'u_' .. DIM[i], fmt(amt))
  return seq
end

if op == 'a' then
  -- ARGV: 2 tokens, 3-5 limits r t d (0 = none), 6 window+margin, 7 day+margin, 8 window,
  --       9 recover per window, 10 waiter id, 11 ticket grace, 12 ttl ms, 13 may wait (1/0)
  local tokens = tonumber(ARGV[2])
  local lim = limits(ARGV[3], ARGV[4], ARGV[5])
  local win = { tonumber(ARGV[6]), tonumber(ARGV[6]), tonumber(ARGV[7]) }
  local w, recover, id = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
  local cost = { 1, tokens, tokens }
  local used, eff = {}, {}
  for i = 1, 3 do
    if lim[i] and lim[i] > 0 then
      if cost[i] > lim[i] then return { -1, i, lim[i] } end
      used[i] = expire(i, win[i])
      eff[i] = effective(i, lim[i], (i == 3) and win[3] or w, recover)
    end
  end
  -- Tickets: the waiting heads of the fleet, in arrival order. Dead ones (past expiry) go.
  local ahead = { 0, 0, 0 }
  local mine = nil
  local line = redis.call('ZRANGE', Q, 0, -1, 'WITHSCORES')
  for j = 1, #line, 2 do
    if line[j] == id then mine = line[j + 1] end
  end
  for j = 1, #line, 2 do
    local who, num = line[j], tonumber(line[j + 1])
    local c = redis.call('HGET', QC, who)
    local r, tk, d, exp = string.match(c or '', '^(%d+) (%d+) (%d+) (%d+)$')
    if not exp or tonumber(exp) < now then
      redis.call('ZREM', Q, who)
      redis.call('HDEL', QC, who)
      if who == id then mine = nil end
    elseif who ~= id and (not mine or num < tonumber(mine)) then
      ahead[1] = ahead[1] + tonumber(r)
      ahead[2] = ahead[2] + tonumber(tk)
      ahead[3] = ahead[3] + tonumber(d)
    end
  end
  local blocked, wait = 0, 0
  for i = 1, 3 do
    if used[i] then
      local need = used[i] + ahead[i] + cost[i] - eff[i]
      if need > 0 and cost[i] > 0 then
        -- Walk the window from its oldest entry until enough has expired.
        local until_free = nil
        if ahead[i] + cost[i] <= eff[i] then
          local entries = redis.call('ZRANGE', Z[i], 0, -1, 'WITHSCORES')
          local freed = 0
          for j = 1, #entries, 2 do
            freed = freed + amount(entries[j])
            if freed >= need then
              until_free = tonumber(entries[j + 1]) + win[i] - now
              break
            end
          end
        end
        if not until_free then
          -- The effective limit must recover first (or every entry expire).
          local step = math.max(1, math.ceil(recover * lim[i]))
          local short = ahead[i] + cost[i] - eff[i]
          local wi = (i == 3) and win[3] or w
          until_free = math.max(win[i], math.ceil(short / step * wi))
        end
        if until_free < 1 then until_free = 1 end
        if until_free > wait then wait, blocked = until_free, i end
      end
    end
  end
  if blocked == 0 then
    local seq = redis.call('HINCRBY', S, 'seq', 1)
    local member = fmt(seq)
    local written = { S }
    for i = 1, 3 do
      if used[i] and cost[i] > 0 then
        redis.call('ZADD', Z[i], now, member .. ':' .. fmt(cost[i]))
        redis.call('HINCRBY', S, 'u_' .. DIM[i], fmt(cost[i]))
        written[#written + 1] = Z[i]
      end
    end
    if mine then
      redis.call('ZREM', Q, id)
      redis.call('HDEL', QC, id)
    end
    touch(tonumber(ARGV[12]), written)
    return { 1, seq, now }
  end
  if ARGV[13] == '1' then
    if not mine then
      redis.call('ZADD', Q, redis.call('HINCRBY', S, 'tk', 1), id)
    end
    local c = { 0, 0, 0 }
    for i = 1, 3 do if used[i] then c[i] = cost[i] end end
    redis.call('HSET', QC, id,
      fmt(c[1]) .. ' ' .. fmt(c[2]) .. ' ' .. fmt(c[3]) .. ' ' .. fmt(now + wait + tonumber(ARGV[11])))
    touch(tonumber(ARGV[12]), KEYS)
  end
  return { 0, wait, blocked }
elseif op == 's' then
  -- Settle. ARGV: 2 seq, 3 admitted at, 4 reserved, 5 refund, 6 debt, 7 ttl ms, 8-9 limits t d
  local member = ARGV[2] .. ':' .. ARGV[4]
  local reserved, refund, debt = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local lim = limits('0', ARGV[8], ARGV[9])
  for i = 2, 3 do
    if refund > 0 and redis.call('ZREM', Z[i], member) == 1 then
      if reserved > refund then
        redis.call('ZADD', Z[i], ARGV[3], ARGV[2] .. ':' .. fmt(reserved - refund))
      end
      local u = tonumber(redis.call('HGET', S, 'u_' .. DIM[i]) or '0') - refund
      if u < 0 then u = 0 end
      redis.call('HSET', S, 'u_' .. DIM[i], fmt(u))
    end
    if debt > 0 and lim[i] and lim[i] > 0 then book(i, now, debt) end
  end
  touch(tonumber(ARGV[7]), KEYS)
  return now
elseif op == 't' then
  -- Throttle feedback. ARGV: 2 dims ("r", "t", "d", "rt"), 3 admitted at (-1 without permit),
  -- 4 permit seq (-1), 5 reserved, 6-8 limits, 9 window+margin, 10 day+margin, 11 window,
  -- 12 decrease, 13 recover, 14 floor, 15 ttl ms
  local lim = limits(ARGV[6], ARGV[7], ARGV[8])
  local win = { tonumber(ARGV[9]), tonumber(ARGV[9]), tonumber(ARGV[10]) }
  local at, seq, reserved = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
  local w, decrease, recover, floor = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
  for i = 1, 3 do
    if lim[i] and lim[i] > 0 and string.find(ARGV[2], DIM[i], 1, true) then
      local used = expire(i, win[i])
      local wi = (i == 3) and win[3] or w
      local eff = effective(i, lim[i], wi, recover)
      local last = tonumber(redis.call('HGET', S, 'tt_' .. DIM[i]) or '-1')
      if decrease < 1 and not (at >= 0 and last >= 0 and at < last) then
        local low = math.max(math.ceil(floor * lim[i]), 1)
        eff = math.max(low, math.floor(eff * decrease))
        redis.call('HSET', S, 'e_' .. DIM[i], fmt(eff), 'tt_' .. DIM[i], fmt(now))
      end
      local own = 0
      if tonumber(seq) >= 0 then
        local c = (i == 1) and 1 or reserved
        if redis.call('ZSCORE', Z[i], seq .. ':' .. fmt(c)) then own = c end
      end
      local fill = eff - (used - own)
      if fill > 0 then book(i, now, fill) end
    end
  end
  touch(tonumber(ARGV[15]), KEYS)
  return now
elseif op == 'q' then
  -- Set the quota fleet-wide. ARGV: 2-4 limits r t d (0 = none), 5 ttl ms
  redis.call('HSET', S, 'qset', '1', 'q_r', ARGV[2], 'q_t', ARGV[3], 'q_d', ARGV[4])
  redis.call('PEXPIRE', S, tonumber(ARGV[5]))
  return now
elseif op == 'c' then
  -- A waiter left: its ticket goes. ARGV: 2 waiter id
  redis.call('ZREM', Q, ARGV[2])
  redis.call('HDEL', QC, ARGV[2])
  return now
elseif op == 'st' then
  -- Stats. ARGV: 2-4 limits, 5 window+margin, 6 day+margin, 7 window, 8 recover
  local lim = limits(ARGV[2], ARGV[3], ARGV[4])
  local win = { tonumber(ARGV[5]), tonumber(ARGV[5]), tonumber(ARGV[6]) }
  local out = {}
  for i = 1, 3 do
    if lim[i] and lim[i] > 0 then
      local wi = (i == 3) and win[3] or tonumber(ARGV[7])
      out[#out + 1] = expire(i, win[i])
      out[#out + 1] = effective(i, lim[i], wi, tonumber(ARGV[8]))
      out[#out + 1] = lim[i]
    else
      out[#out + 1] = -1; out[#out + 1] = -1; out[#out + 1] = -1
    end
  end
  out[#out + 1] = redis.call('ZCARD', Q)
  return out
end
return redis.error_reply('bedrock-throttle: unknown op ' .. tostring(op))
