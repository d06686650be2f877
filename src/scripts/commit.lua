-- Commit one chunk: fencing, results, dead copies and counters in one atomic step.
-- The chunk must still be in this worker's processing list: LREM both checks and removes it. If it is gone
-- (another worker or a reaper took it), nothing is written, so a result is never written twice and a retried
-- commit after a lost reply is harmless.
-- KEYS[1] processing list, KEYS[2] results stream, KEYS[3] stats hash, KEYS[4] dead list
-- ARGV[1] the chunk exactly as fetched, ARGV[2] results count R, ARGV[3] of which ok, ARGV[4] dead records D,
-- ARGV[5] 1 when the chunk itself is dead (unparseable), ARGV[6 .. 5+R] result lines, then D dead records
-- Redis does not roll a script back when a command fails half way, so check everything that could fail before
-- the first write: keys of the wrong type (someone overwrote them) make the whole commit fail untouched.
local function type_ok(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want
end
if not (type_ok(KEYS[1], 'list') and type_ok(KEYS[2], 'stream') and type_ok(KEYS[3], 'hash') and
        type_ok(KEYS[4], 'list')) then
  return redis.error_reply('WRONGTYPE a key of this queue has the wrong type; nothing was committed')
end
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then
  return 0
end
local n_results = tonumber(ARGV[2])
local n_ok = tonumber(ARGV[3])
local n_dead = tonumber(ARGV[4])
for i = 6, 5 + n_results do
  redis.call('XADD', KEYS[2], '*', 'r', ARGV[i])
end
for i = 6 + n_results, 5 + n_results + n_dead do
  redis.call('LPUSH', KEYS[4], ARGV[i])
end
if n_ok > 0 then redis.call('HINCRBY', KEYS[3], 'done', n_ok) end
if n_results > n_ok then redis.call('HINCRBY', KEYS[3], 'failed', n_results - n_ok) end
if ARGV[5] == '1' then
  redis.call('HINCRBY', KEYS[3], 'dead_chunks', 1)
else
  redis.call('HINCRBY', KEYS[3], 'chunks_done', 1)
  if n_dead > 0 then redis.call('HINCRBY', KEYS[3], 'dead', n_dead) end
end
return 1
