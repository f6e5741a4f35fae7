-- redis_now(): Redis's own clock, in seconds with microseconds, as text: every score, lease and
-- due time comes from it, never from the host that calls the script (a worker whose clock
-- runs ahead would otherwise see live leases as run out, and take their items again).
local function redis_now()
  local clock = redis.call('TIME')
  return string.format('%d.%06d', clock[1], clock[2])
end
