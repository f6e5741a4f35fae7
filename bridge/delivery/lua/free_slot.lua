-- free_slot(slot, waiting, due, key): frees the suspect slot (claim.lua) if `key` holds it, and
-- makes one of the suspects put back behind it (the set `waiting`) due again now, by Redis's
-- clock: the next suspect runs as soon as the slot is free, not when the freed one's lease
-- would have ended. Only an item still in `due` is touched (XX): one delivered or dead
-- meanwhile is passed over. The others come due when that lease would have ended, and wait
-- again behind whichever holds the slot then.
local function free_slot(slot, waiting, due, key)
  local held = redis.call('GET', slot)
  if not held or string.sub(held, -#key - 1) ~= ' ' .. key then return end
  redis.call('DEL', slot)
  local clock = redis.call('TIME')
  local now = string.format('%d.%06d', clock[1], clock[2])
  while true do
    local suspect = redis.call('SPOP', waiting)
    if not suspect or redis.call('ZADD', due, 'XX', 'CH', now, suspect) == 1 then return end
  end
end
