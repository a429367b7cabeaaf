-- Shared by the scripts that end predictions.
--
-- A prediction hash holds `created`, `n` (inputs), `left` (entries not finished),
-- `entries` (its entry list: see entry_refs), `started`
-- once a batch starts it ("" if it ended before starting), and, once it ended,
-- `result`: the finished GET body, stored ready to send. A prediction is open while
-- it has no `result`. While open, a prediction of several entries keeps its finished
-- entries' outputs in `o:<start>` and the keys of their output files in `f:<start>`
-- (with `files` set once there are any). `wq` names the stream where its entries
-- waited for admission, if they did (admission.lua). A prediction created with an API
-- key has `owner`: the key's owner, whose count of queued inputs it is part of.
-- A model that reported progress or wrote logs left `progress` (JSON) and `logs` (see
-- events.lua), which its body shows.

-- A JSON string, or null.
local function json_string(value)
  if value == nil or value == false or value == '' then
    return 'null'
  end
  return cjson.encode(value)
end

-- The GET body of an ended prediction (`outputs` and `progress` are JSON or nil).
local function render(status, outputs, message, created, started, completed, progress, logs)
  return '{"outputs":' .. (outputs or 'null') .. ',"status":"' .. status .. '","error_message":'
    .. json_string(message) .. ',"created_at":' .. json_string(created) .. ',"started_at":'
    .. json_string(started) .. ',"completed_at":' .. json_string(completed) .. ',"progress":'
    .. (progress or 'null') .. ',"logs":' .. json_string(logs) .. '}'
end

-- Deletes the prediction's entries that are still in the stream, or still waiting for
-- admission in the stream `waiting` (its hash's `wq`, nil if none: see admission.lua),
-- so that no worker reads them any more, and returns how many inputs they held.
local function drop_entries(queue, entries, waiting)
  local released, unwaited = 0, 0
  if not entries then
    return 0
  end
  for sid, _, count in entry_refs(entries) do
    if redis.call('XDEL', queue, sid) == 1 then
      released = released + tonumber(count)
    elseif waiting and redis.call('XDEL', waiting, sid) == 1 then
      unwaited = unwaited + tonumber(count)
    end
  end
  if unwaited > 0 then
    local counter = string.sub(queue, 1, -6) .. 'waiting'  -- `<prefix>queue` -> `<prefix>waiting`
    if redis.call('DECRBY', counter, unwaited) < 0 then
      redis.call('SET', counter, 0)
    end
  end
  return released + unwaited
end

-- Stores the ended prediction's body and starts its expiry.
local function conclude(key, body, ttl)
  redis.call('HSET', key, 'result', body)
  redis.call('HSETNX', key, 'started', '')
  redis.call('EXPIRE', key, ttl)
end

-- The output files of an ended prediction's entries (`f:<start>`): they get the
-- result's `ttl` when it succeeded (a file is served as long as its prediction), and
-- are deleted when it failed (ttl nil), as nobody may fetch them then.
local function settle_files(key, entries, ttl)
  local fields = {'files'}
  for _, start in entry_refs(entries) do
    fields[#fields + 1] = 'f:' .. start
  end
  local lists = redis.call('HMGET', key, unpack(fields))
  for i = 2, #lists do
    for file in string.gmatch(lists[i] or '', '%S+') do
      if ttl then
        redis.call('EXPIRE', file, ttl)
      else
        redis.call('DEL', file)
      end
    end
  end
  redis.call('HDEL', key, unpack(fields))
end

-- Ends an open prediction as failed and stops the rest of its work. Returns the
-- rendered body (nil if it had already ended), the number of inputs released, the
-- webhook events it asked for, and its entries.
local function fail_prediction(queue, key, message, now, ttl)
  local state = redis.call(
    'HMGET', key, 'result', 'entries', 'created', 'started', 'webhook_events', 'files', 'progress', 'logs', 'wq'
  )
  if state[1] or not state[3] then
    return nil, 0, nil, nil
  end
  local body = render('failed', nil, message, state[3], state[4], now, state[7], state[8])
  if state[6] then
    settle_files(key, state[2], nil)
  end
  conclude(key, body, ttl)
  return body, drop_entries(queue, state[2], state[9] or nil), state[5], state[2]
end

-- Queues a webhook event ("<id> <event>") if the prediction asked for that event.
local function queue_webhook(hooks, id, events, event)
  if events and string.find(events, event, 1, true) then
    redis.call('RPUSH', hooks, id .. ' ' .. event)
  end
end

-- Counts a prediction that ended here (cancel, or a worker's death) in the metrics
-- hash, with its duration since its first entry was queued, on Redis's clock. The
-- workers count the predictions they end themselves, with their heartbeats.
local function count_ended(metrics, outcome, entries)
  redis.call('HINCRBY', metrics, 'predictions:' .. outcome, 1)
  local first = entry_refs(entries)()
  local created = tonumber(string.match(first or '', '^(%d+)%-') or '')
  if not created then
    return
  end
  local clock = redis.call('TIME')
  local seconds = math.max(tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - created, 0) / 1000
  local label = '+Inf'
  for i, bound in ipairs(SECONDS_BOUNDS) do
    if seconds <= bound then
      label = SECONDS_LABELS[i]
      break
    end
  end
  redis.call('HINCRBY', metrics, 'prediction_seconds:le:' .. label, 1)
  redis.call('HINCRBYFLOAT', metrics, 'prediction_seconds:sum', seconds)
end

-- Releases `released` inputs from the queue bound, which never goes below zero.
local function release(counter, released)
  if released > 0 and redis.call('DECRBY', counter, released) < 0 then
    redis.call('SET', counter, 0)
  end
end

-- Releases `released` inputs of the prediction at `key` from its owner's count of
-- queued inputs (`<counter>:<owner>`, see submit.lua), if it has an owner.
local function release_owner(counter, key, released)
  if released > 0 then
    local owner = redis.call('HGET', key, 'owner')
    if owner then
      release(counter .. ':' .. owner, released)
    end
  end
end
