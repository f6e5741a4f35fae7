-- KEYS: the trim cursor. ARGV: prefix, buckets, days, how many buckets.
-- Deletes from the next buckets in turn the records older than `days` (Redis's clock), their
-- chunks, and the handles whose record is gone, so that what nobody used for that long leaves
-- memory (recall.lua already treats it as gone). Several workers may trim at once: the shared
-- cursor hands each call buckets of its own.
local today = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
local days, buckets, count = tonumber(ARGV[3]), tonumber(ARGV[2]), tonumber(ARGV[4])
local last = redis.call('INCRBY', KEYS[1], count)
redis.call('EXPIRE', KEYS[1], 86400)
local function bucket_of(number) return ARGV[1] .. string.format('%04x', number % buckets) end
local function live(first)
  return first and #first >= 3 and string.byte(first, 1) * 256 + string.byte(first, 2) + days >= today
end
local deleted = 0
for n = last - count, last - 1 do
  local bucket = bucket_of(n)
  local entries = redis.call('HGETALL', bucket)
  local values = {}
  for i = 1, #entries, 2 do values[entries[i]] = entries[i + 1] end
  for field, value in pairs(values) do
    local gone
    if #field == 6 and #value == 8 then
      -- a handle: gone with its record (in the bucket its digest names)
      local target = bucket_of(string.byte(value, 1) * 256 + string.byte(value, 2))
      gone = not live(redis.call('HGET', target, string.sub(value, 3) .. '\0'))
    elseif #field == 7 then
      -- a record's chunk: gone with its first chunk's day
      gone = not live(values[string.sub(field, 1, 6) .. '\0'])
    else
      gone = true  -- no entry of this layout
    end
    if gone then
      redis.call('HDEL', bucket, field)
      deleted = deleted + 1
    end
  end
end
return deleted
