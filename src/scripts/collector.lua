-- The marker of a running collector's consumer name, so that two collectors never read the results stream under
-- one name (they would split the results between their outputs). The marker is a string holding the collector's
-- token, with an expiry that the running collector renews; a collector that died frees the name when it expires.
-- KEYS[1] the marker, chunkd:{Q}:collector:<consumer>
-- ARGV[1] this collector's token, ARGV[2] the expiry in ms, or '0' to give the marker up
-- Returns {1} when this collector holds the marker (taken, renewed, or taken again after it expired) or gave it
-- up; {0, holder's token, its remaining ms} when another collector holds it (collect.c: COLLECT_MARKER_HELD is 1).
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '0' then
  if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return {1}
end
if holder and holder ~= ARGV[1] then
  return {0, holder, redis.call('PTTL', KEYS[1])}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1}
