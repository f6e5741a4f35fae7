-- KEYS: item, dlq, the refunds waiting for it (refund_gate.lua), all refunds waiting.  ARGV: seconds to keep them.
-- Deletes a dead-lettered item. A conversion purged is never sent, nor are the refunds that
-- waited for it: they end as `not_sent`, reason `sale_purged`.
if redis.call('ZREM', KEYS[2], KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
for _, refund in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HGET', refund, 'status') == 'waiting' then
    redis.call('HSET', refund, 'status', 'not_sent', 'reason', 'sale_purged')
    redis.call('EXPIRE', refund, ARGV[1])
  end
  redis.call('SREM', KEYS[4], refund)
end
redis.call('DEL', KEYS[3])
return 1
