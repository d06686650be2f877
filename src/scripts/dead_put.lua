-- Finish a requeue atomically: new chunks to pending, records that cannot be requeued back to dead, scratch list
-- removed, counters updated (the requeued items are counted as enqueued again, so collect --until-done waits
-- for their new results).
-- KEYS[1] scratch list, KEYS[2] pending list, KEYS[3] dead list, KEYS[4] stats hash
-- ARGV[1] items in the chunks, ARGV[2] of which came from records of chunks that went to dead whole, ARGV[3]
-- number of chunks C, ARGV[4 .. 3+C] chunks, then records kept in dead
-- Redis runs a script with the caller's ACL rights and keeps what it wrote before a refused call: chunks pushed to
-- pending and the scratch list kept would be requeued twice. Every write is checked first.
local function acl_denied(calls) -- the first of calls this user may not make (Redis 7 ACLs), or nil
  for _, c in ipairs(redis.acl_check_cmd and calls or {}) do
    if not redis.acl_check_cmd(unpack(c)) then return c end
  end
end
local no = acl_denied({{'LPUSH', KEYS[2], ''}, {'LPUSH', KEYS[3], ''}, {'DEL', KEYS[1]},
                       {'HINCRBY', KEYS[4], 'f', '1'}})
if no then
  return redis.error_reply('NOPERM this user may not run ' .. no[1] .. ' on ' .. no[2] ..
                           ' (dead_put.lua); nothing moved')
end
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
