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

-- Monitoring and webhooks. The scripts that start or end predictions take two optional
-- keys, the metrics hash and the webhook list (see _queue.py); either may be nil.
-- SECONDS_BOUNDS and SECONDS_LABELS are generated from tungstenkit/_metrics.py.
-- Increments are gathered in `noted` and written once per field by flush_metrics(), which
-- each such script calls before it returns.
local noted, noted_fields = {}, {}

local function note(field, amount)
  if not noted[field] then
    noted_fields[#noted_fields + 1] = field
    noted[field] = 0
  end
  noted[field] = noted[field] + amount
end

local function flush_metrics(metrics)
  if not metrics then
    return
  end
  for _, field in ipairs(noted_fields) do
    if string.sub(field, -4) == ':sum' then
      redis.call('HINCRBYFLOAT', metrics, field, noted[field])
    else
      redis.call('HINCRBY', metrics, field, noted[field])
    end
  end
end

-- Milliseconds on Redis's clock, read once per script call.
local clock_ms
local function now_ms()
  if not clock_ms then
    local time = redis.call('TIME')
    clock_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  end
  return clock_ms
end

-- When a prediction was accepted: the time in the id of its first stream entry (ms on
-- Redis's clock too, so no clock skew between machines enters the metrics).
local function created_ms(entries)
  local ms = string.match(entries or '', '^(%d+)%-')
  return ms and tonumber(ms)
end

-- Adds the seconds since `since_ms` to a histogram of the metrics hash.
local function observe_since(name, since_ms)
  if not since_ms then
    return
  end
  local value = math.max(now_ms() - since_ms, 0) / 1000
  local label = '+Inf'
  for i, bound in ipairs(SECONDS_BOUNDS) do
    if value <= bound then
      label = SECONDS_LABELS[i]
      break
    end
  end
  note(name .. ':le:' .. label, 1)
  note(name .. ':sum', value)
end

-- Hands a prediction's event to the webhook dispatcher if the prediction asked for it.
local function queue_webhook(hooks, key, events, event)
  if hooks and events and string.find(events, event, 1, true) then
    local id = string.match(key, 'pred:([^:]+)$')
    redis.call('RPUSH', hooks, id .. ' ' .. event)
  end
end

-- A prediction just started running.
local function prediction_started(key, metrics, hooks)
  if not metrics and not hooks then
    return
  end
  local state = redis.call('HMGET', key, 'entries', 'webhook_events')
  if metrics then
    observe_since('queue_seconds', created_ms(state[1]))
  end
  queue_webhook(hooks, key, state[2], 'start')
end

-- A prediction just ended with `outcome`: success, failed or canceled.
local function prediction_ended(key, outcome, metrics, hooks)
  if not metrics and not hooks then
    return
  end
  local state = redis.call('HMGET', key, 'entries', 'webhook_events')
  if metrics then
    note('predictions:' .. outcome, 1)
    observe_since('prediction_seconds', created_ms(state[1]))
  end
  queue_webhook(hooks, key, state[2], 'completed')
end
