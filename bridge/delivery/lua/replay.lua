-- KEYS: item, due, dlq, undelivered.  ARGV: now (replaced by Redis's clock).  Puts a
-- dead-lettered item back to work now.
ARGV[1] = redis_now()
if redis.call('ZSCORE', KEYS[3], KEYS[1]) == false then return 0 end
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'window_start', ARGV[1], 'next_due', ARGV[1],
  'replayed_at', ARGV[1], 'token', '')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
-- A fresh start: its deaths (claim.lua) count again from none.
redis.call('HDEL', KEYS[1], 'deaths', 'in_flight', 'queued')
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
redis.call('ZADD', KEYS[4], ARGV[1], KEYS[1])
return 1
