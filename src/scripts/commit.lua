-- Commit finished items of one chunk: fencing, results, dead copies, checkpoint and counters in one atomic step.
-- The chunk must still be in this worker's processing list, or nothing is written: another worker or the reaper
-- took it, and a result must never be written twice. A partial commit ('p') checks with LPOS and leaves the chunk
-- there; the final one ('f') removes it with LREM, and a dead chunk ('x') goes to the dead list.
-- When ARGV[4] is '1' each item sets its bit in the chunk's checkpoint (KEYS[5]) and is written only if the bit
-- was clear, so a partial commit retried after a lost reply writes nothing twice, and a redelivered chunk's worker
-- knows which items are done. Without partial commits or an earlier delivery the bitmap is skipped (LREM fences).
-- KEYS[1] processing list, KEYS[2] results stream, KEYS[3] stats hash, KEYS[4] dead list, KEYS[5] checkpoint
-- bitmap, KEYS[6] deliveries hash
-- ARGV[1] the chunk exactly as fetched, ARGV[2] mode 'p', 'f' or 'x', ARGV[3] chunk id, ARGV[4] '1' to use the
-- checkpoint, ARGV[5] items N, then 4 per item: index in the chunk, '1' when ok, result line, dead record or '';
-- for 'x', ARGV[6] the chunk's dead record.
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
if mode == 'p' then
  if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
elseif redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
if mode == 'x' then
  redis.call('LPUSH', KEYS[4], ARGV[6])
  redis.call('HINCRBY', KEYS[3], 'dead_chunks', 1)
  return 1
end
local bits = ARGV[4] == '1'
local n = tonumber(ARGV[5])
local n_ok, n_failed, n_dead = 0, 0, 0
for i = 0, n - 1 do
  local a = 6 + 4 * i
  if not bits or redis.call('SETBIT', KEYS[5], tonumber(ARGV[a]), 1) == 0 then
    redis.call('XADD', KEYS[2], '*', 'r', ARGV[a + 2])
    if ARGV[a + 1] == '1' then n_ok = n_ok + 1 else n_failed = n_failed + 1 end
    if ARGV[a + 3] ~= '' then
      redis.call('LPUSH', KEYS[4], ARGV[a + 3])
      n_dead = n_dead + 1
    end
  end
end
if n_ok > 0 then redis.call('HINCRBY', KEYS[3], 'done', n_ok) end
if n_failed > 0 then redis.call('HINCRBY', KEYS[3], 'failed', n_failed) end
if n_dead > 0 then redis.call('HINCRBY', KEYS[3], 'dead', n_dead) end
if mode == 'f' then
  redis.call('HINCRBY', KEYS[3], 'chunks_done', 1)
  if bits then redis.call('DEL', KEYS[5]) end
  redis.call('HDEL', KEYS[6], ARGV[3])
end
return 1
