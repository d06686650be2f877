-- Acknowledge and remove stream entries the collector has written and flushed, and count their lines once.
-- KEYS[1] results stream, KEYS[2] stats hash
-- ARGV[1] consumer group, then N entry ids, then the length of each entry's field (b: several result lines, or r:
-- one, from workers before entries held several; as the collector read it; 0 for an entry without one), then the
-- number of result lines each holds, or 'r' for an entry of such an older worker (one line, which it counted in
-- results_bytes but not in results_lines)
-- The stats hash's results_bytes and results_lines (the results backlog: commit.lua adds each entry it writes) lose
-- each entry this call removes, and collected gains its lines: an entry acknowledged and removed before (a
-- collector that re-reads its pending entries after a lost reply) is not counted again. (An entry still pending
-- that another tool deleted counts when every id of its batch was pending, else not.) The lengths and
-- counts come from the collector, which has just read the entries: reading them again here would copy every line
-- once more inside Redis.
-- Returns {collected, enqueued, dead_chunk_items} after the update, for --until-done (items of chunks that went
-- to dead unread have no result line: they count as finished).
local n = (#ARGV - 1) / 3
local bytes, lines, old_lines = 0, 0, 0
local function count(k) -- entry k is removed now
  bytes = bytes + tonumber(ARGV[k + n])
  if ARGV[k + 2 * n] == 'r' then old_lines = old_lines + 1 else lines = lines + tonumber(ARGV[k + 2 * n]) end
end
local step = 500
for i = 2, n + 1, step do
  local j = math.min(i + step - 1, n + 1)
  local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  if acked == j - i + 1 then
    -- The usual case: every entry was pending, so none was counted before (this script deletes what it
    -- acknowledges, in the same step).
    redis.call('XDEL', KEYS[1], unpack(ARGV, i, j))
    for k = i, j do count(k) end
  else
    -- Some were acknowledged before: those are gone already, so an entry this XDEL removes is counted now.
    for k = i, j do
      if redis.call('XDEL', KEYS[1], ARGV[k]) == 1 then count(k) end
    end
  end
end
-- Below 0: entries written before these counts existed. Back to 0 (HINCRBY: the collector's ACL has no HSET).
local function take_off(field, v)
  if v <= 0 then return end
  local left = redis.call('HINCRBY', KEYS[2], field, -v)
  if left < 0 then redis.call('HINCRBY', KEYS[2], field, -left) end
end
take_off('results_bytes', bytes)
take_off('results_lines', lines)
local collected = redis.call('HINCRBY', KEYS[2], 'collected', lines + old_lines)
local counts = redis.call('HMGET', KEYS[2], 'enqueued', 'dead_chunk_items')
return {collected, tonumber(counts[1] or '0'), tonumber(counts[2] or '0')}
