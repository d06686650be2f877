-- The queue-wide rate limit and concurrency cap (src/ratelimit.h explains the design). Time is Redis's (TIME),
-- never a worker's clock.
-- KEYS[1] chunkd:{Q}:rate (hash), KEYS[2] chunkd:{Q}:inflight (hash: worker id -> slots held),
-- KEYS[3] chunkd:{Q}:workers (set)
-- ARGV[1] the operation:
--   take     ARGV[2] limit/s, ARGV[3] burst, ARGV[4] tokens wanted (at most BLOCK_MS of the rate divided by
--            the registered workers, and the burst, are granted at once)
--            -> {granted, wait_ms, rate in milli-calls/s, paused_ms}. Tokens may be reserved ahead, up to
--               LOOKAHEAD_MS of the rate (the bucket then goes negative, like GCRA's theoretical arrival time):
--               granted > 0 with wait_ms > 0 means the tokens may be used only after wait_ms; granted 0 means
--               ask again after wait_ms. paused_ms is how long everyone still waits for a Retry-After.
--   throttle ARGV[2] limit/s, ARGV[3] burst, ARGV[4] Retry-After in ms (-1: none)
--            -> the same reply; the shared rate is halved (at most once a second, not below 5 % of the limit)
--               and everyone pauses until now + Retry-After.
--   slots    ARGV[2] the global cap, ARGV[3] worker id, ARGV[4] slots wanted in all, ARGV[5] slots in use
--            -> {held, fair_cap}: this worker now holds `held` slots (never fewer than in use); fair_cap > 0
--               while slots are contended: no worker should hold more than the cap divided by the workers.
-- Rate hash fields: limit, rate (current, calls/s), tokens, ts (last refill, ms), rate_ts (last rate change, ms),
-- paused_until (ms), cut_at (last cut, ms), contended_until (ms).
local DECREASE = 0.5        -- a throttle multiplies the rate by this
local FLOOR = 0.05          -- ... but not below this fraction of the limit
local RECOVER = 0.05        -- recovery: this fraction of the limit per second without a throttle
local CUT_INTERVAL_MS = 1000
local LOOKAHEAD_MS = 200    -- how far ahead tokens may be reserved (the most the bucket owes)
local BLOCK_MS = 100        -- a lease brings at most this much of the rate divided by the registered workers
local TTL_MS = 3600000      -- state of an idle queue expires

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local op = ARGV[1]

if op == 'slots' then
  local max, id, wanted, used = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
  local all = redis.call('HGETALL', KEYS[2])
  local others = 0
  for i = 1, #all, 2 do
    if all[i] ~= id then others = others + tonumber(all[i + 1]) end
  end
  local held = math.min(wanted, math.max(max - others, 0))
  if held < used then held = used end
  if held > 0 then redis.call('HSET', KEYS[2], id, held) else redis.call('HDEL', KEYS[2], id) end
  if held < wanted then
    redis.call('HSET', KEYS[1], 'contended_until', now + 1000)
    redis.call('PEXPIRE', KEYS[1], TTL_MS)
  end
  local cap = 0
  local until_ms = tonumber(redis.call('HGET', KEYS[1], 'contended_until') or '0')
  if now < until_ms then
    local workers = math.max(redis.call('SCARD', KEYS[3]), 1)
    cap = math.ceil(max / workers)
  end
  return {held, cap}
end

local limit, burst = tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'rate', 'tokens', 'ts', 'rate_ts', 'paused_until', 'cut_at', 'limit')
local rate = tonumber(h[1]) or limit
if tonumber(h[7]) ~= limit then rate = limit end  -- a new limit starts afresh
local tokens = tonumber(h[2]) or burst
local ts = tonumber(h[3]) or now
local rate_ts = tonumber(h[4]) or now
local paused = tonumber(h[5]) or 0
local cut_at = tonumber(h[6]) or 0
if rate > limit then rate = limit end
if tokens > burst then tokens = burst end

-- Additive recovery, counted from the later of the last change and the end of the pause.
local from = math.max(rate_ts, paused)
if now > from then
  if rate < limit then rate = math.min(limit, rate + limit * RECOVER * (now - from) / 1000) end
  rate_ts = now
end
-- Refill at the current rate; nothing accrues during a pause.
local refill_from = math.max(ts, paused)
if now > refill_from then tokens = math.min(burst, tokens + rate * (now - refill_from) / 1000) end
ts = now

local granted, wait = 0, 0
if op == 'throttle' then
  local retry_after = tonumber(ARGV[4])
  if now - cut_at >= CUT_INTERVAL_MS then
    rate = math.max(rate * DECREASE, limit * FLOOR)
    cut_at = now
    rate_ts = now
  end
  if retry_after > 0 and now + retry_after > paused then paused = now + retry_after end
  if paused > now then tokens = 0 end  -- what was reserved ahead is forgiven
elseif op == 'take' then
  -- Equal blocks for every worker, so that the order of asking alone decides who gets the tokens.
  local share = rate * BLOCK_MS / 1000 / math.max(redis.call('SCARD', KEYS[3]), 1)
  local want = math.min(tonumber(ARGV[4]), math.max(math.floor(burst), 1), math.max(math.floor(share + 0.5), 1))
  local ahead = rate * LOOKAHEAD_MS / 1000
  if paused > now then
    wait = paused - now
  elseif tokens - want >= -ahead then
    granted = want
    tokens = tokens - want
    if tokens < 0 then wait = math.ceil(-tokens * 1000 / rate) end
  else
    wait = math.ceil((want - ahead - tokens) * 1000 / rate)
  end
else
  return redis.error_reply('ratelimit.lua: unknown operation')
end

redis.call('HSET', KEYS[1], 'limit', tostring(limit), 'rate', tostring(rate), 'tokens', tostring(tokens),
           'ts', ts, 'rate_ts', rate_ts, 'paused_until', paused, 'cut_at', cut_at)
redis.call('PEXPIRE', KEYS[1], TTL_MS)
return {granted, wait, math.floor(rate * 1000 + 0.5), math.max(paused - now, 0)}
