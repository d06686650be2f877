-- Enqueue chunks atomically with their counters, so "enqueued" never disagrees with what is in pending. A sealed
-- queue (its input declared complete) takes no chunk: the reply is the error SEALED and nothing is pushed.
-- KEYS[1] pending list, KEYS[2] stats hash, KEYS[3] the queue's sealed key
-- ARGV[1] number of items in all the chunks, ARGV[2..] the chunks
if redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('SEALED the queue is sealed (its input is complete); nothing was pushed')
end
for i = 2, #ARGV do
  redis.call('LPUSH', KEYS[1], ARGV[i])
end
redis.call('HINCRBY', KEYS[2], 'enqueued', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'enqueued_chunks', #ARGV - 1)
return #ARGV - 1
