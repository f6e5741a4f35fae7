-- KEYS: refund item, its conversion's item, that conversion's waiting refunds (a set), the
--       charge's running total ('rb:refunded:<charge>'), due, undelivered, suspect, suspects
--       waiting, stats, all refunds waiting, the conversion's purge mark.
-- ARGV: token, now (replaced by Redis's clock), externalId, amount ('' a whole refund, minor
--       units, 'charge': from the charge's running total, 'dispute': the rest of the charge),
--       the charge's amount_refunded (or the dispute's amount), the charge's (or the sale's)
--       amount, reason, seconds to keep the running total, waiting stat, seconds to wait for a
--       conversion with no record ('' none: sent at once).
-- Decides a refund once (its payload kept on the item: a retry or a replay sends the same body)
-- and lets it go only after its conversion. Returns {'send', payload}; {'waiting'} when the
-- conversion is pending or dead-lettered, or has no record yet (it may be on its way: a
-- webhook behind this one, an IPN not verified yet): the refund joins the conversion's set,
-- which finish.lua makes due when the conversion is delivered; one waiting for a record is
-- also due when its wait runs out (`parked`), and is then sent whatever it finds.
-- {'nothing_new'}: nothing left to claw back on the charge; {'purged'}: its conversion was
-- dead-lettered and purged, never sent; {'stale'}: the claim no longer holds the item.
-- A charge's running total: Stripe's `amount_refunded` grows with each refund, and events come
-- in any order, so each sends the increase over the highest total decided before it (none
-- when not higher), and a first refund of the whole charge sends no amount. A lost dispute
-- takes what refunds left of the charge (the whole sale when there were none).
ARGV[2] = redis_now()
local state = redis.call('HMGET', KEYS[1], 'token', 'status', 'payload', 'parked')
if state[1] ~= ARGV[1] or state[2] ~= 'pending' then return {'stale'} end
local sale = redis.call('HGET', KEYS[2], 'status')
if not sale and redis.call('EXISTS', KEYS[11]) == 1 then return {'purged'} end
local payload = state[3]
if not payload then
  local amount = ARGV[4]
  if amount == 'charge' or amount == 'dispute' then
    local before = tonumber(redis.call('GET', KEYS[4]) or '0') or 0
    local total, whole = tonumber(ARGV[5]), tonumber(ARGV[6])
    if amount == 'dispute' then total = before > 0 and math.min(before + total, whole) or whole end
    if total <= before then return {'nothing_new'} end
    redis.call('SET', KEYS[4], string.format('%d', total), 'EX', ARGV[8])
    amount = ''
    if before > 0 or total < whole then amount = string.format('%d', total - before) end
  end
  local body = '{"externalId":' .. cjson.encode(ARGV[3])
  if amount ~= '' then body = body .. ',"amount":' .. amount end
  payload = body .. ',"reason":' .. cjson.encode(ARGV[7]) .. '}'
  redis.call('HSET', KEYS[1], 'payload', payload, 'external_id', ARGV[3], 'amount', amount)
end
local park = not sale and ARGV[10] ~= '' and not state[4]
if sale == 'pending' or sale == 'dead' or park then
  redis.call('HSET', KEYS[1], 'status', 'waiting', 'token', '', 'waiting_since', ARGV[2])
  redis.call('HDEL', KEYS[1], 'in_flight', 'queued')
  redis.call('ZREM', KEYS[6], KEYS[1])
  if park then
    local until_ = string.format('%.6f', tonumber(ARGV[2]) + tonumber(ARGV[10]))
    redis.call('ZADD', KEYS[5], until_, KEYS[1])
    redis.call('HSET', KEYS[1], 'parked', until_)
  else
    redis.call('ZREM', KEYS[5], KEYS[1])
  end
  redis.call('SADD', KEYS[3], KEYS[1])
  redis.call('SADD', KEYS[10], KEYS[1])
  free_slot(KEYS[7], KEYS[8], KEYS[5], KEYS[1])
  redis.call('HINCRBY', KEYS[9], ARGV[9], 1)
  return {'waiting'}
end
return {'send', payload}
