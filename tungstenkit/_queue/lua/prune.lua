-- Drop from the workers index every worker whose heartbeat key is gone (it expired, or
-- the worker stopped), so the index holds exactly the live workers; forget their last
-- metrics report too.
-- KEYS: the workers index, the hash of each worker's last applied metrics report
-- ARGV: the prefix of heartbeat keys
-- Returns how many were dropped.
local dropped = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. id) == 0 then
    dropped = dropped + redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  end
end
return dropped
