-- Take up to N of the oldest dead records, and no more bytes than B once one is taken, into a scratch list, for
-- `chunkd requeue`. Nothing is lost if the requeue stops halfway: the records wait in the scratch list (named in
-- its log) until dead_put.lua runs.
-- KEYS[1] dead list, KEYS[2] scratch list
-- ARGV[1] N, ARGV[2] B
-- Returns the number of records taken.
local taken, bytes, most = 0, 0, tonumber(ARGV[2])
for _ = 1, tonumber(ARGV[1]) do
  local record = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not record then break end
  taken = taken + 1
  bytes = bytes + #record
  if bytes >= most then break end
end
return taken
