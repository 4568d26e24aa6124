-- bedrock-throttle: the ledger of one quota key, shared by a fleet (see src/store/mod.rs).
-- KEYS (one ledger, from KEYS[base]): +0 state hash, +1..+3 bucket dates of the requests,
-- tokens and tokens-per-day dimensions (zset: bucket index -> server time of its last charge),
-- +4 bucket amounts (hash: d..index -> amount), +5 tickets (zset: ticket number -> waiter id),
-- +6 ticket costs (hash: id -> "r t d expiry").
-- The state hash holds, per dimension d: u_d the amount in the window, o_d a lower bound of the
-- oldest bucket's date, e_d/tt_d the lowered effective limit and when. It stays small (a few
-- fields), so reading it is cheap whatever the buckets. Buckets coalesce the charges of one resolution step and are dated
-- at their LAST charge, so every charge is freed no earlier than its exact expiry (late by at
-- most one step) and a ledger holds at most window / resolution + 1 buckets at any rate.
-- Every call reads or writes O(log N + k) with k bounded by BATCH, WALK or the bucket count:
-- no call ever reads a whole ledger. Every key of a ledger shares one hash tag (one slot).
-- The ledger is opened by `open(base)`, so a plan's several ledgers (scopes) can later be
-- admitted in one call by opening each at its own base.
if redis.replicate_commands then redis.replicate_commands() end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]

-- Amounts are integers below 2^53 (the client refuses larger limits), exact in a Lua double.
-- '%.0f' prints them exactly; '%d' would wrap at 2^63.
local function fmt(n) return string.format('%.0f', n) end

local DIM = { 'r', 't', 'd' }
local BATCH = 256 -- expired buckets dropped per call at most (the rest count until the next call)
local WALK = 32   -- buckets a refusal reads to say when it fits (if not enough: come back then)
local F = { 'v', 'qset', 'q_r', 'q_t', 'q_d', 'u_r', 'u_t', 'u_d', 'o_r', 'o_t', 'o_d',
  'e_r', 'tt_r', 'e_t', 'tt_t', 'e_d', 'tt_d', 'tk' }

local function open(base)
  local L = { S = KEYS[base], Z = { KEYS[base + 1], KEYS[base + 2], KEYS[base + 3] },
    A = KEYS[base + 4], Q = KEYS[base + 5], QC = KEYS[base + 6], st = {}, dirty = {},
    refresh = false }
  local v = redis.call('HMGET', L.S, unpack(F))
  for j = 1, #F do
    if v[j] then L.st[F[j]] = v[j] end
  end
  L.existed = L.st.v ~= nil
  return L
end

-- A state field changes (false: deleted); written once by `flush`.
local function set(L, field, value)
  L.st[field] = value or nil
  L.dirty[field] = value
end

