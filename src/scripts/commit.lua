-- Commit finished items of one chunk: fencing, results, dead copies, checkpoint and counters in one atomic step.
-- The chunk must still be in this worker's processing list, or nothing is written: another worker or the reaper
-- took it, and a result must never be written twice. A partial commit ('p') checks with LPOS and leaves the chunk
-- there; the final one ('f') removes it with LREM, and a dead chunk ('x') goes to the dead list.
-- When ARGV[4] is '1' each item sets its bit in the chunk's checkpoint (KEYS[5]) and is written only if the bit
-- was clear, so a partial commit retried after a lost reply writes nothing twice, and a redelivered chunk's worker
-- knows which items are done. Without partial commits or an earlier delivery the bitmap is skipped (LREM fences).
-- KEYS[1] processing list, KEYS[2] results stream, KEYS[3] stats hash, KEYS[4] dead list, KEYS[5] checkpoint
-- bitmap, KEYS[6] deliveries hash
-- ARGV[1] the chunk exactly as fetched, ARGV[2] mode 'p', 'f' or 'x', ARGV[3] the chunk's checkpoint name (id:hash), ARGV[4] '1' to use the
-- checkpoint, ARGV[5] result lines N, ARGV[6] of which ok, ARGV[7] dead records D, then the N lines, the D dead
-- records, and with the checkpoint N tags, one per line: 'o' (ok), 'f' (failed) or 'd' (failed, with the next
-- dead record) followed by the item's index in the chunk. For 'x' the one dead record is the chunk's.
-- Redis does not roll a script back when a command fails half way, so check everything that could fail before
-- the first write: keys of the wrong type (someone overwrote them) make the whole commit fail untouched.
local function type_ok(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want
end
if not (type_ok(KEYS[1], 'list') and type_ok(KEYS[2], 'stream') and type_ok(KEYS[3], 'hash') and
        type_ok(KEYS[4], 'list') and type_ok(KEYS[5], 'string') and type_ok(KEYS[6], 'hash')) then
  return redis.error_reply('WRONGTYPE a key of this queue has the wrong type; nothing was committed')
end
local mode = ARGV[2]
-- A final commit sent without the checkpoint while one exists (another delivery of the same chunk text wrote it:
-- this worker lost the chunk to the reaper and fetched it again) must use it, or it would write items twice.
-- Nothing is written; the worker sends it again with the checkpoint.
if mode == 'f' and ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[5]) == 1 then
  return 2
end
if mode == 'p' then
  if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
elseif redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
local n, n_ok, n_dead = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local lines, deads = 7, 7 + n
if mode == 'x' then
  redis.call('LPUSH', KEYS[4], ARGV[deads + 1])
  redis.call('HINCRBY', KEYS[3], 'dead_chunks', 1)
  return 1
end
local bits = ARGV[4] == '1'
if bits then
  -- Only items whose bit was clear are written: the rest are in the stream already.
  local tags, d = deads + n_dead, 0
  n_ok, n_dead = 0, 0
  local n_written = 0
  for i = 1, n do
    local tag = ARGV[tags + i]
    local kind = string.sub(tag, 1, 1)
    if kind == 'd' then d = d + 1 end
    if redis.call('SETBIT', KEYS[5], tonumber(string.sub(tag, 2)), 1) == 0 then
      redis.call('XADD', KEYS[2], '*', 'r', ARGV[lines + i])
      n_written = n_written + 1
      if kind == 'o' then n_ok = n_ok + 1 end
      if kind == 'd' then
        redis.call('LPUSH', KEYS[4], ARGV[deads + d])
        n_dead = n_dead + 1
      end
    end
  end
  n = n_written
else
  for i = 1, n do redis.call('XADD', KEYS[2], '*', 'r', ARGV[lines + i]) end
  for i = 1, n_dead do redis.call('LPUSH', KEYS[4], ARGV[deads + i]) end
end
if n_ok > 0 then redis.call('HINCRBY', KEYS[3], 'done', n_ok) end
if n > n_ok then redis.call('HINCRBY', KEYS[3], 'failed', n - n_ok) end
if n_dead > 0 then redis.call('HINCRBY', KEYS[3], 'dead', n_dead) end
if mode == 'f' then
  redis.call('HINCRBY', KEYS[3], 'chunks_done', 1)
  if bits then redis.call('DEL', KEYS[5]) end
  redis.call('HDEL', KEYS[6], ARGV[3])
end
return 1
