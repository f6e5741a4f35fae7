-- ARGV: as remember_only.lua's (the record's first chunk is the first triple).
-- Remembers a sale recorded as never sent (unattributed), so that its refunds are not sent:
-- only where memory holds no record of that payment yet. A sale recorded and sent keeps its
-- record: another copy of it that names no affiliate (the same payment through IPN and a REST
-- webhook; a second Stripe event of the same payment) must not mark it as never sent.
-- Uses remember (remember.lua) and redis_now (redis_now.lua).
if tonumber(ARGV[1]) == 0 or redis.call('HEXISTS', ARGV[3], ARGV[4]) == 1 then return 0 end
remember(ARGV, 3, tonumber(ARGV[1]), false, redis_now())
return 1
