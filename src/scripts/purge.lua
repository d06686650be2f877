-- chunkd purge: drop every chunk of the pending list, in one atomic step, and take their items out of the counts, so
-- status and collect --until-done see the queue finished once what was running is done. Results, the dead list
-- and the other counters stay. Items are counted as fetch.lua counts a refused chunk's ('{"id":').
-- KEYS[1] pending list, KEYS[2] stats hash
-- Returns {chunks dropped, items dropped}.
-- Every write's right is checked first (see fetch.lua): a refused HINCRBY after the DEL would lose the counts.
local function acl_denied(calls) -- the first of calls this user may not make (Redis 7 ACLs), or nil
  for _, c in ipairs(redis.acl_check_cmd and calls or {}) do
    if not redis.acl_check_cmd(unpack(c)) then return c end
  end
end
local no = acl_denied({{'DEL', KEYS[1]}, {'HINCRBY', KEYS[2], 'f', '1'}})
if no then
  return redis.error_reply('NOPERM this user may not run ' .. no[1] .. ' on ' .. no[2] .. ' (purge.lua); nothing purged')
end
local chunks, items = 0, 0
for _, chunk in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  chunks = chunks + 1
  local at = 1
  while true do
    local found = string.find(chunk, '{"id":', at, true)
    if not found then break end
    items = items + 1
    at = found + 6
  end
end
if chunks > 0 then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'enqueued', -items)
  redis.call('HINCRBY', KEYS[2], 'enqueued_chunks', -chunks)
  redis.call('HINCRBY', KEYS[2], 'purged', items)
  redis.call('HINCRBY', KEYS[2], 'purged_chunks', chunks)
end
return {chunks, items}
