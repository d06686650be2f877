-- Acknowledge and remove stream entries the collector has written and flushed, and count them once.
-- KEYS[1] results stream, KEYS[2] stats hash
-- ARGV[1] consumer group, ARGV[2..N+1] entry ids, ARGV[N+2..2N+1] the length of each entry's result line (field
-- r, as the collector read it; 0 for an entry without one)
-- The stats hash's results_bytes (the results backlog in bytes: commit.lua adds each line's length as it writes
-- it) loses the length of each entry this call deletes, and only of those: an entry already gone is not subtracted
-- again. The lengths come from the collector, which has just read the entries: reading them again here would
-- copy every line once more inside Redis.
-- Returns {collected, enqueued, dead_chunk_items} after the update, for --until-done (items of chunks that went
-- to dead unread have no result line: they count as finished).
local n = (#ARGV - 1) / 2
local acked, removed_bytes = 0, 0
local step = 500
for i = 2, n + 1, step do
  local j = math.min(i + step - 1, n + 1)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  for k = i, j do
    if redis.call('XDEL', KEYS[1], ARGV[k]) == 1 then removed_bytes = removed_bytes + tonumber(ARGV[k + n]) end
  end
end
if removed_bytes > 0 then
  local left = redis.call('HINCRBY', KEYS[2], 'results_bytes', -removed_bytes)
  -- Below 0: entries written before results_bytes existed. Back to 0 (HINCRBY: the collector's ACL has no HSET).
  if left < 0 then redis.call('HINCRBY', KEYS[2], 'results_bytes', -left) end
end
local collected = redis.call('HINCRBY', KEYS[2], 'collected', acked)
local counts = redis.call('HMGET', KEYS[2], 'enqueued', 'dead_chunk_items')
return {collected, tonumber(counts[1] or '0'), tonumber(counts[2] or '0')}
