-- The queue-wide rate limit and concurrency cap (src/ratelimit.h explains the design). Time is Redis's (TIME),
-- never a worker's clock.
-- KEYS[1] chunkd:{Q}:rate (hash), KEYS[2] chunkd:{Q}:inflight (hash: worker id -> slots held),
-- KEYS[3] chunkd:{Q}:workers (set)
-- ARGV[1] the operation:
--   take     ARGV[2] limit/s, ARGV[3] burst, ARGV[4] tokens wanted (0: none; at most BLOCK_MS of the rate divided
--            by the registered workers, and the burst, are granted at once), ARGV[5] calls answered and ARGV[6]
--            of them 429s (since this worker's last report), ARGV[7] their shortest Retry-After in ms (-1: none)
--            -> {granted, wait_ms, rate in milli-calls/s, paused_ms, close, calls, throttled, window_ms, ra_ms,
--               baseline, cut_share, cut_ok, ceiling, first}. Tokens may be reserved ahead, up to LOOKAHEAD_MS of the
--               rate (the bucket then goes negative, like GCRA's theoretical arrival time): granted > 0 with
--               wait_ms > 0 means the tokens may be used only after wait_ms; granted 0 means ask again after
--               wait_ms. paused_ms is how long everyone still waits for a Retry-After. close > 0: the window
--               ended and this caller decides the next rate (ratelimit_adapt in C) and sends it with 'adapt'
--               and that number; then follow the window's counts: calls answered, 429s, its length, the
--               time to its first Retry-After deadline (-1: none), the adaptation's state (the next four in
--               millionths, or milli-calls/s), and whether it is the queue's first window (1: its calls were
--               a start-up burst); otherwise they are 0.
--   adapt    ARGV[2] limit/s, ARGV[3] burst, ARGV[4] the window's number (close), ARGV[5] the new rate (calls/s),
--            ARGV[6] baseline, ARGV[7] cut_share, ARGV[8] cut_ok, ARGV[9] ceiling, ARGV[10] pause in ms,
--            ARGV[11] settle in ms
--            -> the reply of take (nothing granted). Ignored unless the window is still that one. A pause
--               empties the bucket. The next window starts when the pause ends, or after the settle time (after
--               a cut: the calls made at the old rate are answered meanwhile); calls answered before it starts
--               (the same burst) are not counted.
--   slots    ARGV[2] the global cap, ARGV[3] worker id, ARGV[4] slots wanted in all, ARGV[5] slots in use
--            -> {held, fair_cap}: this worker now holds `held` slots (never fewer than in use); fair_cap > 0
--               while slots are contended: no worker should hold more than the cap divided by the workers.
-- Rate hash fields: limit, rate (current, calls/s), tokens, ts (last refill, ms), paused_until (ms), win (the
-- window's number), win_start (ms), win_calls, win_429, win_ra (its first Retry-After deadline, ms; 0: none),
-- win_first (1: the queue's first window), closing_until (ms: a worker is deciding), baseline, cut_share, cut_ok,
-- ceiling (see ratelimit_math.h), contended_until (ms).
local WINDOW_MS = 1000      -- RATELIMIT_WINDOW_MS
local CLOSING_MS = 1000     -- a worker that got a window to close and did not answer: another may, after this
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
local F = {'limit', 'rate', 'tokens', 'ts', 'paused_until', 'win', 'win_start', 'win_calls', 'win_429', 'win_ra',
           'win_first', 'closing_until', 'baseline', 'cut_share', 'cut_ok', 'ceiling'}
local v = redis.call('HMGET', KEYS[1], unpack(F))
local h = {}
for i = 1, #F do h[F[i]] = tonumber(v[i]) end
if h.limit ~= limit or not h.rate or not h.win then  -- a fresh queue, or a new limit: start afresh
  h = {limit = limit, rate = limit, tokens = burst, ts = now, paused_until = 0, win = 1, win_start = now,
       win_calls = 0, win_429 = 0, win_ra = 0, win_first = 1, closing_until = 0, baseline = 0, cut_share = 0,
       cut_ok = 0, ceiling = 0}
end
if h.rate > limit then h.rate = limit end
if h.tokens > burst then h.tokens = burst end

-- Refill at the current rate; nothing accrues during a pause.
local refill_from = math.max(h.ts, h.paused_until)
if now > refill_from then h.tokens = math.min(burst, h.tokens + h.rate * (now - refill_from) / 1000) end
h.ts = now

local function new_window(start, first)
  h.win = h.win + 1
  h.win_start, h.win_calls, h.win_429, h.win_ra, h.win_first, h.closing_until = start, 0, 0, 0, first, 0
end

local granted, wait = 0, 0
local close = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
if op == 'take' then
  local answered, throttled, ra = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
  if now >= h.win_start then  -- calls answered during a pause are the same burst's
    h.win_calls = h.win_calls + answered
    h.win_429 = h.win_429 + throttled
    if throttled > 0 and ra >= 0 and (h.win_ra == 0 or now + ra < h.win_ra) then h.win_ra = now + ra end
  end
  local want = tonumber(ARGV[4])
  if want > 0 then
    -- Equal blocks for every worker, so that the order of asking alone decides who gets the tokens.
    local share = h.rate * BLOCK_MS / 1000 / math.max(redis.call('SCARD', KEYS[3]), 1)
    want = math.min(want, math.max(math.floor(burst), 1), math.max(math.floor(share + 0.5), 1))
    local ahead = h.rate * LOOKAHEAD_MS / 1000
    if h.paused_until > now then
      wait = h.paused_until - now
    elseif h.tokens - want >= -ahead then
      granted = want
      h.tokens = h.tokens - want
      if h.tokens < 0 then wait = math.ceil(-h.tokens * 1000 / h.rate) end
    else
      wait = math.ceil((want - ahead - h.tokens) * 1000 / h.rate)
    end
  end
  if now >= h.win_start + WINDOW_MS and now >= h.closing_until then
    h.closing_until = now + CLOSING_MS
    close = {h.win, h.win_calls, h.win_429, now - h.win_start, h.win_ra > 0 and math.max(h.win_ra - now, 0) or -1,
             math.floor(h.baseline * 1e6 + 0.5), math.floor(h.cut_share * 1e6 + 0.5), math.floor(h.cut_ok * 1000 + 0.5),
             math.floor(h.ceiling * 1000 + 0.5), h.win_first}
  end
elseif op == 'adapt' then
  if tonumber(ARGV[4]) == h.win then
    h.rate = math.max(math.min(tonumber(ARGV[5]), limit), 0.001)
    h.baseline, h.cut_share, h.cut_ok, h.ceiling = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
                                                   tonumber(ARGV[9])
    local pause = tonumber(ARGV[10])
    if pause > 0 and now + pause > h.paused_until then h.paused_until = now + pause end
    if h.paused_until > now then h.tokens = 0 end  -- what was reserved ahead is forgiven
    new_window(math.max(now + tonumber(ARGV[11]), h.paused_until), 0)
  end
else
  return redis.error_reply('ratelimit.lua: unknown operation')
end

local out = {}
for i = 1, #F do out[2 * i - 1], out[2 * i] = F[i], tostring(h[F[i]]) end
redis.call('HSET', KEYS[1], unpack(out))
redis.call('PEXPIRE', KEYS[1], TTL_MS)
return {granted, wait, math.floor(h.rate * 1000 + 0.5), math.max(h.paused_until - now, 0), unpack(close)}
