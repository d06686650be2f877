-- Acknowledge and remove stream entries the collector has written and flushed, and count them once.
-- KEYS[1] results stream, KEYS[2] stats hash
-- ARGV[1] consumer group, ARGV[2..] entry ids
-- Returns {collected, enqueued, dead_chunk_items} after the update, for --until-done (items of chunks that went
-- to dead unread have no result line: they count as finished).
local acked = 0
local step = 500
for i = 2, #ARGV, step do
  local j = math.min(i + step - 1, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, j))
end
local collected = redis.call('HINCRBY', KEYS[2], 'collected', acked)
local counts = redis.call('HMGET', KEYS[2], 'enqueued', 'dead_chunk_items')
return {collected, tonumber(counts[1] or '0'), tonumber(counts[2] or '0')}
