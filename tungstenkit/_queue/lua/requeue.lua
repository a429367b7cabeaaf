-- A stopping worker hands back entries it read but never started: each goes back to
-- the end of the stream under a new id, and its prediction's entry list follows.
-- Fenced: only entries the worker still owns go back (one that another worker took
-- over is that worker's to run).
-- KEYS: queue stream, then one prediction hash per entry
-- ARGV: group, this worker (its consumer), the lowest and highest of the entry ids,
--       then the entry ids
-- Returns how many entries went back.
local queue, group = KEYS[1], ARGV[1]
local owned = pending_for(queue, group, ARGV[2], ARGV[3], ARGV[4])
local moved = 0
for j = 5, #ARGV do
  local sid = ARGV[j]
  if owned[sid] then
    redis.call('XACK', queue, group, sid)
    -- Only entries still in the stream belong to live predictions (cancel deletes them).
    if readd(queue, queue, KEYS[j - 3], sid, nil, true) then
      moved = moved + 1
    end
  end
end
return moved
