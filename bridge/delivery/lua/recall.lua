-- ARGV: prefix, buckets, days, first chunk size, chunk size, refresh ('1': stamp what is found
-- with today; '0': read only), then the digests of handles, most specific first. The record the first handle still remembered names: {index of that handle
-- (0-based), the record's text}, or nil. A record older than `days` (by the day stamp of its
-- first chunk and Redis's clock) counts as gone; one that is found is stamped with today again:
-- memory is refreshed by use. A handle's field holds its record's digest (a record lives at the digest
-- of its first payment handle, which has no field of its own); a record is the chunks of one
-- field family (field .. chunk index), the first holding the stamp: a chunk filled to the
-- brim (ARGV: first chunk's size, others') is followed by another, unless the text ends there.
local today = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
local days = tonumber(ARGV[3])
local function place(digest)
  local number = (string.byte(digest, 1) * 256 + string.byte(digest, 2)) % tonumber(ARGV[2])
  return ARGV[1] .. string.format('%04x', number), string.sub(digest, 3)
end
local function record(digest)
  local bucket, field = place(digest)
  local first = redis.call('HGET', bucket, field .. '\0')
  if not first or #first < 3 then return nil end
  if string.byte(first, 1) * 256 + string.byte(first, 2) + days < today then return nil end
  local text = {string.sub(first, 3)}
  local full, i = #first - 2 == tonumber(ARGV[4]), 1
  while full do
    local chunk = redis.call('HGET', bucket, field .. string.char(i))
    if not chunk then break end
    text[#text + 1] = chunk
    full, i = #chunk == tonumber(ARGV[5]), i + 1
  end
  if ARGV[6] == '1' then
    local stamp = string.char(math.floor(today / 256) % 256, today % 256)
    redis.call('HSET', bucket, field .. '\0', stamp .. string.sub(first, 3))
  end
  return table.concat(text)
end
-- A handle's own field points at its record; the handle may also be a record's home.
for i = 7, #ARGV do
  local digest = ARGV[i]
  local pointer = redis.call('HGET', place(digest))
  local text = pointer and #pointer == 8 and record(pointer) or record(digest)
  if text then return {i - 7, text} end
end
return nil
