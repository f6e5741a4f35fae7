-- KEYS: due, retry, nudges.  ARGV: now, lease_until, token_prefix, limit, took_nudge.
-- Claims up to `limit` due items for attempts: new token, lease, attempt count.
-- Returns {key, token, {field, value, ...}, ...}.
if ARGV[5] == '1' and tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then
  redis.call('DECR', KEYS[3])
end
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
local out = {}
for i, key in ipairs(keys) do
  if redis.call('HGET', key, 'status') == 'pending' then
    local token = ARGV[3] .. ':' .. i
    redis.call('ZADD', KEYS[1], ARGV[2], key)
    redis.call('ZREM', KEYS[2], key)
    -- Not HINCRBY: a corrupt count would stop the script halfway, its batch half claimed.
    local attempts = tonumber(redis.call('HGET', key, 'attempts'))
    if not attempts or attempts < 0 or attempts > 1e9 or attempts ~= math.floor(attempts) then
      attempts = 0
    end
    redis.call('HSET', key, 'attempts', attempts + 1, 'token', token, 'last_attempt_at', ARGV[1])
    redis.call('HSETNX', key, 'first_attempt_at', ARGV[1])
    table.insert(out, key)
    table.insert(out, token)
    table.insert(out, redis.call('HGETALL', key))
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return out
