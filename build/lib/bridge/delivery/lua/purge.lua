-- KEYS: item, dlq.  Deletes a dead-lettered item.
if redis.call('ZREM', KEYS[2], KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
return 1
