-- The nudge message (a Celery task message, bridge/delivery/nudges.py) with task id `id` and
-- delivery tag `tag` (hex and dashes only). scripts.py puts the template in place of the marker.
local function nudge_message(id, tag)
  local message = string.gsub([==[@NUDGE_TEMPLATE@]==], '@ID@', id)
  return (string.gsub(message, '@TAG@', tag))
end
