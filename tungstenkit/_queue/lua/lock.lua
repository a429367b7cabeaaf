-- Take a lock, or keep it if this owner holds it already.
-- KEYS: the lock
-- ARGV: owner, time to live in milliseconds
-- Returns 1 if the owner holds the lock now, 0 if someone else does.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
