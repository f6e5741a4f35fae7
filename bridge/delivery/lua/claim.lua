-- KEYS: due, retry, nudges, suspect, dlq, stats, undelivered, listeners, suspects waiting.
-- ARGV: now (replaced by Redis's clock), lease (seconds), token_prefix, limit, took_nudge, scan, max_deaths,
--       died_stat, dead_stat (conversions), died_stat, dead_stat (IPN messages),
--       died_stat, dead_stat (PayPal REST webhook events), listener, listen_for (seconds),
--       listeners_ttl_ms, alone ('1': a suspect may be claimed).
-- Claims up to `limit` due items for attempts: new token, lease, attempt count, `in_flight`.
-- Returns {key, token, {field, value, ...}, died_in, ...}: `died_in` is '' when the item's last
-- attempt finished, else how it was claimed when its worker died ('batch' or 'alone'); token ''
-- marks an item dead-lettered here instead of claimed (its worker died under it too often).
--
-- Deaths. Every claim sets `in_flight` and every finish clears it, so an item that is due with
-- `in_flight` still set is one whose lease ran out on an attempt that never ended: its worker
-- died (OOM, SIGKILL, a segfault). The items in flight beside it died too, through no fault of
-- their own, so a death in a batch only makes the items suspects. A suspect is claimed alone
-- (nothing else in its batch) and holds the `suspect` slot: one suspect in flight at a time in
-- the whole system, since a kill may take every pool process of a worker. Only a death while
-- alone counts (`deaths`); the max_deaths-th dead-letters the item with reason `worker_died`.
--
-- Listeners. A claim made for a listener (a thread in a pool process, tasks/listener.py) that
-- takes nothing registers the listener in `listeners` for `listen_for` seconds (by Redis's
-- clock, which lua/enqueue.lua reads too), in the same atomic step: an item recorded after
-- this claim rings its bell, one recorded before it was claimed here. A claim that takes work
-- unregisters it: a busy listener is never rung. A listener's claims take no suspect
-- (`alone` '0'): its process may be running a task's batch beside it.
if ARGV[5] == '1' and tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then
  redis.call('DECR', KEYS[3])
end
ARGV[1] = redis_now()
ARGV[2] = string.format('%.6f', tonumber(ARGV[1]) + tonumber(ARGV[2]))
local now = tonumber(ARGV[1])

-- Not HINCRBY: a corrupt count would stop the script halfway, its batch half claimed.
local function count(key, field)
  local n = tonumber(redis.call('HGET', key, field))
  if not n or n < 0 or n > 1e9 or n ~= math.floor(n) then return 0 end
  return n
end

-- nil when the slot is free: empty, expired (its holder's lease ran out) or held by `key`
-- itself; else the end of its holder's lease.
local function slot_taken_until(key)
  local held = redis.call('GET', KEYS[4])
  if not held then return nil end
  local lease_end, holder = string.match(held, '^(%S+) (.*)$')
  if holder == key or not tonumber(lease_end) or tonumber(lease_end) <= now then return nil end
  return tonumber(lease_end)
end

local function claim(key, i, in_flight)
  local token = ARGV[3] .. ':' .. i
  redis.call('ZADD', KEYS[1], ARGV[2], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('HSET', key, 'attempts', count(key, 'attempts') + 1, 'token', token,
    'last_attempt_at', ARGV[1], 'in_flight', in_flight)
  redis.call('HSETNX', key, 'first_attempt_at', ARGV[1])
  return token
end

local function dead_letter(key, deaths, stat)
  local error = 'worker died during ' .. deaths .. ' attempts'
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[7], key)
  redis.call('ZADD', KEYS[5], ARGV[1], key)
  redis.call('HSET', key, 'status', 'dead', 'dead_at', ARGV[1], 'reason', 'worker_died',
    'last_error', error, 'token', '')
  redis.call('HDEL', key, 'in_flight')
  free_slot(KEYS[4], KEYS[9], KEYS[1], key)
  redis.call('HINCRBY', KEYS[6], stat, 1)
  redis.call('HSET', KEYS[6], 'last_error', error, 'last_error_at', ARGV[1])
end

-- Suspects sort first (their lease ran out before fresh work came due), and only one runs at
-- a time. A suspect met while another holds the slot is put back, out of the way, until that
-- one's lease ends, and noted in `waiting`: free_slot makes it due again the moment the slot is
-- freed. The scan goes on past it (up to PAGES pages of `scan` keys), so fresh work behind any
-- number of suspects is taken, never held back while they drain one by one.
local PAGES = 4
local limit, taken, held, out = tonumber(ARGV[4]), 0, 0, {}
local function take(i, key)
  local state = redis.call('HMGET', key, 'status', 'in_flight', 'kind')
  if state[1] ~= 'pending' then
    redis.call('ZREM', KEYS[1], key)
    return 'moved'
  elseif not state[2] then
    local token = claim(key, i, 'batch')
    taken = taken + 1
    held = held + 1
    table.insert(out, key)
    table.insert(out, token)
    table.insert(out, redis.call('HGETALL', key))
    table.insert(out, '')
    return 'moved'
  end
  local busy_until = slot_taken_until(key)
  if busy_until then
    redis.call('ZADD', KEYS[1], busy_until, key)
    redis.call('SADD', KEYS[9], key)
    return 'moved'
  elseif taken == 0 and ARGV[17] == '1' then
    local died, dead = ARGV[8], ARGV[9]
    if state[3] == 'ipn' then died, dead = ARGV[10], ARGV[11] end
    if state[3] == 'paypal_webhook' then died, dead = ARGV[12], ARGV[13] end
    local deaths = count(key, 'deaths')
    if state[2] == 'alone' then
      deaths = deaths + 1
      redis.call('HSET', key, 'deaths', deaths)
      redis.call('HINCRBY', KEYS[6], died, 1)
    end
    local token = ''
    if deaths >= tonumber(ARGV[7]) then
      dead_letter(key, deaths, dead)
    else
      token = claim(key, i, 'alone')
      held = held + 1
      redis.call('SET', KEYS[4], ARGV[2] .. ' ' .. key)
    end
    table.insert(out, key)
    table.insert(out, token)
    table.insert(out, redis.call('HGETALL', key))
    table.insert(out, state[2])
    if token ~= '' then return 'alone' end
    return 'moved'
  end
  return 'left'
end
local i = 0
for _ = 1, PAGES do
  local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[6])
  local left, stop = 0, false
  for _, key in ipairs(keys) do
    if taken >= limit then stop = true break end
    i = i + 1
    local what = take(i, key)
    if what == 'alone' then stop = true break end
    if what == 'left' then left = left + 1 end
  end
  -- Done when this page was the last, or what it left stays in range (a next page would
  -- start over the same keys).
  if stop or #keys < tonumber(ARGV[6]) or left > 0 then break end
end
if ARGV[14] ~= '' then
  if held == 0 then
    local lapses = now + tonumber(ARGV[15])
    redis.call('ZADD', KEYS[8], lapses, ARGV[14])
    redis.call('PEXPIRE', KEYS[8], ARGV[16])
  else
    redis.call('ZREM', KEYS[8], ARGV[14])
  end
end
return out
