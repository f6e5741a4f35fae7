-- ARGV: count, customer pointer count (all are written alike here), then count triples
-- (bucket, field, value): what remember() writes, for a
-- message that is remembered without being recorded for delivery.
-- Uses remember (remember.lua) and redis_now (redis_now.lua).
remember(ARGV, 3, tonumber(ARGV[1]), false, redis_now())
return 1
