-- ARGV: count, then count triples (bucket, field, value): what remember() writes, for a
-- message that is remembered without being recorded for delivery.
-- Uses remember (remember.lua).
remember(ARGV, 2, tonumber(ARGV[1]), false)
return 1
