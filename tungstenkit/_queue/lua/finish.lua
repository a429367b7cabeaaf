-- A worker reports what became of entries. A result is one of:
--   'b' the prediction's whole finished body (the entry was all of it),
--   'o' outputs of one entry of a larger prediction (JSON objects joined by commas),
--   'e' an error message for one entry of a larger prediction,
--   'x' dropped unrun (its prediction had ended).
-- Results for predictions that already ended are discarded.
-- KEYS: queue stream, queued-inputs counter, the webhook list, then one prediction
--       hash per result
-- ARGV: group, completed timestamp, result ttl, done channel, stop channel, largest
--       body sent on the done channel, then per result: id, sid, kind, start, count,
--       payload, when the entry's first batch started ('' if unknown), and the
--       webhook events its prediction wants ('' if none)
-- Returns the predictions that ended here, as {id, 'success' or 'failed', ...}.
local queue, counter, hooks = KEYS[1], KEYS[2], KEYS[3]
local group, now, ttl, inline = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[6])
local acks, delete, done, stopped, outcomes = {}, {}, {}, {}, {}
local released = 0

-- Announces an ended prediction, with its body when that is small enough to carry.
local function ended(id, body, outcome, events)
  if body and #body <= inline then
    done[#done + 1] = id .. ' ' .. body
  else
    done[#done + 1] = id
  end
  outcomes[#outcomes + 1] = id
  outcomes[#outcomes + 1] = outcome
  queue_webhook(hooks, id, events, 'completed')
end

local function assemble(key, entries)
  local fields = {}
  for start in string.gmatch(entries, '[^%s:]+:(%d+):%d+') do
    fields[#fields + 1] = 'o:' .. start
  end
  local parts = redis.call('HMGET', key, unpack(fields))
  redis.call('HDEL', key, unpack(fields))
  return '[' .. table.concat(parts, ',') .. ']'
end

for j = 0, (#ARGV - 6) / 8 - 1 do
  local base = 7 + j * 8
  local id, sid, kind, start, count, payload, started, events =
    ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], tonumber(ARGV[base + 4]), ARGV[base + 5],
    ARGV[base + 6], ARGV[base + 7]
  local key = KEYS[4 + j]
  acks[#acks + 1] = sid
  -- An entry of a prediction that ended was deleted by whoever ended it; the others
  -- are deleted here, together, and release their inputs from the queue bound.
  if kind == 'b' then
    if redis.call('HSETNX', key, 'result', payload) == 1 then
      redis.call('EXPIRE', key, ttl)
      delete[#delete + 1] = sid
      released = released + count
      ended(id, payload, string.find(payload, '"status":"success"', 1, true) and 'success' or 'failed', events)
    end
  elseif kind ~= 'x' and redis.call('HEXISTS', key, 'result') == 0 then
    if started ~= '' then
      -- The worker may not have announced the batch's start (it ended first).
      redis.call('HSETNX', key, 'started', started)
    end
    if kind == 'e' then
      local body, dropped = fail_prediction(queue, key, payload, now, ttl)
      if body then
        released = released + dropped
        ended(id, body, 'failed', events)
        stopped[#stopped + 1] = id  -- its other entries may sit in workers' buffers
      end
    elseif redis.call('HSETNX', key, 'o:' .. start, payload) == 1 then
      delete[#delete + 1] = sid
      released = released + count
      if redis.call('HINCRBY', key, 'left', -1) == 0 then
        local state = redis.call('HMGET', key, 'entries', 'created', 'started')
        local body = render('success', assemble(key, state[1]), nil, state[2], state[3], now)
        conclude(key, body, ttl)
        ended(id, body, 'success', events)
      end
    end
  end
end
if #delete > 0 then
  redis.call('XDEL', queue, unpack(delete))
end
if #acks > 0 then
  redis.call('XACK', queue, group, unpack(acks))
end
release(counter, released)
if #done > 0 then
  redis.call('PUBLISH', ARGV[4], table.concat(done, '\n'))
end
if #stopped > 0 then
  redis.call('PUBLISH', ARGV[5], table.concat(stopped, ' '))
end
return outcomes
