-- KEYS: due, the broker queue (Celery's list in Redis).
-- ARGV: now (replaced by Redis's clock), grace (seconds), limit, batch, most tasks queued.
-- What the sweeper publishes: up to `limit` due items no task has taken, and no more than
-- fill the queue to `most tasks queued` (at `batch` items a task): a backlog of millions waits
-- in the ledger, not in Redis as messages. Each is marked published (`queued`) and due again
-- when the grace runs out, in case its message is lost.
-- Returns {fresh keys, suspect keys}: suspects (their lease ran out on an attempt that never
-- ended, see claim.lua) go in tasks of their own, one each.
-- Due items are retries come due, replays, and items whose message was lost (a crash between
-- record and publish; a worker killed with messages it had taken but not started). An item
-- published before and still unclaimed is published again only while the broker queue is
-- empty: while messages wait there, its own is most likely among them (a backlog), and it is
-- left until the grace runs out again.
ARGV[1] = redis_now()
local again = string.format('%.6f', tonumber(ARGV[1]) + tonumber(ARGV[2]))
local queued = redis.call('LLEN', KEYS[2])
local backlog = queued > 0
local limit = math.min(tonumber(ARGV[3]), (tonumber(ARGV[5]) - queued) * tonumber(ARGV[4]))
local fresh, suspects = {}, {}
if limit <= 0 then return {fresh, suspects} end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)) do
  local state = redis.call('HMGET', key, 'status', 'in_flight', 'queued')
  -- 'waiting' here: a refund whose wait for a conversion with no record ran out (claim.lua).
  if state[1] ~= 'pending' and state[1] ~= 'waiting' then
    redis.call('ZREM', KEYS[1], key)
  elseif state[3] and backlog then
    redis.call('ZADD', KEYS[1], again, key)
  else
    redis.call('ZADD', KEYS[1], again, key)
    redis.call('HSET', key, 'queued', ARGV[1])
    if state[2] then table.insert(suspects, key) else table.insert(fresh, key) end
  end
end
return {fresh, suspects}
