-- remember(args, first, count, keep, now): writes `count` remembered entries, each the triple
-- (bucket, field, value) of `args` from index `first` (bridge/delivery/memory.py); with `keep`,
-- only those not already there (HSETNX); `now` is Redis's clock (redis_now.lua). A record's first
-- chunk (a 7-byte field ending in a zero byte) gets today's day number by Redis's clock in
-- front of its value, in two bytes: how old the record is, for recall.lua and trim.lua. An
-- empty value deletes the field (the chunk after a record's last, left by a longer one).
local function remember(args, first, count, keep, now)
  if count == 0 then return end
  local day = math.floor(tonumber(now) / 86400)
  local stamp = string.char(math.floor(day / 256) % 256, day % 256)
  for i = first, first + 3 * (count - 1), 3 do
    local field, value = args[i + 1], args[i + 2]
    if value == '' then
      redis.call('HDEL', args[i], field)
    else
      if #field == 7 and string.byte(field, 7) == 0 then value = stamp .. value end
      redis.call(keep and 'HSETNX' or 'HSET', args[i], field, value)
    end
  end
end
