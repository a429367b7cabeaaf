-- A worker's read-ahead steps aside for work that just started waiting (see
-- admission.lua): submit.lua announces a waiting stream that starts while others wait
-- (or a high one), and a worker holding entries it read ahead, not started, of a lower
-- priority, or of another tenant of that priority, hands them back here. The first
-- entries of the waiting stream are admitted in their place, out of turn (up to as many
-- inputs as are handed back, at least one entry), and the handed-back entries go back
-- to the end of the worker stream right behind them (a stream adds only at its end),
-- with field ENTRY.stepped_aside, so that an entry steps aside at most once. They stay admitted (queued
-- minus waiting is the same: the workers hold that much more, for about a batch), keep
-- their order and fields (deadline, priority, when queued), and are delivered afresh:
-- stepping aside counts no crash.
-- Fenced: only entries this worker still owns move.
-- KEYS: queue stream, the waiting stream, then one prediction hash per entry
-- ARGV: group, this worker (its consumer), the lowest and highest of the entry ids, the
--       inputs the entries hold, then the entry ids
-- Returns the ids of the entries this worker no longer holds: none when nothing waits
-- in that stream any more (then the worker keeps them and runs them).
local queue, waiting_stream, group = KEYS[1], KEYS[2], ARGV[1]
local prefix = prefix_of(queue)
local priority = string.match(string.sub(waiting_stream, #prefix + 1), '^wait:([^:]+):')
if string.sub(waiting_stream, 1, #prefix) ~= prefix or not priority then
  return {}
end
local owned = pending_for(queue, group, ARGV[2], ARGV[3], ARGV[4])
local budget = tonumber(ARGV[5])
local any_owned = false
for j = 6, #ARGV do
  any_owned = any_owned or owned[ARGV[j]] ~= nil
end
if not any_owned then
  return {}
end
local turns = prefix .. 'turns:' .. priority
local admitted = 0
while admitted < budget and redis.call('EXISTS', waiting_stream) == 1 do
  local count = admit_head(queue, prefix, turns, waiting_stream)
  if count == 0 then
    break
  end
  admitted = admitted + count
end
if admitted == 0 then
  return {}
end
local waiting_key = prefix .. 'waiting'
if redis.call('DECRBY', waiting_key, admitted) < 0 then
  redis.call('SET', waiting_key, 0)
end
local gone = {}
for j = 6, #ARGV do
  local sid = ARGV[j]
  if owned[sid] then
    redis.call('XACK', queue, group, sid)
    -- (An entry no longer in the stream belongs to a prediction that ended meanwhile.)
    readd(queue, queue, KEYS[j - 3], sid, nil, true, {[ENTRY.stepped_aside] = '1'})
    gone[#gone + 1] = sid
  end
end
return gone
