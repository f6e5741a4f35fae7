-- KEYS: item, due, seen, stats, undelivered, the broker queue (Celery's list in Redis), the
--       story's events (bridge/delivery/story.py), the story's ids (0 or more).
-- ARGV: now (replaced by Redis's clock), seen_ttl, accepted_stat, duplicate_stat, publish grace
--       (seconds; '0': nobody publishes it, the sweeper will), backlog (tasks waiting in the
--       queue from which the sweeper batches new items), story entry (JSON; '' none), '1' to
--       tell a duplicate too, events kept, memory count n, customer pointer count c, n memory
--       triples (the last c of them customer pointers), field, value, ...
-- Records the item in one atomic step. Returns 0 for a duplicate, 1 when the caller is to
-- publish its Celery task next, 2 when the sweeper will (due now). Published by the caller, it
-- is recorded as such (`queued`) and due only when the grace runs out: the sweeper then
-- publishes it again if no task took it (a crash between this script and the publish). While
-- `backlog` tasks wait already, workers are all busy: the sweeper's batches of due items then
-- serve them better than a task for each item (an attempt thread each, not a pool process).
-- What the conversion leaves to remember (bridge/delivery/memory.py) is written on a duplicate
-- too, so a resend or a catch-up of an event recorded before memory existed fills it in; but a
-- duplicate's customer pointers only where there are none: a resend of an older sale must not
-- take the customer back from a newer one.
-- Uses remember (remember.lua) and redis_now (redis_now.lua).
-- The story's entry gets its outcome here; its ids name the item (the story is its externalId).
local function tell(outcome)
  if ARGV[7] == '' then return end
  redis.call('RPUSH', KEYS[7], string.sub(ARGV[7], 1, -2) .. ',"outcome":"' .. outcome .. '"}')
  redis.call('LTRIM', KEYS[7], -tonumber(ARGV[9]), -1)
  redis.call('EXPIRE', KEYS[7], ARGV[2])
  local story = string.sub(KEYS[1], 9)
  for i = 8, #KEYS do redis.call('SET', KEYS[i], story, 'EX', ARGV[2]) end
end
ARGV[1] = redis_now()
-- A message told in a story marks itself seen with the story's name: its event id finds it.
local seen_as = ARGV[7] ~= '' and string.sub(KEYS[1], 9) or '1'
local remembered, customers = tonumber(ARGV[10]), tonumber(ARGV[11])
local pointers = 12 + 3 * (remembered - customers)
remember(ARGV, 12, remembered - customers, false, ARGV[1])
local fields = 12 + 3 * remembered
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  remember(ARGV, pointers, customers, true, ARGV[1])
  if ARGV[8] == '1' then tell('duplicate') end
  redis.call('SET', KEYS[3], seen_as, 'EX', ARGV[2])
  if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[4], 1) end
  return 0
end
remember(ARGV, pointers, customers, false, ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', 0, 'token', '',
  'created_at', ARGV[1], 'window_start', ARGV[1], 'next_due', ARGV[1], unpack(ARGV, fields))
local due, publish = ARGV[1], 2
if tonumber(ARGV[5]) > 0 and redis.call('LLEN', KEYS[6]) < tonumber(ARGV[6]) then
  due, publish = string.format('%.6f', tonumber(ARGV[1]) + tonumber(ARGV[5])), 1
  redis.call('HSET', KEYS[1], 'queued', ARGV[1])
end
redis.call('ZADD', KEYS[2], due, KEYS[1])
redis.call('ZADD', KEYS[5], ARGV[1], KEYS[1])
redis.call('SET', KEYS[3], seen_as, 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[3], 1) end
tell('accepted')
return publish
