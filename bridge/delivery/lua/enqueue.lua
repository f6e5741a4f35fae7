-- KEYS: item, due, seen, stats, undelivered, queue, nudges, listeners, bell prefix.
-- ARGV: now (replaced by Redis's clock), seen_ttl, accepted_stat, duplicate_stat, nudge_id, nudge_tag, max_nudges,
--       bell_ttl_ms, memory count n, customer pointer count c, n memory triples (the last c
--       of them customer pointers), field, value, ...
-- Records the item, due now, and wakes a worker for it, in one atomic step: a listener waiting
-- for work (registered by lua/claim.lua, unexpired) is taken off the list and its bell rung;
-- with none waiting, a nudge is queued unless enough are queued already. Each listener has a
-- bell of its own (the prefix and its token), so the one taken off the list is the one woken.
-- That key is named here, not passed in: refbridge runs on one Redis, not a cluster.
-- What the conversion leaves to remember (bridge/delivery/memory.py) is written on a duplicate
-- too, so a resend or a catch-up of an event recorded before memory existed fills it in; but a
-- duplicate's customer pointers only where there are none: a resend of an older sale must not
-- take the customer back from a newer one.
-- Uses nudge_message (nudge_message.lua), remember (remember.lua) and redis_now (redis_now.lua).
ARGV[1] = redis_now()
local remembered, customers = tonumber(ARGV[9]), tonumber(ARGV[10])
local pointers = 11 + 3 * (remembered - customers)
remember(ARGV, 11, remembered - customers, false, ARGV[1])
local fields = 11 + 3 * remembered
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  remember(ARGV, pointers, customers, true, ARGV[1])
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[4], 1) end
  return 0
end
remember(ARGV, pointers, customers, false, ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', 0, 'token', '',
  'created_at', ARGV[1], 'window_start', ARGV[1], 'next_due', ARGV[1], unpack(ARGV, fields))
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
redis.call('ZADD', KEYS[5], ARGV[1], KEYS[1])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[3], 1) end
redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', ARGV[1])
local rung = redis.call('ZPOPMAX', KEYS[8])
if #rung > 0 then
  local bell = KEYS[9] .. rung[1]
  redis.call('LPUSH', bell, '1')
  redis.call('PEXPIRE', bell, ARGV[8])
elseif tonumber(redis.call('GET', KEYS[7]) or '0') < tonumber(ARGV[7]) then
  redis.call('INCR', KEYS[7])
  redis.call('LPUSH', KEYS[6], nudge_message(ARGV[5], ARGV[6]))
end
return 1
