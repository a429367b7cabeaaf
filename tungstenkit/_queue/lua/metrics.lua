-- A worker adds what it counted since its last report to the metrics hash, exactly once.
-- Each report carries the worker's next sequence number: one that was applied already
-- (its reply was lost, Redis restarted, and the worker sent it again) changes nothing.
-- KEYS: the metrics hash, the hash of each worker's last applied report
-- ARGV: worker, sequence number, then per metric: field, amount (fields ending in
--       ':sum' are floats)
-- Returns 1 if applied, 0 if it had been already.
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) <= last then
  return 0
end
for i = 3, #ARGV, 2 do
  if string.sub(ARGV[i], -4) == ':sum' then
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
