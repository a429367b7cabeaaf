-- A stopping worker hands back entries it read but never started: each goes back to
-- the end of the stream under a new id, and its prediction's entry list follows.
-- Fenced: only entries the worker still owns go back (one that another worker took
-- over is that worker's to run).
-- KEYS: queue stream, then one prediction hash per entry
-- ARGV: group, this worker (its consumer), the lowest and highest of the entry ids,
--       then per entry: sid, id, start, count, group key, data, total, created,
--       webhook events ('' if none)
local queue, group = KEYS[1], ARGV[1]
local owned = pending_for(queue, group, ARGV[2], ARGV[3], ARGV[4])
local moved = 0
for j = 0, (#ARGV - 4) / 9 - 1 do
  local base = 5 + j * 9
  local sid, id, start, count, key_group, data, total, created, events =
    ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4], ARGV[base + 5],
    ARGV[base + 6], ARGV[base + 7], ARGV[base + 8]
  local key = KEYS[2 + j]
  -- Only entries still in the stream belong to live predictions (cancel deletes them).
  if owned[sid] then
    redis.call('XACK', queue, group, sid)
  end
  if owned[sid] and redis.call('XDEL', queue, sid) == 1 then
    local new_sid
    if events == '' then
      new_sid = redis.call('XADD', queue, '*', 'p', id, 's', start, 'n', count, 'g', key_group, 'd', data,
        't', total, 'c', created)
    else
      new_sid = redis.call('XADD', queue, '*', 'p', id, 's', start, 'n', count, 'g', key_group, 'd', data,
        't', total, 'c', created, 'w', events)
    end
    local entries = redis.call('HGET', key, 'entries')
    if entries then
      local old = sid .. ':' .. start .. ':' .. count
      local from, to = string.find(entries, old, 1, true)
      if from then
        entries = string.sub(entries, 1, from - 1) .. new_sid .. ':' .. start .. ':' .. count .. string.sub(entries, to + 1)
        redis.call('HSET', key, 'entries', entries)
      end
    end
    moved = moved + 1
  end
end
return moved
