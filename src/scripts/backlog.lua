-- The results backlog, read by fetch in the round trip of each fetch and by status: how many entries the results
-- stream holds and how many bytes their result lines take (the stats hash's results_bytes: commit.lua adds each
-- line it writes, ack.lua takes off each line it removes), and, when asked, Redis's maxmemory.
-- A stream with no entries holds no bytes: a count left over (entries removed by a collector older than
-- results_bytes, or by another tool that did not subtract them) is set back to 0 then, so it can only hold fetching
-- back until the collector has emptied the stream.
-- KEYS[1] results stream, KEYS[2] stats hash
-- ARGV[1] '1' to read maxmemory (INFO memory) too
-- Returns {entries, bytes, maxmemory}: maxmemory is -1 when not asked, or the error text when INFO memory is
-- refused (the worker's ACL lacks +info|memory): the caller then takes the fixed default.
local entries = redis.call('XLEN', KEYS[1])
-- HGETALL of the small stats hash rather than HGET: every role that reads the queue's counters may (status runs this
-- as the operator too, whose ACL has HGETALL alone).
local stats, bytes = redis.call('HGETALL', KEYS[2]), 0
for i = 1, #stats - 1, 2 do
  if stats[i] == 'results_bytes' then bytes = tonumber(stats[i + 1]) or 0 end
end
if entries == 0 and bytes ~= 0 then
  redis.pcall('HSET', KEYS[2], 'results_bytes', 0) -- pcall: a full Redis refuses even this (OOM); try next time
  bytes = 0
end
local maxmemory = -1
if ARGV[1] == '1' then
  local info = redis.pcall('INFO', 'memory')
  if type(info) == 'table' then
    maxmemory = info['err'] or 'INFO memory failed'
  else
    maxmemory = tonumber(string.match(info, 'maxmemory:(%d+)') or '0')
  end
end
return {entries, bytes, maxmemory}
