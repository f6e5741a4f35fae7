-- KEYS: due, retry, suspect, dlq, stats, undelivered, suspects waiting, refunds waiting.
-- ARGV: now (replaced by Redis's clock), lease (seconds), token_prefix, max_deaths,
--       died_stat, dead_stat (conversions), died_stat, dead_stat (IPN messages),
--       died_stat, dead_stat (PayPal REST webhook events), item key, item key, ...
-- Claims the items a task names, each for one attempt: new token, lease, attempt count,
-- `in_flight`. Returns {key, token, {field, value, ...}, died_in, word} per item: token '' when
-- it was not claimed, and `word` says why ('dead_lettered', 'running', 'not_due', 'waiting',
-- 'suspect', 'missing', or the status of an item with no work left); `died_in` is '' when the
-- item's last attempt finished, else how it was claimed when its worker died ('batch', 'alone').
--
-- Claimable: a pending item that no attempt holds, published (`queued`, set by enqueue.lua or
-- sweep.lua) or due. A task message can arrive twice (the sweeper republishes one it takes for
-- lost; the broker restores an unacknowledged one): the second finds the item held
-- ('running'), finished (its status), or not due yet ('not_due').
--
-- Deaths. Every claim sets `in_flight` and `lease_until`; every finish clears `in_flight`. So an
-- item with `in_flight` whose lease has ended is one whose attempt never ended: its worker died
-- (OOM, SIGKILL, a segfault). The items in flight beside it died too, through no fault of their
-- own, so a death in a batch only makes the items suspects. A suspect is claimed alone (a task
-- naming it only: a pool process runs one task at a time) and holds the `suspect` slot: one
-- suspect in flight at a time in the whole system, since a kill may take every pool process of
-- a worker. Only a death while alone counts (`deaths`); the max_deaths-th dead-letters the item
-- with reason `worker_died`. A suspect met while another holds the slot is put back until that
-- one's lease ends, and noted in `waiting`: free_slot makes it due again the moment the slot is
-- freed. Fresh work is never held back by suspects: a task names its own items.
ARGV[1] = redis_now()
local now = tonumber(ARGV[1])
local lease_end = string.format('%.6f', now + tonumber(ARGV[2]))
local alone = #ARGV == 11

-- Not HINCRBY: a corrupt count would stop the script halfway, its batch half claimed.
local function count(key, field)
  local n = tonumber(redis.call('HGET', key, field))
  if not n or n < 0 or n > 1e9 or n ~= math.floor(n) then return 0 end
  return n
end

-- nil when the slot is free: empty, expired (its holder's lease ran out) or held by `key`
-- itself; else the end of its holder's lease.
local function slot_taken_until(key)
  local held = redis.call('GET', KEYS[3])
  if not held then return nil end
  local until_, holder = string.match(held, '^(%S+) (.*)$')
  if holder == key or not tonumber(until_) or tonumber(until_) <= now then return nil end
  return tonumber(until_)
end

local function claim(key, i, in_flight)
  local token = ARGV[3] .. ':' .. i
  redis.call('ZADD', KEYS[1], lease_end, key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('HSET', key, 'attempts', count(key, 'attempts') + 1, 'token', token,
    'last_attempt_at', ARGV[1], 'in_flight', in_flight, 'lease_until', lease_end)
  redis.call('HDEL', key, 'queued')
  redis.call('HSETNX', key, 'first_attempt_at', ARGV[1])
  return token
end

local function dead_letter(key, deaths, stat)
  local error = 'worker died during ' .. deaths .. ' attempts'
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[6], key)
  redis.call('ZADD', KEYS[4], ARGV[1], key)
  redis.call('HSET', key, 'status', 'dead', 'dead_at', ARGV[1], 'reason', 'worker_died',
    'last_error', error, 'token', '')
  redis.call('HDEL', key, 'in_flight', 'queued')
  free_slot(KEYS[3], KEYS[7], KEYS[1], key)
  redis.call('HINCRBY', KEYS[5], stat, 1)
  redis.call('HSET', KEYS[5], 'last_error', error, 'last_error_at', ARGV[1])
end

-- The token ('' when not claimed), died_in and word for one named item.
local function take(i, key)
  local state = redis.call('HMGET', key, 'status', 'in_flight', 'kind', 'queued', 'lease_until')
  if not state[1] then return '', '', 'missing' end
  if state[1] == 'waiting' then
    -- A refund waiting for its conversion (refund_gate.lua): claimable only once a wait for a
    -- conversion with no record ran out (the sweeper then published it); left in `due`.
    local due = tonumber(redis.call('ZSCORE', KEYS[1], key) or '')
    if not state[4] and (not due or due > now) then return '', '', 'waiting' end
    redis.call('HSET', key, 'status', 'pending')
    redis.call('SREM', KEYS[8], key)
    state[1] = 'pending'
  end
  if state[1] ~= 'pending' then
    redis.call('ZREM', KEYS[1], key)
    return '', '', state[1]
  end
  if not state[2] then
    local due = tonumber(redis.call('ZSCORE', KEYS[1], key) or '')
    if not state[4] and (not due or due > now) then return '', '', 'not_due' end
    return claim(key, i, 'batch'), '', 'claimed'
  end
  -- Items claimed before `lease_until` existed: their due score is their lease's end.
  local until_ = tonumber(state[5]) or tonumber(redis.call('ZSCORE', KEYS[1], key) or '') or 0
  if until_ > now then return '', '', 'running' end
  if not alone then return '', state[2], 'suspect' end  -- the sweeper publishes it alone
  local busy_until = slot_taken_until(key)
  if busy_until then
    redis.call('ZADD', KEYS[1], busy_until, key)
    redis.call('SADD', KEYS[7], key)
    redis.call('HDEL', key, 'queued')  -- its message came: the sweeper publishes it again
    return '', state[2], 'waiting'
  end
  local died, dead = ARGV[5], ARGV[6]
  if state[3] == 'ipn' then died, dead = ARGV[7], ARGV[8] end
  if state[3] == 'paypal_webhook' then died, dead = ARGV[9], ARGV[10] end
  local deaths = count(key, 'deaths')
  if state[2] == 'alone' then
    deaths = deaths + 1
    redis.call('HSET', key, 'deaths', deaths)
    redis.call('HINCRBY', KEYS[5], died, 1)
  end
  if deaths >= tonumber(ARGV[4]) then
    dead_letter(key, deaths, dead)
    return '', state[2], 'dead_lettered'
  end
  local token = claim(key, i, 'alone')
  redis.call('SET', KEYS[3], lease_end .. ' ' .. key)
  return token, state[2], 'claimed'
end

local out = {}
for i = 11, #ARGV do
  local key = ARGV[i]
  local token, died_in, word = take(i, key)
  local fields = {}
  if token ~= '' or word == 'dead_lettered' then fields = redis.call('HGETALL', key) end
  table.insert(out, key)
  table.insert(out, token)
  table.insert(out, fields)
  table.insert(out, died_in)
  table.insert(out, word)
end
return out
