-- KEYS: item, due, undelivered, stats, seen, suspect, suspects waiting.  ARGV: stat, keep.
-- Deletes a pending item whose message proved not genuine (an IPN PayPal answered INVALID), so
-- that forgeries leave nothing behind but their counters and the seen marker, which stays
-- `keep` seconds: a resend of the same bytes is answered as a duplicate without a new check.
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[2])
if ARGV[1] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[1], 1) end
-- Frees the suspect slot if this item held it (see claim.lua).
free_slot(KEYS[6], KEYS[7], KEYS[2], KEYS[1])
return 1
