-- Move up to N chunks from the right of pending to the left of this worker's processing list, in one atomic step
-- per chunk (a chunk is always in exactly one list), and refuse the ones larger than --max-chunk-bytes before the
-- worker reads them: such a chunk goes from pending straight to the dead list, whole, as
-- {"error":"...","bytes":B,"items":K,"raw":"<the chunk text>"}, so its items can be requeued. K counts the
-- entries ('{"id":'; exact for chunks that enqueue built) and is added to stats dead_chunk_items, which
-- collect --until-done counts as finished.
-- KEYS[1] pending list, KEYS[2] processing list, KEYS[3] dead list, KEYS[4] stats hash, KEYS[5] the queue's paused
-- key (chunkd pause)
-- ARGV[1] N, ARGV[2] --max-chunk-bytes
-- Returns an array: the chunks moved, oldest first, then one integer: how many chunks went to dead; or, while the
-- queue is paused, the status reply PAUSED, moving nothing.
-- Redis runs a script with the caller's ACL rights and keeps what it wrote before a refused call: a user that may
-- RPOP pending but not LPUSH the processing list would lose the chunk. Every write is checked first.
local function acl_denied(calls) -- the first of calls this user may not make (Redis 7 ACLs), or nil
  for _, c in ipairs(redis.acl_check_cmd and calls or {}) do
    if not redis.acl_check_cmd(unpack(c)) then return c end
  end
end
local no = acl_denied({{'RPOP', KEYS[1]}, {'LPUSH', KEYS[2], ''}, {'LPUSH', KEYS[3], ''},
                       {'HINCRBY', KEYS[4], 'f', '1'}})
if no then
  return redis.error_reply('NOPERM this user may not run ' .. no[1] .. ' on ' .. no[2] .. ' (fetch.lua); nothing moved')
end
if redis.call('EXISTS', KEYS[5]) == 1 then return redis.status_reply('PAUSED') end
local n, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local out, refused = {}, 0
for _ = 1, n do
  local chunk = redis.call('RPOP', KEYS[1])
  if not chunk then break end
  if #chunk > cap then
    local items, at = 0, 1
    while true do
      local found = string.find(chunk, '{"id":', at, true)
      if not found then break end
      items = items + 1
      at = found + 6
    end
    local why = 'chunk of ' .. #chunk .. ' bytes is larger than --max-chunk-bytes ' .. ARGV[2] ..
                '; moved to dead unread'
    redis.call('LPUSH', KEYS[3], '{"error":' .. cjson.encode(why) .. ',"bytes":' .. #chunk .. ',"items":' ..
               items .. ',"raw":' .. cjson.encode(chunk) .. '}')
    redis.call('HINCRBY', KEYS[4], 'dead_chunks', 1)
    redis.call('HINCRBY', KEYS[4], 'dead_chunk_items', items)
    refused = refused + 1
  else
    redis.call('LPUSH', KEYS[2], chunk)
    out[#out + 1] = chunk
  end
end
out[#out + 1] = refused
return out
