-- KEYS: item, due, seen, stats, undelivered, queue, nudges.
-- ARGV: now, seen_ttl, accepted_stat, duplicate_stat, nudge_id, nudge_tag, max_nudges,
--       field, value, ...
-- Records the item, due now, and queues a nudge unless enough are queued: one atomic step.
-- Uses nudge_message (nudge_message.lua).
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[4], 1) end
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', 0, 'token', '',
  'created_at', ARGV[1], 'window_start', ARGV[1], 'next_due', ARGV[1], unpack(ARGV, 8))
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
redis.call('ZADD', KEYS[5], ARGV[1], KEYS[1])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[3], 1) end
if tonumber(redis.call('GET', KEYS[7]) or '0') < tonumber(ARGV[7]) then
  redis.call('INCR', KEYS[7])
  redis.call('LPUSH', KEYS[6], nudge_message(ARGV[5], ARGV[6]))
end
return 1
