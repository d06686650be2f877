-- Give a chunk back: move it from this worker's processing list to the front of pending (the end workers take
-- from), atomically. Nothing happens if the chunk is no longer ours. A drain is not a failed delivery, so the
-- chunk's delivery count goes back down (--max-deliveries counts only workers that died holding it).
-- KEYS[1] processing list, KEYS[2] pending list, KEYS[3] stats hash, KEYS[4] deliveries hash
-- ARGV[1] the chunk exactly as fetched, ARGV[2] its checkpoint name (id:hash; '' when it has none)
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'requeued_chunks', 1)
if ARGV[2] ~= '' and redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[4], ARGV[2], -1)
end
return 1
