-- Fencing, shared by the scripts that act for a worker on entries it holds.
--
-- A worker owns an entry while the entry is pending for it in the consumer group. It
-- stops owning it when the entry is acked or deleted (its prediction ended), or when
-- another worker claims it (this one was presumed dead). Only the owner may start,
-- finish or hand back an entry.

-- The ids of the entries pending for `consumer` between `lo` and `hi` (inclusive), as
-- a set: one command however many entries a batch holds.
local function pending_for(queue, group, consumer, lo, hi)
  local owned = {}
  for _, item in ipairs(redis.call('XPENDING', queue, group, lo, hi, 1000000, consumer)) do
    owned[item[1]] = true
  end
  return owned
end
