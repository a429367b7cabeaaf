-- Shared by the scripts that end predictions. Entries of a prediction are listed in
-- its hash field `entries` as space-separated "sid:start:count" triples, in input order.

-- Deletes the prediction's entries that are still in the stream, so that no worker
-- reads them any more, and returns how many inputs they held.
local function drop_entries(queue, entries)
  local released = 0
  if not entries then
    return 0
  end
  for sid, count in string.gmatch(entries, '([^%s:]+):%d+:(%d+)') do
    if redis.call('XDEL', queue, sid) == 1 then
      released = released + tonumber(count)
    end
  end
  return released
end

local function is_open(status)
  return status == 'pending' or status == 'running'
end

-- Ends an open prediction as failed and stops the rest of its work.
-- Returns the number of queued inputs released.
local function fail_prediction(queue, key, message, now, ttl)
  local state = redis.call('HMGET', key, 'status', 'entries')
  if not is_open(state[1]) then
    return 0
  end
  redis.call('HSET', key, 'status', 'failed', 'error', message, 'completed', now)
  redis.call('EXPIRE', key, ttl)
  return drop_entries(queue, state[2])
end
