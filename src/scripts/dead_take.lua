-- Take up to N of the oldest dead records into a scratch list, for `chunkd requeue`. Nothing is lost if the
-- requeue stops halfway: the records wait in the scratch list (named in its log) until dead_put.lua runs.
-- KEYS[1] dead list, KEYS[2] scratch list
-- ARGV[1] N
-- Returns the number of records taken.
local taken = 0
for i = 1, tonumber(ARGV[1]) do
  if not redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) then break end
  taken = taken + 1
end
return taken
