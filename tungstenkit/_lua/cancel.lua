-- Cancel a prediction: it reads failed/"Canceled" at once, its unread entries leave the
-- stream, and workers holding the rest hear about it on the stop channel.
-- KEYS: prediction hash, queue stream, queued-inputs counter
-- ARGV: id, completed timestamp, result ttl, done channel, stop channel
-- Returns -1 if there is no such prediction, 0 if it had already ended, 1 if canceled.
local state = redis.call('HMGET', KEYS[1], 'status', 'entries')
if not state[1] then
  return -1
end
if not is_open(state[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', 'Canceled', 'completed', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local released = drop_entries(KEYS[2], state[2])
if released > 0 then
  redis.call('DECRBY', KEYS[3], released)
end
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
