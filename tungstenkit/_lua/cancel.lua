-- Cancel a prediction: it reads failed/"Canceled" at once, its unread entries leave the
-- stream, and workers holding the rest hear about it on the stop channel.
-- KEYS: prediction hash, queue stream, queued-inputs counter, then (optional) the
--       metrics hash and the webhook list
-- ARGV: id, completed timestamp, result ttl, done channel, stop channel
-- Returns -1 if there is no such prediction, 0 if it had already ended, 1 if canceled.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return -1
end
if not is_open(status) then
  return 0
end
local released = fail_prediction(KEYS[2], KEYS[1], 'Canceled', ARGV[2], tonumber(ARGV[3]))
if released > 0 then
  redis.call('DECRBY', KEYS[3], released)
end
prediction_ended(KEYS[1], 'canceled', KEYS[4], KEYS[5])
flush_metrics(KEYS[4])
redis.call('PUBLISH', ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
