-- Acknowledge and remove stream entries the collector has written and flushed, and count them once.
-- KEYS[1] results stream, KEYS[2] stats hash
-- ARGV[1] consumer group, ARGV[2..] entry ids
-- The stats hash's results_bytes (the results backlog in bytes, which commit.lua adds each result line's length
-- to) loses exactly the lengths of the lines this call removes: each entry is read before it is deleted. A user
-- without the right to XRANGE (an ACL from before results_bytes) removes entries without taking their bytes off:
-- the count then stays too high until the stream is empty, when backlog.lua sets it to 0.
-- Returns {collected, enqueued, dead_chunk_items} after the update, for --until-done (items of chunks that went
-- to dead unread have no result line: they count as finished).
local acked, removed_bytes = 0, 0
local step = 500
local measure = not redis.acl_check_cmd or redis.acl_check_cmd('XRANGE', KEYS[1], '-', '+')
for i = 2, #ARGV, step do
  local j = math.min(i + step - 1, #ARGV)
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  if measure then
    for k = i, j do
      local entry = redis.call('XRANGE', KEYS[1], ARGV[k], ARGV[k])[1]
      local fields = entry and entry[2] or {}
      for f = 1, #fields - 1, 2 do
        if fields[f] == 'r' then removed_bytes = removed_bytes + #fields[f + 1] end
      end
    end
  end
  redis.call('XDEL', KEYS[1], unpack(ARGV, i, j))
end
if removed_bytes > 0 and redis.call('HINCRBY', KEYS[2], 'results_bytes', -removed_bytes) < 0 then
  redis.call('HSET', KEYS[2], 'results_bytes', 0) -- entries written before results_bytes existed
end
local collected = redis.call('HINCRBY', KEYS[2], 'collected', acked)
local counts = redis.call('HMGET', KEYS[2], 'enqueued', 'dead_chunk_items')
return {collected, tonumber(counts[1] or '0'), tonumber(counts[2] or '0')}
