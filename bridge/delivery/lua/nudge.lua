-- KEYS: due, queue, nudges.  ARGV: now (replaced by Redis's clock), batch, nudge_id, nudge_tag, nudge_id, nudge_tag, ...
-- The sweeper's nudge: enough nudges queued for the work that is due (lost ones replaced).
-- Uses nudge_message (nudge_message.lua).
ARGV[1] = redis_now()
local due = redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1])
local queued = redis.call('LLEN', KEYS[2])
redis.call('SET', KEYS[3], queued)
if due == 0 then return 0 end
local wanted = math.ceil(due / tonumber(ARGV[2])) - queued
local pushed = 0
for i = 3, #ARGV - 1, 2 do
  if pushed >= wanted then break end
  redis.call('LPUSH', KEYS[2], nudge_message(ARGV[i], ARGV[i + 1]))
  redis.call('INCR', KEYS[3])
  pushed = pushed + 1
end
return pushed
