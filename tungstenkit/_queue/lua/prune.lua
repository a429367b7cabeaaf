-- Drop from the workers index every worker whose heartbeat key is gone (it expired, or
-- the worker stopped), so the index holds exactly the live workers.
-- KEYS: the workers index
-- ARGV: the prefix of heartbeat keys
-- Returns how many were dropped.
local dropped = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    dropped = dropped + redis.call('ZREM', KEYS[1], id)
  end
end
return dropped
