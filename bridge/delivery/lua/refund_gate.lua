-- KEYS: refund item, its conversion's item, that conversion's waiting refunds (a set), the
--       charge's running total ('rb:refunded:<charge>'), due, undelivered, suspect, suspects
--       waiting, stats, all refunds waiting.
-- ARGV: token, now (replaced by Redis's clock), externalId, amount ('' a whole refund, minor
--       units, or 'charge': from the charge's running total), the charge's amount_refunded,
--       the charge's amount, reason, seconds to keep the running total, waiting stat.
-- Decides a refund once (its payload kept on the item: a retry or a replay sends the same
-- body) and lets it go only after its conversion: returns {'send', payload}; {'waiting'} when
-- the conversion is pending or dead-lettered (the refund leaves the work sets and joins the
-- conversion's set: finish.lua makes it due when the conversion is delivered); {'nothing_new'}
-- when a Stripe charge's total is no more than what was sent for it already (an older event
-- arriving late); {'stale'} when the claim no longer holds the item.
-- A charge's running total: Stripe's `amount_refunded` grows with each refund, and events may
-- come in any order, so each sends the increase over the highest total decided before it
-- (none when not higher), and a first refund of the whole charge sends no amount.
ARGV[2] = redis_now()
local state = redis.call('HMGET', KEYS[1], 'token', 'status', 'payload')
if state[1] ~= ARGV[1] or state[2] ~= 'pending' then return {'stale'} end
local payload = state[3]
if not payload then
  local amount = ARGV[4]
  if amount == 'charge' then
    local total = tonumber(ARGV[5])
    local before = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
    if total <= before then return {'nothing_new'} end
    redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[8])
    amount = ''
    if before > 0 or total < tonumber(ARGV[6]) then amount = string.format('%d', total - before) end
  end
  local body = '{"externalId":' .. cjson.encode(ARGV[3])
  if amount ~= '' then body = body .. ',"amount":' .. amount end
  payload = body .. ',"reason":' .. cjson.encode(ARGV[7]) .. '}'
  redis.call('HSET', KEYS[1], 'payload', payload, 'external_id', ARGV[3], 'amount', amount)
end
local sale = redis.call('HGET', KEYS[2], 'status')
if sale == 'pending' or sale == 'dead' then
  redis.call('HSET', KEYS[1], 'status', 'waiting', 'token', '', 'waiting_since', ARGV[2])
  redis.call('HDEL', KEYS[1], 'in_flight', 'queued')
  redis.call('ZREM', KEYS[5], KEYS[1])
  redis.call('ZREM', KEYS[6], KEYS[1])
  redis.call('SADD', KEYS[3], KEYS[1])
  redis.call('SADD', KEYS[10], KEYS[1])
  free_slot(KEYS[7], KEYS[8], KEYS[5], KEYS[1])
  redis.call('HINCRBY', KEYS[9], ARGV[9], 1)
  return {'waiting'}
end
return {'send', payload}
