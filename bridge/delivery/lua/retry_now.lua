-- KEYS: due, retry.  ARGV: now (replaced by Redis's clock), key, key, ...
-- Makes scheduled retries due now. Only an item waiting in `retry` is moved: a claim takes it
-- out of there, so an item whose attempt is running (leased, due at its lease's end) is never
-- pulled forward into a second, concurrent attempt.
-- Returns one word per key: 'now' (was a scheduled retry, due now), 'missing', the status of
-- an item no longer pending, 'running' (an attempt holds it), 'due' (already due or published).
ARGV[1] = redis_now()
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local key = ARGV[i]
  local status = redis.call('HGET', key, 'status')
  local due = tonumber(redis.call('ZSCORE', KEYS[1], key) or '')
  local word
  if status == false then
    word = 'missing'
  elseif status ~= 'pending' then
    word = status
  elseif redis.call('ZSCORE', KEYS[2], key) == false then
    if redis.call('HEXISTS', key, 'in_flight') == 1 then word = 'running' else word = 'due' end
  elseif due and due <= now then
    word = 'due'
  else
    redis.call('ZADD', KEYS[1], ARGV[1], key)
    redis.call('ZREM', KEYS[2], key)
    redis.call('HSET', key, 'next_due', ARGV[1])
    word = 'now'
  end
  table.insert(out, word)
end
return out
