-- A worker died holding entries: take them over. It is taken for dead when its
-- heartbeat key is gone: it expired (the worker was silent for the heartbeat TTL), or
-- its supervisor deleted it on seeing the process exit.
--
-- What counts as a crash: an entry the dead worker was running (its running key, set
-- when a batch starts, lists it) counts one against its inputs (`crashes:<start>`);
-- an entry it had only read counts nothing. An entry that reached the limit fails its
-- prediction instead of taking down yet another worker. Each crash is recorded with
-- who it blames (`suspect:<start>:<worker>`): if that worker was only paused and later
-- reports on the entry (finish.lua rejects the late result), the crash is withdrawn.
-- So a pause never fails a prediction by itself: it counts at most one crash, and that
-- one only until the worker wakes up; only deaths, and pauses that never end, remain.
-- KEYS: queue stream, queued-inputs counter, the dead worker's running key, the
--       webhook list, the metrics hash, then
--       (optional) the metrics hash and the webhook list
-- ARGV: group, claiming consumer, dead consumer, crash limit, delivery limit,
--       completed timestamp, result ttl, done channel, stop channel, prediction key prefix
-- Returns the claimed entries, as XCLAIM does.
local queue, counter = KEYS[1], KEYS[2]
local group, me, dead = ARGV[1], ARGV[2], ARGV[3]
local crash_limit, delivery_limit = tonumber(ARGV[4]), tonumber(ARGV[5])
local now, ttl, prefix = ARGV[6], tonumber(ARGV[7]), ARGV[10]

local running = {}
for sid in string.gmatch(redis.call('GET', KEYS[3]) or '', '%S+') do
  running[sid] = true
end
local claim, ended, announced = {}, {}, {}
local released = 0
for _, item in ipairs(redis.call('XPENDING', queue, group, '-', '+', 1000, dead)) do
  local sid, deliveries = item[1], tonumber(item[4])
  local found = redis.call('XRANGE', queue, sid, sid)
  local fields = {}
  if #found > 0 then
    local flat = found[1][2]
    for i = 1, #flat, 2 do
      fields[flat[i]] = flat[i + 1]
    end
  end
  local key = fields[ENTRY.prediction] and (prefix .. fields[ENTRY.prediction])
  if not key or redis.call('HEXISTS', key, 'result') == 1 or redis.call('EXISTS', key) == 0 then
    -- Its prediction ended (or the entry is gone): nothing left to do for it.
    redis.call('XACK', queue, group, sid)
    if redis.call('XDEL', queue, sid) == 1 then
      released = released + tonumber(fields[ENTRY.count] or 0)
      if key then
        release_owner(counter, key, tonumber(fields[ENTRY.count] or 0))
      end
    end
  else
    local crashes = 0
    if running[sid] then
      crashes = redis.call('HINCRBY', key, 'crashes:' .. fields[ENTRY.start], 1)
      redis.call('HSET', key, 'suspect:' .. fields[ENTRY.start] .. ':' .. dead, '1')
    end
    local message
    if crashes >= crash_limit then
      message = 'The worker running this input died ' .. crashes .. ' times; it is not retried again'
    elseif deliveries >= delivery_limit then
      message = 'This input was handed to ' .. deliveries .. ' workers that died; it is not retried again'
    end
    if message then
      local body, dropped, events, entries = fail_prediction(queue, key, message, now, ttl)
      released = released + dropped
      release_owner(counter, key, dropped)
      redis.call('XACK', queue, group, sid)
      if body then
        ended[#ended + 1] = fields[ENTRY.prediction]
        announced[#announced + 1] = fields[ENTRY.prediction] .. ' ' .. body
        queue_webhook(KEYS[4], fields[ENTRY.prediction], events, 'completed')
        count_ended(KEYS[5], 'failed', entries)
      end
    else
      claim[#claim + 1] = sid
    end
  end
end
redis.call('DEL', KEYS[3])
release(counter, released)
if #ended > 0 then
  redis.call('PUBLISH', ARGV[8], table.concat(announced, '\n'))
  redis.call('PUBLISH', ARGV[9], table.concat(ended, ' '))
end
if #claim == 0 then
  return {}
end
return redis.call('XCLAIM', queue, group, me, 0, unpack(claim))
