-- Finish a requeue atomically: new chunks to pending, records that cannot be requeued back to dead, scratch list
-- removed, counters updated (the requeued items are counted as enqueued again, so collect --until-done waits
-- for their new results).
-- KEYS[1] scratch list, KEYS[2] pending list, KEYS[3] dead list, KEYS[4] stats hash
-- ARGV[1] items in the chunks, ARGV[2] of which came from records of chunks that went to dead whole, ARGV[3]
-- number of chunks C, ARGV[4 .. 3+C] chunks, then records kept in dead
local n_chunks = tonumber(ARGV[3])
for i = 4, 3 + n_chunks do
  redis.call('LPUSH', KEYS[2], ARGV[i])
end
for i = 4 + n_chunks, #ARGV do
  redis.call('LPUSH', KEYS[3], ARGV[i])
end
redis.call('DEL', KEYS[1])
if tonumber(ARGV[1]) > 0 then
  redis.call('HINCRBY', KEYS[4], 'enqueued', ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'enqueued_chunks', n_chunks)
  redis.call('HINCRBY', KEYS[4], 'requeued_dead', ARGV[1])
end
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[4], 'requeued_chunk_items', ARGV[2]) end
return n_chunks
