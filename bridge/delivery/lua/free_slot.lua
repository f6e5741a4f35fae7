-- free_slot(slot, waiting, due, key): frees the suspect slot (claim.lua) if `key` holds it, and
-- makes the suspects put back behind it (the set `waiting`) due again now, by Redis's clock:
-- the next suspect runs as soon as the slot is free, not when the freed one's lease would have
-- ended. Only items still in `due` are touched (XX): one delivered or dead meanwhile is not.
local function free_slot(slot, waiting, due, key)
  local held = redis.call('GET', slot)
  if not held or string.sub(held, -#key - 1) ~= ' ' .. key then return end
  redis.call('DEL', slot)
  local clock = redis.call('TIME')
  local now = string.format('%d.%06d', clock[1], clock[2])
  for _, suspect in ipairs(redis.call('SMEMBERS', waiting)) do
    redis.call('ZADD', due, 'XX', now, suspect)
  end
  redis.call('DEL', waiting)
end
