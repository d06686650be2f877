-- Reap one worker whose lease expired: its processing list goes back to the front of pending (oldest chunk taken
-- first), its slots of --max-inflight-global are returned and it leaves the workers set. Nothing happens while its
-- lease exists.
-- KEYS[1] the worker's lease, KEYS[2] its processing list, KEYS[3] pending list, KEYS[4] workers set, KEYS[5] stats,
-- KEYS[6] the inflight hash (worker id -> slots held)
-- ARGV[1] the worker id
-- Returns the number of chunks moved, or -1 when the lease is alive.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
if moved > 0 then
  redis.call('HINCRBY', KEYS[5], 'reaped_chunks', moved)
end
redis.call('HINCRBY', KEYS[5], 'reaped_workers', 1)
return moved
