-- A worker starts a batch: its pending predictions become running.
-- KEYS: the batch's prediction hashes.  ARGV: started timestamp.
-- Returns the 1-based positions of predictions that must not run (ended or expired).
local ended = {}
for i, key in ipairs(KEYS) do
  local status = redis.call('HGET', key, 'status')
  if status == 'pending' then
    redis.call('HSET', key, 'status', 'running', 'started', ARGV[1])
  elseif status ~= 'running' then
    ended[#ended + 1] = i
  end
end
return ended
