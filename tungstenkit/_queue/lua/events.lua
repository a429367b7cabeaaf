-- A worker records what the model said while running a batch: partial outputs,
-- progress and logs, for the predictions that are still open (a prediction that ended
-- gets no event after its end, so `completed` is always the last one a client sees).
-- Each event goes to the prediction's events stream (capped, expiring with the
-- prediction); the latest progress and the logs (bounded: the last bytes, with a marker
-- in front of what was dropped) go to its hash, for GET and for the ended body. An
-- event also means the prediction started (the start announcement may come later).
-- Webhooks that asked for `output` or `logs` are queued at most once per interval per
-- prediction ("<id> output:<after>:<last>": the output events after the previous output
-- webhook's, up to this one; "<id> logs:<ms>"); what a throttled flush held is carried
-- by the next one that is due.
-- KEYS: webhook list, then per prediction: its hash, its events stream
-- ARGV: started timestamp, stream cap, ttl, largest logs (bytes), now (ms), webhook
--       interval (ms), events channel, then per prediction: id, number of events,
--       progress JSON ('' if none), logs text ('' if none), then per event: type, data
-- Returns the number of predictions that got events.
local hooks = KEYS[1]
local stamp, cap, ttl, max_logs = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, interval, channel = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local MARKER = '[earlier logs dropped]\n'

-- The last `max_logs` bytes of `text`, with the marker in front when some were dropped,
-- never starting inside a UTF-8 character.
local function bounded(text)
  if #text <= max_logs then
    return text
  end
  local kept = string.sub(text, #text - max_logs + #MARKER + 1)
  local first = 1
  while first <= #kept and string.byte(kept, first) >= 128 and string.byte(kept, first) < 192 do
    first = first + 1
  end
  return MARKER .. string.sub(kept, first)
end

local told = {}
local i, k = 8, 2
while i <= #ARGV do
  local id, n, progress, logs = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local key, stream = KEYS[k], KEYS[k + 1]
  local first_event = i + 4
  i = first_event + 2 * n
  k = k + 2
  local state = redis.call('HMGET', key, 'result', 'created', 'webhook_events', 'logs')
  if not state[1] and state[2] then
    redis.call('HSETNX', key, 'started', stamp)
    local last_output
    for e = first_event, i - 1, 2 do
      local sid = redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', EVENT.type, ARGV[e], EVENT.data, ARGV[e + 1])
      if ARGV[e] == 'output' then
        last_output = sid
      end
    end
    if n > 0 then
      redis.call('EXPIRE', stream, ttl)
    end
    local fields = {}
    if progress ~= '' then
      fields[#fields + 1] = 'progress'
      fields[#fields + 1] = progress
    end
    if logs ~= '' then
      fields[#fields + 1] = 'logs'
      fields[#fields + 1] = bounded((state[4] or '') .. logs)
    end
    local wanted = state[3] or ''
    local wants_output = last_output and string.find(wanted, 'output', 1, true)
    local wants_logs = logs ~= '' and string.find(wanted, 'logs', 1, true)
    if wants_output or wants_logs then
      local hook = redis.call('HMGET', key, 'hook_at', 'hook_sid', 'out_sid', 'logs_due')
      local out_sid = wants_output and last_output or hook[3]
      local logs_due = wants_logs or hook[4] == '1'
      if now - (tonumber(hook[1]) or 0) >= interval then
        if out_sid and out_sid ~= hook[2] then
          -- The output events after the previous output webhook, up to this one.
          redis.call('RPUSH', hooks, id .. ' output:' .. (hook[2] or '0') .. ':' .. out_sid)
          fields[#fields + 1] = 'hook_sid'
          fields[#fields + 1] = out_sid
        end
        if logs_due then
          redis.call('RPUSH', hooks, id .. ' logs:' .. now)
        end
        logs_due = false
        fields[#fields + 1] = 'hook_at'
        fields[#fields + 1] = now
      end
      if out_sid then
        fields[#fields + 1] = 'out_sid'
        fields[#fields + 1] = out_sid
      end
      fields[#fields + 1] = 'logs_due'
      fields[#fields + 1] = logs_due and '1' or '0'
    end
    if #fields > 0 then
      redis.call('HSET', key, unpack(fields))
    end
    told[#told + 1] = id
  end
end
if #told > 0 then
  redis.call('PUBLISH', channel, table.concat(told, ' '))
end
return #told
