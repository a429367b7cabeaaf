-- Accept a prediction: check the queue bound, add its entries, create its hash.
-- KEYS: queue stream, queued-inputs counter, prediction hash
-- ARGV: id, created, total inputs, limit (0: none), then per entry: start, count, group, data
-- Returns {1, queued inputs} when accepted, {0, queued inputs} when the queue is full.
local total = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local queued = redis.call('INCRBY', KEYS[2], total)
if limit > 0 and queued > limit then
  redis.call('DECRBY', KEYS[2], total)
  return {0, queued - total}
end
local entries = {}
for i = 5, #ARGV, 4 do
  local sid = redis.call('XADD', KEYS[1], '*', 'p', ARGV[1], 's', ARGV[i], 'n', ARGV[i + 1], 'g', ARGV[i + 2], 'd', ARGV[i + 3])
  entries[#entries + 1] = sid .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1]
end
redis.call('HSET', KEYS[3], 'status', 'pending', 'created', ARGV[2], 'n', total, 'left', #entries,
  'entries', table.concat(entries, ' '))
return {1, queued}