local function flush(L, ttl)
  local hs, hd = {}, {}
  for f, v in pairs(L.dirty) do
    if v then
      hs[#hs + 1] = f; hs[#hs + 1] = v
    else
      hd[#hd + 1] = f
    end
  end
  if #hs > 0 then redis.call('HSET', L.S, unpack(hs)) end
  if #hd > 0 then redis.call('HDEL', L.S, unpack(hd)) end
  if L.refresh or (#hs > 0 and not L.existed) then redis.call('PEXPIRE', L.S, ttl) end
  L.dirty = {}
end

-- The limits in force: those set fleet-wide by set_quota, else the caller's configuration.
local function limits(L, lr, lt, ld)
  if L.st.qset == '1' then
    return { tonumber(L.st.q_r), tonumber(L.st.q_t), tonumber(L.st.q_d) }
  end
  return { tonumber(lr), tonumber(lt), tonumber(ld) }
end

-- Drops the buckets of dimension i that left the window; returns what is still used.
local function expire(L, i, win)
  local d = DIM[i]
  local used = tonumber(L.st['u_' .. d] or '0')
  local oldest = tonumber(L.st['o_' .. d] or '-1')
  local cutoff = now - win
  if oldest < 0 or oldest > cutoff then return used end
  local gone = redis.call('ZRANGEBYSCORE', L.Z[i], '-inf', cutoff, 'LIMIT', 0, BATCH)
  if #gone > 0 then
    local fields = {}
    for j, idx in ipairs(gone) do fields[j] = d .. idx end
    local amounts = redis.call('HMGET', L.A, unpack(fields))
    local sum = 0
    for j = 1, #fields do sum = sum + tonumber(amounts[j] or '0') end
    redis.call('HDEL', L.A, unpack(fields))
    redis.call('ZREM', L.Z[i], unpack(gone))
    used = math.max(0, used - sum)
  end
  local first = redis.call('ZRANGE', L.Z[i], 0, 0, 'WITHSCORES')
  if first[2] then
    set(L, 'o_' .. d, first[2])
  else
    -- No bucket left: nothing is used (whatever a lost write left in the total).
    set(L, 'o_' .. d, false)
    used = 0
  end
  set(L, 'u_' .. d, fmt(used))
  return used
end

-- The effective limit of dimension i now (lowered by feedback, recovering linearly).
local function effective(L, i, limit, w, recover)
  local d = DIM[i]
  local e, tt = L.st['e_' .. d], L.st['tt_' .. d]
  if not e then return limit end
  local step = math.max(1, math.ceil(recover * limit))
  local eff = tonumber(e) + math.floor(step * (now - tonumber(tt)) / w)
  if eff >= limit then
    set(L, 'e_' .. d, false)
    set(L, 'tt_' .. d, false)
    return limit
  end
  return eff
end

-- Books `amt` on dimension i in the bucket of now. A new bucket refreshes the TTLs: every
-- charge of a bucket is less than one step younger than the bucket, and the TTL covers the
-- window, the margin and two steps.
local function book(L, i, amt, res, ttl)
  if amt <= 0 then return end
  local d = DIM[i]
  local idx = fmt(math.floor(now / res))
  local added = redis.call('ZADD', L.Z[i], 'GT', now, idx)
  redis.call('HINCRBY', L.A, d .. idx, fmt(amt))
  set(L, 'u_' .. d, fmt(tonumber(L.st['u_' .. d] or '0') + amt))
  if not L.st['o_' .. d] then set(L, 'o_' .. d, fmt(now)) end
  set(L, 'v', '1')
  if added == 1 then
    redis.call('PEXPIRE', L.Z[i], ttl)
    redis.call('PEXPIRE', L.A, ttl)
    L.refresh = true
  end
end

-- Takes up to `amt` back from the bucket that holds the charge made at `at`, if it is still in
-- the window; returns what it took.
local function unbook(L, i, at, res, amt)
  local d = DIM[i]
  local f = d .. fmt(math.floor(at / res))
  local have = tonumber(redis.call('HGET', L.A, f) or '0')
  local take = math.min(have, amt)
  if take > 0 then
    redis.call('HINCRBY', L.A, f, fmt(-take))
    set(L, 'u_' .. d, fmt(math.max(0, tonumber(L.st['u_' .. d] or '0') - take)))
  end
  return take
end

-- When `need` will have left dimension i's window: the oldest buckets, read WALK at a time.
-- If they do not free enough, the answer is when they have gone (early, never late).
local function freed_after(L, i, need, win)
  local list = redis.call('ZRANGE', L.Z[i], 0, WALK - 1, 'WITHSCORES')
  if #list == 0 then return 1 end
  local fields = {}
  for j = 1, #list, 2 do fields[#fields + 1] = DIM[i] .. list[j] end
  local amounts = redis.call('HMGET', L.A, unpack(fields))
  local freed, last = 0, now
  for j = 1, #fields do
    freed = freed + tonumber(amounts[j] or '0')
    last = tonumber(list[2 * j])
    if freed >= need then break end
  end
  return last + win - now
end

local function figures(used, eff)
  local out = {}
  for i = 1, 3 do out[#out + 1] = used[i] or -1 end
  for i = 1, 3 do out[#out + 1] = eff[i] or -1 end
  return out
end

if op == 'a' then
  -- ARGV: 2 tokens, 3-5 limits r t d (0 = none), 6 window+margin, 7 day+margin, 8 window,
  --       9 recover per window, 10 waiter id, 11 ticket grace, 12 ttl ms, 13 may wait (1/0),
  --       14 resolution of the window, 15 of the day, 16-18 this process's live charges r t d,
  --       19 the script cache was lost (1/0)
  local L = open(1)
  local tokens = tonumber(ARGV[2])
  local lim = limits(L, ARGV[3], ARGV[4], ARGV[5])
  local win = { tonumber(ARGV[6]), tonumber(ARGV[6]), tonumber(ARGV[7]) }
  local w, recover, id = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
  local ttl = tonumber(ARGV[12])
  local res = { tonumber(ARGV[14]), tonumber(ARGV[14]), tonumber(ARGV[15]) }
  local own = { tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18]) }
  local cost = { 1, tokens, tokens }
  local used, eff = {}, {}
  -- A lost ledger: 1 the script cache is gone (a restart, a promoted replica), 2 the state is
  -- gone while this process holds live charges, 3 the fleet's usage is below them.
  local lost = 0
  if ARGV[19] == '1' then lost = 1 end
  for i = 1, 3 do
    if lim[i] and lim[i] > 0 and cost[i] > lim[i] then return { -1, i, lim[i] } end
  end
  for i = 1, 3 do
    if lim[i] and lim[i] > 0 then
      if lost == 0 and own[i] > 0 and not L.existed then lost = 2 end
      used[i] = expire(L, i, win[i])
      eff[i] = effective(L, i, lim[i], (i == 3) and win[3] or w, recover)
      if lost == 0 and used[i] < own[i] then lost = 3 end
    end
  end
  if lost > 0 then
    -- Treated as full for one window, as a throttle is (the day's lost usage is not rebuilt).
    for i = 1, 2 do
      if used[i] and used[i] < eff[i] then
        book(L, i, eff[i] - used[i], res[i], ttl)
        used[i] = eff[i]
      end
    end
  end
  -- Tickets: the waiting heads of the fleet, in arrival order; one per waiting process. Dead
  -- ones (past expiry) go.
  local ahead = { 0, 0, 0 }
  local mine = nil
  local line = redis.call('ZRANGE', L.Q, 0, -1, 'WITHSCORES')
  if #line > 0 then
    local who = {}
    for j = 1, #line, 2 do
      who[#who + 1] = line[j]
      if line[j] == id then mine = tonumber(line[j + 1]) end
    end
    local costs = redis.call('HMGET', L.QC, unpack(who))
    for j = 1, #who do
      local r, tk, d, exp = string.match(costs[j] or '', '^(%d+) (%d+) (%d+) (%d+)$')
      if not exp or tonumber(exp) < now then
        redis.call('ZREM', L.Q, who[j])
        redis.call('HDEL', L.QC, who[j])
        if who[j] == id then mine = nil end
      elseif who[j] ~= id and (not mine or tonumber(line[2 * j]) < mine) then
        ahead[1] = ahead[1] + tonumber(r)
        ahead[2] = ahead[2] + tonumber(tk)
        ahead[3] = ahead[3] + tonumber(d)
      end
    end
  end
  local blocked, wait = 0, 0
  for i = 1, 3 do
    if used[i] and cost[i] > 0 then
      local need = used[i] + ahead[i] + cost[i] - eff[i]
      if need > 0 then
        local until_free
        if ahead[i] + cost[i] <= eff[i] then
          until_free = freed_after(L, i, need, win[i])
        else
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
    for i = 1, 3 do
      if used[i] and cost[i] > 0 then
        book(L, i, cost[i], res[i], ttl)
        used[i] = used[i] + cost[i]
      end
    end
    if mine then
      redis.call('ZREM', L.Q, id)
      redis.call('HDEL', L.QC, id)
    end
    flush(L, ttl)
    local out = { 1, now, lost }
    for _, x in ipairs(figures(used, eff)) do out[#out + 1] = x end
    return out
  end
  if ARGV[13] == '1' then
    if not mine then
      local n = tonumber(L.st.tk or '0') + 1
      set(L, 'tk', fmt(n))
      redis.call('ZADD', L.Q, n, id)
    end
    local c = { 0, 0, 0 }
    for i = 1, 3 do if used[i] then c[i] = cost[i] end end
    redis.call('HSET', L.QC, id,
      fmt(c[1]) .. ' ' .. fmt(c[2]) .. ' ' .. fmt(c[3]) .. ' ' .. fmt(now + wait + tonumber(ARGV[11])))
    redis.call('PEXPIRE', L.Q, ttl)
    redis.call('PEXPIRE', L.QC, ttl)
    L.refresh = true
  end
  flush(L, ttl)
  local out = { 0, wait, blocked, lost }
  for _, x in ipairs(figures(used, eff)) do out[#out + 1] = x end
  return out
elseif op == 's' then
  -- Settle. ARGV: 2 admitted at, 3 refund, 4 debt, 5 ttl ms, 6-7 limits t d,
  --       8 resolution of the window, 9 of the day
  local L = open(1)
  local at, refund, debt = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local ttl = tonumber(ARGV[5])
  local lim = limits(L, '0', ARGV[6], ARGV[7])
  local res = { 0, tonumber(ARGV[8]), tonumber(ARGV[9]) }
  for i = 2, 3 do
    if refund > 0 then unbook(L, i, at, res[i], refund) end
    -- More debt than the limit blocks the window no longer than the limit does.
    if debt > 0 and lim[i] and lim[i] > 0 then book(L, i, math.min(debt, lim[i]), res[i], ttl) end
  end
  flush(L, ttl)
  return now
elseif op == 't' then
  -- Throttle feedback. ARGV: 2 dims ("r", "t", "d", "rt"), 3 admitted at (-1 without permit),
  -- 4 reserved, 5-7 limits, 8 window+margin, 9 day+margin, 10 window, 11 decrease,
  -- 12 recover, 13 floor, 14 ttl ms, 15 resolution of the window, 16 of the day
  local L = open(1)
  local lim = limits(L, ARGV[5], ARGV[6], ARGV[7])
  local win = { tonumber(ARGV[8]), tonumber(ARGV[8]), tonumber(ARGV[9]) }
  local at, reserved = tonumber(ARGV[3]), tonumber(ARGV[4])
  local w, decrease, recover, floor = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
  local ttl = tonumber(ARGV[14])
  local res = { tonumber(ARGV[15]), tonumber(ARGV[15]), tonumber(ARGV[16]) }
  for i = 1, 3 do
    if lim[i] and lim[i] > 0 and string.find(ARGV[2], DIM[i], 1, true) then
      local d = DIM[i]
      local used = expire(L, i, win[i])
      local wi = (i == 3) and win[3] or w
      local eff = effective(L, i, lim[i], wi, recover)
      local last = tonumber(L.st['tt_' .. d] or '-1')
      if decrease < 1 and not (at >= 0 and last >= 0 and at < last) then
        local low = math.max(math.ceil(floor * lim[i]), 1)
        eff = math.max(low, math.floor(eff * decrease))
        set(L, 'e_' .. d, fmt(eff))
        set(L, 'tt_' .. d, fmt(now))
      end
      local own = 0
      if at >= 0 and redis.call('HEXISTS', L.A, d .. fmt(math.floor(at / res[i]))) == 1 then
        own = math.min(used, (i == 1) and 1 or reserved)
      end
      local fill = eff - (used - own)
      if fill > 0 then book(L, i, fill, res[i], ttl) end
    end
  end
  flush(L, ttl)
  return now
elseif op == 'q' then
  -- Set the quota fleet-wide. ARGV: 2-4 limits r t d (0 = none), 5 ttl ms
  local L = open(1)
  set(L, 'qset', '1'); set(L, 'q_r', ARGV[2]); set(L, 'q_t', ARGV[3]); set(L, 'q_d', ARGV[4])
  L.refresh = true
  flush(L, tonumber(ARGV[5]))
  return now
elseif op == 'c' then
  -- A waiter left: its ticket goes. ARGV: 2 waiter id
  redis.call('ZREM', KEYS[6], ARGV[2])
  redis.call('HDEL', KEYS[7], ARGV[2])
  return now
elseif op == 'st' then
  -- Stats. ARGV: 2-4 limits, 5 window+margin, 6 day+margin, 7 window, 8 recover, 9 ttl ms
  local L = open(1)
  local lim = limits(L, ARGV[2], ARGV[3], ARGV[4])
  local win = { tonumber(ARGV[5]), tonumber(ARGV[5]), tonumber(ARGV[6]) }
  local out = {}
  for i = 1, 3 do
    if lim[i] and lim[i] > 0 then
      local wi = (i == 3) and win[3] or tonumber(ARGV[7])
      out[#out + 1] = expire(L, i, win[i])
      out[#out + 1] = effective(L, i, lim[i], wi, tonumber(ARGV[8]))
      out[#out + 1] = lim[i]
    else
      out[#out + 1] = -1; out[#out + 1] = -1; out[#out + 1] = -1
    end
  end
  out[#out + 1] = redis.call('ZCARD', L.Q)
  if L.existed then flush(L, tonumber(ARGV[9])) end
  return out
end
return redis.error_reply('bedrock-throttle: unknown op ' .. tostring(op))
