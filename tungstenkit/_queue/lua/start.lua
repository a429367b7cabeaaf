-- A worker starts a batch: its predictions become running, and the worker records
-- which entries it is running (so that if it dies, they count a crash).
-- KEYS: the worker's running key, then the batch's prediction hashes
-- ARGV: started timestamp, the batch's entry ids (space-separated), running key ttl,
--       then per prediction: 1 if this batch holds all of it and it was never started
--       before (one check suffices), else 0
-- Returns the 1-based positions (among the predictions) of those that already ended.
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
local ended = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  if ARGV[2 + i] == '1' then
    -- Ending a prediction sets `started` (to "" if it never started), so this fails
    -- exactly for those that ended.
    if redis.call('HSETNX', key, 'started', ARGV[1]) == 0 then
      ended[#ended + 1] = i - 1
    end
  elseif redis.call('HEXISTS', key, 'result') == 1 or redis.call('EXISTS', key) == 0 then
    ended[#ended + 1] = i - 1
  else
    redis.call('HSETNX', key, 'started', ARGV[1])
  end
end
return ended
