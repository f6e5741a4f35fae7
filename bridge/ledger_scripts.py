"""Lua scripts that move a ledger item between states atomically inside Redis.

An item is a hash `rb:item:{id}`; `rb:due` (sorted set, score = unix time) holds every item
that still has work to do, scored by when it is next due. A worker claims due items (CLAIM)
and pushes their score to the end of a lease, so an item whose worker died becomes due again
by itself: no broker visibility timeout is involved. The `token` field names the current
claim; the outcome of an attempt whose claim was since taken over (RETRY, DEAD) does nothing.

Celery messages are nudges (`refbridge.process_due`, no arguments): "there is due work".
`rb:nudges` counts the nudges queued and not yet taken, so that a burst of webhooks queues a
few nudges rather than one per webhook; each nudged task claims a batch. The scripts that
queue nudges hold the message template (bridge.dispatch) and fill in ids passed as arguments.
"""

from bridge.dispatch import TEMPLATE

# Lua: the nudge message with task id `id` and delivery tag `tag` (hex and dashes only).
_NUDGE_MESSAGE = f"""
local function nudge_message(id, tag)
  local message = string.gsub([==[{TEMPLATE}]==], '@ID@', id)
  return (string.gsub(message, '@TAG@', tag))
end
"""

# KEYS: item, due, seen, stats, undelivered, queue, nudges.
# ARGV: now, seen_ttl, accepted_stat, duplicate_stat, nudge_id, nudge_tag, max_nudges,
#       field, value, ...
# Records the item, due now, and queues a nudge unless enough are queued: one atomic step.
ENQUEUE = (
    _NUDGE_MESSAGE
    + """
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
  if ARGV[4] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[4], 1) end
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', 0, 'token', '',
  'created_at', ARGV[1], 'window_start', ARGV[1], 'next_due', ARGV[1], unpack(ARGV, 8))
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
redis.call('ZADD', KEYS[5], ARGV[1], KEYS[1])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
if ARGV[3] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[3], 1) end
if tonumber(redis.call('GET', KEYS[7]) or '0') < tonumber(ARGV[7]) then
  redis.call('INCR', KEYS[7])
  redis.call('LPUSH', KEYS[6], nudge_message(ARGV[5], ARGV[6]))
end
return 1
"""
)

# KEYS: due, retry, nudges.  ARGV: now, lease_until, token_prefix, limit, took_nudge.
# Claims up to `limit` due items for attempts: new token, lease, attempt count.
# Returns {key, token, {field, value, ...}, ...}.
CLAIM = """
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
"""

# KEYS: due, queue, nudges.  ARGV: now, batch, nudge_id, nudge_tag, nudge_id, nudge_tag, ...
# The sweeper's nudge: enough nudges queued for the work that is due (lost ones replaced).
NUDGE = (
    _NUDGE_MESSAGE
    + """
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
"""
)

# KEYS: item, due, dlq, stats, retry, undelivered.
# ARGV: token, now, outcome, when, stat, field, value, ...
# outcome: 'retry' (only for the current claim; `when` = next due time), 'done' (delivered /
# verified / rejected; `when` = seconds to keep the item for duplicate detection), 'dead'
# (dead-letter). A 'done' from a stale claim still counts: the postback happened.
FINISH = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == false then return 0 end
local current = redis.call('HGET', KEYS[1], 'token') == ARGV[1]
if ARGV[3] == 'retry' then
  if not current or status ~= 'pending' then return 0 end
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
  redis.call('ZADD', KEYS[5], ARGV[4], KEYS[1])
  redis.call('HSET', KEYS[1], 'next_due', ARGV[4])
elseif ARGV[3] == 'dead' then
  if not current or status ~= 'pending' then return 0 end
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[6], KEYS[1])
  redis.call('ZADD', KEYS[3], ARGV[2], KEYS[1])
  redis.call('HSET', KEYS[1], 'dead_at', ARGV[2], 'status', 'dead')
else
  if status ~= 'pending' then return 0 end
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[6], KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
for i = 6, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[5], 1) end
return 1
"""

# KEYS: item, due, undelivered, stats, seen.  ARGV: stat, keep.
# Deletes a pending item whose message proved not genuine (an IPN PayPal answered INVALID), so
# that forgeries leave nothing behind but their counters and the seen marker, which stays
# `keep` seconds: a resend of the same bytes is answered as a duplicate without a new check.
DROP = """
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[2])
if ARGV[1] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[1], 1) end
return 1
"""

# KEYS: item, due, dlq, undelivered.  ARGV: now.  Puts a dead-lettered item back to work now.
REPLAY = """
if redis.call('ZSCORE', KEYS[3], KEYS[1]) == false then return 0 end
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'pending', 'window_start', ARGV[1], 'next_due', ARGV[1],
  'replayed_at', ARGV[1], 'token', '')
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('ZADD', KEYS[2], ARGV[1], KEYS[1])
redis.call('ZADD', KEYS[4], ARGV[1], KEYS[1])
return 1
"""

# KEYS: item, dlq.  Deletes a dead-lettered item.
PURGE = """
if redis.call('ZREM', KEYS[2], KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
