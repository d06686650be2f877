-- Give a chunk back: move it from this worker's processing list to the front of pending (the end workers take
-- from), atomically. Nothing happens if the chunk is no longer ours. A drain is not a failed delivery, so the
-- chunk's delivery count goes back down (--max-deliveries counts only workers that died holding it).
-- KEYS[1] processing list, KEYS[2] pending list, KEYS[3] stats hash, KEYS[4] deliveries hash
-- ARGV[1] the chunk exactly as fetched, ARGV[2] its checkpoint name (id:hash; '' when it has none)
-- Replies: 1 moved, 0 no longer ours (nothing happened).
-- The names below are shared with src/commit_script.h, which commit.c uses: tests/unit/test_commit_script.c
-- checks that both carry the same values.
local REQUEUE_KEY_PROCESSING = 1
local REQUEUE_KEY_PENDING = 2
local REQUEUE_KEY_STATS = 3
local REQUEUE_KEY_DELIVERIES = 4
local REQUEUE_ARG_CHUNK = 1
local REQUEUE_ARG_CKPT_NAME = 2
local REQUEUE_REPLY_GONE = 0
local REQUEUE_REPLY_OK = 1
local processing, pending = KEYS[REQUEUE_KEY_PROCESSING], KEYS[REQUEUE_KEY_PENDING]
local stats, deliveries = KEYS[REQUEUE_KEY_STATS], KEYS[REQUEUE_KEY_DELIVERIES]
local chunk, ckpt_name = ARGV[REQUEUE_ARG_CHUNK], ARGV[REQUEUE_ARG_CKPT_NAME]
-- Redis runs a script with the caller's ACL rights and keeps what it wrote before a refused call: LREM allowed and
-- RPUSH refused would lose the chunk. Every write is checked first.
local function acl_denied(calls) -- the first of calls this user may not make (Redis 7 ACLs), or nil
  for _, c in ipairs(redis.acl_check_cmd and calls or {}) do
    if not redis.acl_check_cmd(unpack(c)) then return c end
  end
end
local no = acl_denied({{'LREM', processing, '0', ''}, {'RPUSH', pending, ''}, {'HINCRBY', stats, 'f', '1'},
                       {'HINCRBY', deliveries, 'f', '1'}})
if no then
  return redis.error_reply('NOPERM this user may not run ' .. no[1] .. ' on ' .. no[2] ..
                           ' (requeue.lua); nothing moved')
end
if redis.call('LREM', processing, -1, chunk) == 0 then
  return REQUEUE_REPLY_GONE
end
redis.call('RPUSH', pending, chunk)
redis.call('HINCRBY', stats, 'requeued_chunks', 1)
if ckpt_name ~= '' and redis.call('HEXISTS', deliveries, ckpt_name) == 1 then
  redis.call('HINCRBY', deliveries, ckpt_name, -1)
end
return REQUEUE_REPLY_OK
