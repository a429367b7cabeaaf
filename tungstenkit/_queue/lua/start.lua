-- A worker starts a batch: its predictions become running, and the worker records
-- which entries it is running (so that if it dies, they count a crash).
-- Fenced: only entries still pending for this worker in the consumer group start. An
-- entry another worker took over meanwhile (this one was presumed dead: its heartbeat
-- expired while it was paused) is reported back as lost, and the worker drops it.
-- KEYS: the worker's running key, the webhook list, the queue stream, then the batch's
--       prediction hashes
-- ARGV: started timestamp, the batch's entry ids (space-separated), running key ttl,
--       group, this worker (its consumer), the lowest and highest of the entry ids ('' if
--       none), the events channel, then per prediction its flags (START): whole if this
--       batch holds all of it in one entry read for the first time (one check suffices),
--       hooked if its webhook wants the start event
-- The predictions that started here are announced on the events channel (one message
-- for the batch), so that their event streams send `start` at once.
-- Returns {the 1-based positions (among the predictions) of those that already ended,
--          the entry ids this worker no longer owns}.
local owned_list, lost = {}, {}
if ARGV[6] ~= '' then
  local owned = pending_for(KEYS[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
  for sid in string.gmatch(ARGV[2], '%S+') do
    if owned[sid] then
      owned_list[#owned_list + 1] = sid
    else
      lost[#lost + 1] = sid
    end
  end
  if #owned_list == 0 then
    -- Nothing of the batch is this worker's any more: it must not run, or record anything.
    return {{}, lost}
  end
end
redis.call('SET', KEYS[1], #lost > 0 and table.concat(owned_list, ' ') or ARGV[2], 'EX', tonumber(ARGV[3]))
local ended, began_ids = {}, {}
for i = 4, #KEYS do
  local key, flags = KEYS[i], ARGV[5 + i]
  local began = 0
  if string.find(flags, START.whole, 1, true) then
    -- Ending a prediction sets `started` (to "" if it never started), so this fails
    -- exactly for those that ended.
    began = redis.call('HSETNX', key, 'started', ARGV[1])
    if began == 0 then
      ended[#ended + 1] = i - 3
    end
  elseif redis.call('HEXISTS', key, 'result') == 1 or redis.call('EXISTS', key) == 0 then
    ended[#ended + 1] = i - 3
  else
    began = redis.call('HSETNX', key, 'started', ARGV[1])
  end
  if began == 1 then
    local id = string.match(key, 'pred:([^:]+)$')
    began_ids[#began_ids + 1] = id
    if string.find(flags, START.hooked, 1, true) then
      redis.call('RPUSH', KEYS[2], id .. ' start')
    end
  end
end
if #began_ids > 0 then
  redis.call('PUBLISH', ARGV[8], table.concat(began_ids, ' '))
end
return {ended, lost}
