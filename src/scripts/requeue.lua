-- Give a chunk back: move it from this worker's processing list to the front of pending (the end workers take
-- from), atomically. Nothing happens if the chunk is no longer ours.
-- KEYS[1] processing list, KEYS[2] pending list, KEYS[3] stats hash
-- ARGV[1] the chunk exactly as fetched
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'requeued_chunks', 1)
return 1
