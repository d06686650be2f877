-- Seal a queue (its input is complete: no more chunks) or open it again, and make sure its stats hash exists, so
-- a sealed queue with nothing enqueued is a queue (status, collect --until-done) and not a typo.
-- KEYS[1] the queue's sealed key, KEYS[2] stats hash
-- ARGV[1] "seal" or "open"
-- Returns an array: whether the queue was sealed before (0 or 1), then stats "enqueued" (the total once sealed).
local was = redis.call('EXISTS', KEYS[1])
if ARGV[1] == 'seal' then
  redis.call('SET', KEYS[1], '1')
else
  redis.call('DEL', KEYS[1])
end
return {was, redis.call('HINCRBY', KEYS[2], 'enqueued', 0)}
