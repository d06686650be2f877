-- Commit finished items of one chunk: fencing, results, dead copies, checkpoint and counters in one atomic step.
-- The chunk must still be in this worker's processing list, or nothing is written: another worker or the reaper
-- took it, and a result must never be written twice. A partial commit ('p') checks with LPOS and leaves the chunk
-- there; the final one ('f') removes it with LREM, and a dead chunk ('x') goes to the dead list. A requeue ('r') is
-- a final commit that gives the chunk back to the front of pending instead, keeping its checkpoint: the worker sends
-- it when partial commits it made before its Redis master changed (a failover) may be lost, so that the chunk's next
-- delivery runs the items whose bits the new master lacks.
-- When ARGV[4] is '1' each item sets its bit in the chunk's checkpoint (KEYS[5]) and is written only if the bit
-- was clear, so a partial commit retried after a lost reply writes nothing twice, and a redelivered chunk's worker
-- knows which items are done. Without partial commits or an earlier delivery the bitmap is skipped (LREM fences).
-- KEYS[1] processing list, KEYS[2] results stream, KEYS[3] stats hash, KEYS[4] dead list, KEYS[5] checkpoint
-- bitmap, KEYS[6] deliveries hash, KEYS[7] pending list ('r')
-- ARGV[1] the chunk exactly as fetched, ARGV[2] mode 'p', 'f', 'x' or 'r', ARGV[3] the chunk's checkpoint name (id:hash), ARGV[4] '1' to use the
-- checkpoint, ARGV[5] result lines N, ARGV[6] of which ok, ARGV[7] dead records D, then the N lines, the D dead
-- records, and with the checkpoint N tags, one per line: 'o' (ok), 'f' (failed) or 'd' (failed, with the next
-- dead record) followed by the item's index in the chunk. For 'x' the one dead record is the chunk's.
-- The lines written go into one stream entry (or one per MiB of them), field 'b', separated by '\n' (a result line
-- never holds a raw newline: result.c). The stats hash's results_bytes grows by the entry's length and results_lines by its lines
-- (ack.lua takes off what it removes): the results backlog, which fetching is paused on (backlog.lua).
-- Replies: 1 written, 0 fenced (nothing written), 2 a final commit without the checkpoint while one exists.
-- The names below are shared with src/commit_script.h, which commit.c uses: tests/unit/test_commit_script.c
-- checks that both carry the same values.
local COMMIT_KEY_PROCESSING = 1
local COMMIT_KEY_RESULTS = 2
local COMMIT_KEY_STATS = 3
local COMMIT_KEY_DEAD = 4
local COMMIT_KEY_CHECKPOINT = 5
local COMMIT_KEY_DELIVERIES = 6
local COMMIT_KEY_PENDING = 7
local COMMIT_ARG_CHUNK = 1
local COMMIT_ARG_MODE = 2
local COMMIT_ARG_CKPT_NAME = 3
local COMMIT_ARG_USE_CKPT = 4
local COMMIT_ARG_N = 5
local COMMIT_ARG_N_OK = 6
local COMMIT_ARG_N_DEAD = 7
local COMMIT_N_HEAD_ARGS = 7
local COMMIT_MODE_PARTIAL = 'p'
local COMMIT_MODE_FINAL = 'f'
local COMMIT_MODE_DEAD = 'x'
local COMMIT_MODE_REQUEUE = 'r'
local COMMIT_CKPT_ON = '1'
local COMMIT_TAG_OK = 'o'
local COMMIT_TAG_DEAD = 'd'
local COMMIT_REPLY_FENCED = 0
local COMMIT_REPLY_OK = 1
local COMMIT_REPLY_CKPT_EXISTS = 2
local entry_max = 1048576 -- a stream entry takes lines up to this many bytes (or one line, if larger)
local processing, results, stats = KEYS[COMMIT_KEY_PROCESSING], KEYS[COMMIT_KEY_RESULTS], KEYS[COMMIT_KEY_STATS]
local dead, checkpoint, deliveries = KEYS[COMMIT_KEY_DEAD], KEYS[COMMIT_KEY_CHECKPOINT], KEYS[COMMIT_KEY_DELIVERIES]
local pending = KEYS[COMMIT_KEY_PENDING]
local chunk, mode, ckpt_name = ARGV[COMMIT_ARG_CHUNK], ARGV[COMMIT_ARG_MODE], ARGV[COMMIT_ARG_CKPT_NAME]
local bits = ARGV[COMMIT_ARG_USE_CKPT] == COMMIT_CKPT_ON
-- Redis does not roll a script back when a command fails half way, so check everything that could fail before
-- the first write: keys of the wrong type (someone overwrote them) make the whole commit fail untouched.
local function type_ok(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want
end
if not (type_ok(processing, 'list') and type_ok(results, 'stream') and type_ok(stats, 'hash') and
        type_ok(dead, 'list') and type_ok(checkpoint, 'string') and type_ok(deliveries, 'hash') and
        type_ok(pending, 'list')) then
  return redis.error_reply('WRONGTYPE a key of this queue has the wrong type; nothing was committed')
end
-- Nor can a call the user's ACL refuses (Redis runs a script with the caller's rights): with LREM allowed and XADD
-- refused, a final commit would remove the chunk and write no result. Every write is checked first.
local function acl_denied(calls) -- the first of calls this user may not make (Redis 7 ACLs), or nil
  for _, c in ipairs(redis.acl_check_cmd and calls or {}) do
    if not redis.acl_check_cmd(unpack(c)) then return c end
  end
