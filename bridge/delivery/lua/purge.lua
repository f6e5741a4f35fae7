-- KEYS: item, dlq, the refunds waiting for it (refund_gate.lua), all refunds waiting, its
--       purge mark, due.  ARGV: seconds to keep those refunds, seconds to keep the mark.
-- Deletes a dead-lettered item. A conversion purged is never sent, nor are its refunds: those
-- waiting end as `not_sent`, reason `sale_purged`; the mark tells those to come.
if redis.call('ZREM', KEYS[2], KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'kind') == 'conversion' then
  redis.call('SET', KEYS[5], '1', 'EX', ARGV[2])
end
redis.call('DEL', KEYS[1])
for _, refund in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HGET', refund, 'status') == 'waiting' then
    redis.call('HSET', refund, 'status', 'not_sent', 'reason', 'sale_purged')
    redis.call('EXPIRE', refund, ARGV[1])
    redis.call('ZREM', KEYS[6], refund)
  end
  redis.call('SREM', KEYS[4], refund)
end
redis.call('DEL', KEYS[3])
return 1
