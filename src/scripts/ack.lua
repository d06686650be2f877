-- Acknowledge and remove stream entries the collector has written and flushed, and count them once.
-- KEYS[1] results stream, KEYS[2] stats hash
-- ARGV[1] consumer group, ARGV[2..] entry ids
-- Returns {collected, enqueued} after the update, for --until-done.
local acked = 0
local step = 500
for i = 2, #ARGV, step do
  local j = math.min(i + step - 1, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, j))
end
local collected = redis.call('HINCRBY', KEYS[2], 'collected', acked)
local enqueued = tonumber(redis.call('HGET', KEYS[2], 'enqueued') or '0')
return {collected, enqueued}
