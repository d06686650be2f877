-- Give back every chunk in this worker's processing list, oldest first to the end of pending workers take from.
-- Called only when the worker holds nothing, so everything in the list is orphaned: a move whose reply was lost
-- with the connection (Redis ran it, the worker never saw the chunk).
-- KEYS[1] processing list, KEYS[2] pending list, KEYS[3] stats hash
-- Returns the number of chunks moved.
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
if moved > 0 then redis.call('HINCRBY', KEYS[3], 'requeued_chunks', moved) end
return moved
