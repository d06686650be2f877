-- The results backlog, read by fetch in the round trip of each fetch and by status: how many result lines the
-- results stream holds and how many bytes they take (the stats hash's results_lines and results_bytes: commit.lua
-- adds each entry it writes, ack.lua takes off each entry it removes), and, when asked, Redis's maxmemory.
-- An entry holds the lines of one commit, so the lines are at least the entries (XLEN): entries written by workers
-- before results_lines existed (one line each) are counted so.
-- A stream with no entries holds no lines: counts left over (entries removed by a collector older than these
-- counts, or by another tool that did not subtract them) are set back to 0 then, so they can only hold fetching
-- back until the collector has emptied the stream.
-- KEYS[1] results stream, KEYS[2] stats hash
-- ARGV[1] '1' to read maxmemory (INFO memory) too
-- Returns {lines, bytes, maxmemory}: maxmemory is -1 when not asked, or the error text when INFO memory is
-- refused (the worker's ACL lacks +info|memory): the caller then takes the fixed default.
local entries = redis.call('XLEN', KEYS[1])
-- HGETALL of the small stats hash rather than HGET: every role that reads the queue's counters may (status runs this
-- as the operator too, whose ACL has HGETALL alone).
local stats, bytes, lines = redis.call('HGETALL', KEYS[2]), 0, 0
for i = 1, #stats - 1, 2 do
  if stats[i] == 'results_bytes' then bytes = tonumber(stats[i + 1]) or 0 end
  if stats[i] == 'results_lines' then lines = tonumber(stats[i + 1]) or 0 end
end
if entries == 0 and (bytes ~= 0 or lines ~= 0) then
  -- pcall: a full Redis refuses even this (OOM); try next time
  redis.pcall('HSET', KEYS[2], 'results_bytes', 0, 'results_lines', 0)
  bytes, lines = 0, 0
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
return {math.max(entries, lines), bytes, maxmemory}
