-- Cancel a prediction: it reads failed/"Canceled" at once, its unread entries leave the
-- stream, and workers holding the rest hear about it on the stop channel.
-- KEYS: prediction hash, queue stream, queued-inputs counter, webhook list, metrics hash
-- ARGV: id, completed timestamp, result ttl, done channel, stop channel, inputs per
--       worker before entries wait (the room it makes admits waiting entries)
-- Returns the prediction's body (as it now stands), or nil if there is no such prediction.
local body, released, events, entries = fail_prediction(KEYS[2], KEYS[1], 'Canceled', ARGV[2], tonumber(ARGV[3]))
if not body then
  -- Already ended (its body stands), or no such prediction.
  return redis.call('HGET', KEYS[1], 'result')
end
release(KEYS[3], released)
release_owner(KEYS[3], KEYS[1], released)
admit(KEYS[2], KEYS[3], tonumber(ARGV[6]))
queue_webhook(KEYS[4], ARGV[1], events, 'completed')
count_ended(KEYS[5], 'canceled', entries)
redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' ' .. body)
redis.call('PUBLISH', ARGV[5], ARGV[1])
return body
