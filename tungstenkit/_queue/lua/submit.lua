-- Accept predictions (one request's, or several sent together): check the queue
-- bound, add each prediction's entries to the stream, and create its hash.
-- KEYS: queue stream, queued-inputs counter, then one prediction hash per prediction
-- ARGV: created timestamp, limit (0: none), then per prediction: id, inputs, chunks,
--       webhook URL ('' if none), webhook events ('' if none), and per chunk: start,
--       count, option group, JSON list of inputs
-- Returns {accepted flags (1/0) in order, queued inputs afterwards}. Running it again
-- with the same ids changes nothing (a retry after a dropped connection is safe).
local queue, counter = KEYS[1], KEYS[2]
local created, limit = ARGV[1], tonumber(ARGV[2])
local queued = tonumber(redis.call('GET', counter) or '0')
local added = 0
local accepted = {}
local i = 3
for p = 3, #KEYS do
  local id, total, chunks, hook, events = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  if redis.call('EXISTS', KEYS[p]) == 1 then
    -- The same request sent again after its connection dropped (ids are random, so an
    -- existing hash is this very prediction): it was accepted the first time.
    accepted[#accepted + 1] = 1
  elseif limit > 0 and queued + total > limit then
    accepted[#accepted + 1] = 0
  else
    local entries = {}
    for c = 0, chunks - 1 do
      local at = i + c * 4
      local sid
      if hook == '' then
        sid = redis.call('XADD', queue, '*', 'p', id, 's', ARGV[at], 'n', ARGV[at + 1], 'g', ARGV[at + 2],
          'd', ARGV[at + 3], 't', total, 'c', created)
      else
        -- Workers see which events the prediction's webhook wants.
        sid = redis.call('XADD', queue, '*', 'p', id, 's', ARGV[at], 'n', ARGV[at + 1], 'g', ARGV[at + 2],
          'd', ARGV[at + 3], 't', total, 'c', created, 'w', events)
      end
      entries[#entries + 1] = sid .. ':' .. ARGV[at] .. ':' .. ARGV[at + 1]
    end
    redis.call('HSET', KEYS[p], 'created', created, 'n', total, 'left', chunks, 'entries', table.concat(entries, ' '))
    if hook ~= '' then
      redis.call('HSET', KEYS[p], 'webhook', hook, 'webhook_events', events)
    end
    queued = queued + total
    added = added + total
    accepted[#accepted + 1] = 1
  end
  i = i + chunks * 4
end
if added > 0 then
  redis.call('INCRBY', counter, added)
end
return {accepted, queued}