end
local no = acl_denied({{'LREM', processing, '0', ''}, {'XADD', results, '*', 'b', ''}, {'LPUSH', dead, ''},
                       {'HINCRBY', stats, 'f', '1'}, {'SETBIT', checkpoint, '0', '1'}, {'DEL', checkpoint},
                       {'HDEL', deliveries, ''}, {'RPUSH', pending, ''}, {'HINCRBY', deliveries, 'f', '1'}})
if no then
  return redis.error_reply('NOPERM this user may not run ' .. no[1] .. ' on ' .. no[2] ..
                           ' (commit.lua); nothing was committed')
end
-- A final commit sent without the checkpoint while one exists (another delivery of the same chunk text wrote it:
-- this worker lost the chunk to the reaper and fetched it again) must use it, or it would write items twice.
-- Nothing is written; the worker sends it again with the checkpoint.
if mode == COMMIT_MODE_FINAL and not bits and redis.call('EXISTS', checkpoint) == 1 then
  return COMMIT_REPLY_CKPT_EXISTS
end
if mode == COMMIT_MODE_PARTIAL then
  if not redis.call('LPOS', processing, chunk) then return COMMIT_REPLY_FENCED end
elseif redis.call('LREM', processing, -1, chunk) == 0 then
  return COMMIT_REPLY_FENCED
end
local n, n_ok = tonumber(ARGV[COMMIT_ARG_N]), tonumber(ARGV[COMMIT_ARG_N_OK])
local n_dead = tonumber(ARGV[COMMIT_ARG_N_DEAD])
local lines, deads = COMMIT_N_HEAD_ARGS, COMMIT_N_HEAD_ARGS + n
if mode == COMMIT_MODE_DEAD then
  redis.call('LPUSH', dead, ARGV[deads + 1])
  redis.call('HINCRBY', stats, 'dead_chunks', 1)
  return COMMIT_REPLY_OK
end
local out = {} -- the result lines this call writes
if bits then
  -- Only items whose bit was clear are written: the rest are in the stream already.
  local tags, d = deads + n_dead, 0
  n_ok, n_dead = 0, 0
  for i = 1, n do
    local tag = ARGV[tags + i]
    local kind = string.sub(tag, 1, 1)
    if kind == COMMIT_TAG_DEAD then d = d + 1 end
    if redis.call('SETBIT', checkpoint, tonumber(string.sub(tag, 2)), 1) == 0 then
      out[#out + 1] = ARGV[lines + i]
      if kind == COMMIT_TAG_OK then n_ok = n_ok + 1 end
      if kind == COMMIT_TAG_DEAD then
        redis.call('LPUSH', dead, ARGV[deads + d])
        n_dead = n_dead + 1
      end
    end
  end
else
  for i = 1, n do out[i] = ARGV[lines + i] end
  for i = 1, n_dead do redis.call('LPUSH', dead, ARGV[deads + i]) end
end
n = #out
if n > 0 then
  -- One entry for the lines of this call (a stream entry, and the collector's read, acknowledgement and deletion
  -- of it, cost Redis about as much for 100 lines as for one), or one per entry_max bytes of them when they are
  -- large, so that neither this script nor a collector's read holds a whole chunk's large results at once.
  local from, size, bytes = 1, 0, 0
  for i = 1, n + 1 do
    if i > n or (size > 0 and size + #out[i] > entry_max) then
      local entry = table.concat(out, '\n', from, i - 1)
      redis.call('XADD', results, '*', 'b', entry)
      bytes = bytes + #entry
      from, size = i, 0
    end
    if i <= n then size = size + #out[i] + 1 end
  end
  redis.call('HINCRBY', stats, 'results_bytes', bytes)
  redis.call('HINCRBY', stats, 'results_lines', n)
end
if n_ok > 0 then redis.call('HINCRBY', stats, 'done', n_ok) end
if n > n_ok then redis.call('HINCRBY', stats, 'failed', n - n_ok) end
if n_dead > 0 then redis.call('HINCRBY', stats, 'dead', n_dead) end
if mode == COMMIT_MODE_FINAL then
  redis.call('HINCRBY', stats, 'chunks_done', 1)
  if bits then redis.call('DEL', checkpoint) end
  redis.call('HDEL', deliveries, ckpt_name)
elseif mode == COMMIT_MODE_REQUEUE then
  -- As requeue.lua: to the end workers take from; not a failed delivery, so the count goes back down.
  redis.call('RPUSH', pending, chunk)
  redis.call('HINCRBY', stats, 'requeued_chunks', 1)
  if redis.call('HEXISTS', deliveries, ckpt_name) == 1 then redis.call('HINCRBY', deliveries, ckpt_name, -1) end
end
return COMMIT_REPLY_OK
