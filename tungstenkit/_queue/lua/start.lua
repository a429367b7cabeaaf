-- A worker starts a batch: its predictions become running, and the worker records
-- which entries it is running (so that if it dies, they count a crash).
-- KEYS: the worker's running key, the webhook list, then the batch's prediction hashes
-- ARGV: started timestamp, the batch's entry ids (space-separated), running key ttl,
--       then per prediction a flag string: 'w' if this batch holds all of it in one
--       entry read for the first time (one check suffices), 'h' if its webhook wants
--       the start event (both: 'wh'; neither: '-')
-- Returns the 1-based positions (among the predictions) of those that already ended.
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
local ended = {}
for i = 3, #KEYS do
  local key, flags = KEYS[i], ARGV[1 + i]
  local began = 0
  if string.find(flags, 'w', 1, true) then
    -- Ending a prediction sets `started` (to "" if it never started), so this fails
    -- exactly for those that ended.
    began = redis.call('HSETNX', key, 'started', ARGV[1])
    if began == 0 then
      ended[#ended + 1] = i - 2
    end
  elseif redis.call('HEXISTS', key, 'result') == 1 or redis.call('EXISTS', key) == 0 then
    ended[#ended + 1] = i - 2
  else
    began = redis.call('HSETNX', key, 'started', ARGV[1])
  end
  if began == 1 and string.find(flags, 'h', 1, true) then
    redis.call('RPUSH', KEYS[2], string.match(key, 'pred:([^:]+)$') .. ' start')
  end
end
return ended
