-- KEYS: item, due, dlq, stats, retry, undelivered, suspect, suspects waiting, the refunds
--       waiting for this item (a conversion's: refund_gate.lua), all refunds waiting, the
--       conversions delivered (by time: what `refbridge verify` reads), the item's attempts
--       (bridge/delivery/story.py).
-- ARGV: token, now (replaced by Redis's clock), outcome, when, stat, the attempt's story entry
--       ('' none), attempts kept, seconds to keep them, n, (stats field, value) × n,
--       latency, latency bucket field, latency sum field, latency count field ('' × 4: none),
--       field, value, ...
-- outcome: 'retry' (only for the current claim; `when` = seconds until it is due again), 'done' (delivered /
-- verified / rejected; `when` = seconds to keep the item for duplicate detection), 'dead'
-- (dead-letter). A 'done' from a stale claim still counts: the postback happened.
-- Every applied outcome clears `in_flight` (the attempt ended: its worker did not die under it)
-- and frees the suspect slot if this item held it (see claim.lua).
-- The attempt's own stats (the last error, the delivery latency) are written whatever the
-- outcome does to the item, in the same round trip.
ARGV[2] = redis_now()
if ARGV[3] == 'retry' then
  ARGV[4] = string.format('%.6f', tonumber(ARGV[2]) + tonumber(ARGV[4]))
end
local n = tonumber(ARGV[9])
if n > 0 then redis.call('HSET', KEYS[4], unpack(ARGV, 10, 9 + 2 * n)) end
local latency = 10 + 2 * n
if ARGV[latency] ~= '' then
  redis.call('HINCRBY', KEYS[4], ARGV[latency + 1], 1)
  redis.call('HINCRBYFLOAT', KEYS[4], ARGV[latency + 2], ARGV[latency])
  redis.call('HINCRBY', KEYS[4], ARGV[latency + 3], 1)
end
local first = latency + 4
local status = redis.call('HGET', KEYS[1], 'status')
if status == false then return 0 end
-- The attempt happened, whatever its outcome does (a stale claim's postback was made too).
if ARGV[6] ~= '' then
  redis.call('RPUSH', KEYS[12], ARGV[6])
  redis.call('LTRIM', KEYS[12], -tonumber(ARGV[7]), -1)
  redis.call('EXPIRE', KEYS[12], ARGV[8])
end
local current = redis.call('HGET', KEYS[1], 'token') == ARGV[1]
if ARGV[3] == 'retry' then
  if not current or status ~= 'pending' then return 0 end
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
  redis.call('ZADD', KEYS[5], ARGV[4], KEYS[1])
  redis.call('HSET', KEYS[1], 'next_due', ARGV[4])
elseif ARGV[3] == 'dead' then
  if not current or status ~= 'pending' then return 0 end
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[6], KEYS[1])
  redis.call('ZADD', KEYS[3], ARGV[2], KEYS[1])
  redis.call('HSET', KEYS[1], 'dead_at', ARGV[2], 'status', 'dead')
else
  if status ~= 'pending' then return 0 end
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[6], KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  -- Delivered: the refunds that waited for it are due now, each with a fresh retry window.
  for _, refund in ipairs(redis.call('SMEMBERS', KEYS[9])) do
    if redis.call('HGET', refund, 'status') == 'waiting' then
      redis.call('HSET', refund, 'status', 'pending', 'window_start', ARGV[2], 'next_due', ARGV[2])
      redis.call('ZADD', KEYS[2], ARGV[2], refund)
      redis.call('ZADD', KEYS[6], ARGV[2], refund)
    end
    redis.call('SREM', KEYS[10], refund)
  end
  redis.call('DEL', KEYS[9])
end
for i = first, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[5], 1) end
local delivered = redis.call('HMGET', KEYS[1], 'kind', 'status')
if ARGV[3] == 'done' and delivered[1] == 'conversion' and delivered[2] == 'delivered' then
  -- Kept as long as the item (`when`): older entries go as new ones come.
  redis.call('ZADD', KEYS[11], ARGV[2], KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[4]))
end
redis.call('HDEL', KEYS[1], 'in_flight')
free_slot(KEYS[7], KEYS[8], KEYS[2], KEYS[1])
return 1
