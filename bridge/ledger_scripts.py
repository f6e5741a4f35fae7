"""Lua scripts that move a ledger item between states atomically inside Redis.

An item is a hash `rb:item:{id}`; `rb:due` (sorted set, score = unix time) holds every item
that still has work to do. A claimed item's score is pushed to the end of its lease, so an item
whose worker died becomes due again by itself: no broker visibility timeout is involved.
The `token` field names the current claim; a stale task message (older token) does nothing.
"""

# KEYS: item, due, seen, stats, undelivered, queue.
# ARGV: now, lease_until, token, seen_ttl, accepted_stat, duplicate_stat, task_message,
#       field, value, ...
# Records the item and pushes its task message in one step: never one without the other.
ENQUEUE = """
if redis.call('EXISTS', KEYS[3]) == 1 or redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[4])
  if ARGV[6] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[6], 1) end
  return 0
end
for i = 8, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'attempts', 0, 'token', ARGV[3],
  'created_at', ARGV[1], 'window_start', ARGV[1], 'next_due', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
redis.call('ZADD', KEYS[5], ARGV[1], KEYS[1])
redis.call('SET', KEYS[3], '1', 'EX', ARGV[4])
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[5], 1) end
redis.call('LPUSH', KEYS[6], ARGV[7])
return 1
"""

# KEYS: due.  ARGV: now, lease_until, token_prefix, limit.  Returns {key, token, ...}.
CLAIM_DUE = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
local out = {}
for i, key in ipairs(keys) do
  local token = ARGV[3] .. ':' .. i
  if redis.call('HGET', key, 'status') == 'pending' then
    redis.call('HSET', key, 'token', token)
    redis.call('ZADD', KEYS[1], ARGV[2], key)
    table.insert(out, key)
    table.insert(out, token)
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return out
"""

# KEYS: item, due, retry.  ARGV: token, now, lease_until.  Returns the item's fields, or nil.
START = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return nil end
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return nil end
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZREM', KEYS[3], KEYS[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_attempt_at', ARGV[2])
redis.call('HSETNX', KEYS[1], 'first_attempt_at', ARGV[2])
return redis.call('HGETALL', KEYS[1])
"""

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
