-- A worker reports what became of entries: outputs ('o'), an error ('e'), or dropped
-- without running ('x'). Results for predictions that already ended are discarded.
-- KEYS: queue stream, queued-inputs counter, then one prediction hash per result,
--       then (optional) the metrics hash and the webhook list
-- ARGV: group, completed timestamp, result ttl, done channel, stop channel,
--       then per result: id, sid, kind, start, count, payload
local queue, counter = KEYS[1], KEYS[2]
local group, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local acks, done, stopped = {}, {}, {}
local released = 0
local metrics, hooks = KEYS[3 + (#ARGV - 5) / 6], KEYS[4 + (#ARGV - 5) / 6]

local function succeed(key, id, outputs)
  redis.call('HSET', key, 'status', 'success', 'outputs', '[' .. outputs .. ']', 'completed', now, 'left', 0)
  redis.call('EXPIRE', key, ttl)
  done[#done + 1] = id
  prediction_ended(key, 'success', metrics, hooks)
end

local function assemble(key, entries)
  local parts, fields = {}, {}
  for start in string.gmatch(entries, '[^%s:]+:(%d+):%d+') do
    fields[#fields + 1] = 'o:' .. start
  end
  parts = redis.call('HMGET', key, unpack(fields))
  redis.call('HDEL', key, unpack(fields))
  return table.concat(parts, ',')
end

local results = (#ARGV - 5) / 6
for j = 0, results - 1 do
  local base = 6 + j * 6
  local id, sid, kind, start, count, payload =
    ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local key = KEYS[3 + j]
  acks[#acks + 1] = sid
  if redis.call('XDEL', queue, sid) == 1 then
    released = released + tonumber(count)
  end
  if kind ~= 'x' then
    local state = redis.call('HMGET', key, 'status', 'entries')
    local status, entries = state[1], state[2]
    if is_open(status) then
      if kind == 'e' then
        released = released + fail_prediction(queue, key, payload, now, ttl)
        done[#done + 1] = id
        prediction_ended(key, 'failed', metrics, hooks)
        if string.find(entries, ' ', 1, true) then
          stopped[#stopped + 1] = id  -- its other entries may sit in workers' buffers
        end
      elseif not string.find(entries, ' ', 1, true) then
        succeed(key, id, payload)
      elseif redis.call('HSETNX', key, 'o:' .. start, payload) == 1 then
        if redis.call('HINCRBY', key, 'left', -1) == 0 then
          succeed(key, id, assemble(key, entries))
        end
      end
    end
  end
end
if #acks > 0 then
  redis.call('XACK', queue, group, unpack(acks))
end
if released > 0 then
  redis.call('DECRBY', counter, released)
end
if #done > 0 then
  redis.call('PUBLISH', ARGV[4], table.concat(done, ' '))
end
if #stopped > 0 then
  redis.call('PUBLISH', ARGV[5], table.concat(stopped, ' '))
end
flush_metrics(metrics)
return #done
