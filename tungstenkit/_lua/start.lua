-- A worker starts a batch: its pending predictions become running, and the worker
-- records which entries it is running (so that if it dies, they count a crash).
-- KEYS: the worker's running key, then the batch's prediction hashes
-- ARGV: started timestamp, the batch's entry ids (space-separated), running key ttl,
--       then (optional) the names of the metrics hash and of the webhook list
-- Returns the 1-based positions (among the predictions) of those that must not run.
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
local ended = {}
for i = 2, #KEYS do
  local status = redis.call('HGET', KEYS[i], 'status')
  if status == 'pending' then
    redis.call('HSET', KEYS[i], 'status', 'running', 'started', ARGV[1])
    prediction_started(KEYS[i], ARGV[4], ARGV[5])
  elseif status ~= 'running' then
    ended[#ended + 1] = i - 1
  end
end
flush_metrics(ARGV[4])
return ended
