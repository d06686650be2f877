-- Enqueue chunks atomically with their counters, so "enqueued" never disagrees with what is in pending.
-- KEYS[1] pending list, KEYS[2] stats hash
-- ARGV[1] number of items in all the chunks, ARGV[2..] the chunks
for i = 2, #ARGV do
  redis.call('LPUSH', KEYS[1], ARGV[i])
end
redis.call('HINCRBY', KEYS[2], 'enqueued', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'enqueued_chunks', #ARGV - 1)
return #ARGV - 1
