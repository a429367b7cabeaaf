-- Moving an entry to the end of a stream, shared by the scripts that hand entries back.

-- Moves entry `sid` of stream `from` to the end of stream `to` under a new id, leaving
-- out the fields named in the set `without` (nil: none) and adding ENTRY.queued, when the
-- entry has none yet, with the ms of its first id if `stamp` (when it was queued: the
-- new id no longer tells), then the fields of the table `extra` (nil: none), and
-- updates its prediction's entry list (hash `key`).
-- Returns the new id, or nil if the entry is no longer in `from` (its prediction ended,
-- which deleted it).
local function readd(from, to, key, sid, without, stamp, extra)
  local found = redis.call('XRANGE', from, sid, sid)
  if #found == 0 then
    return nil
  end
  local flat, kept = found[1][2], {}
  local start, count
  for i = 1, #flat, 2 do
    local name = flat[i]
    if not (without and without[name]) and not (extra and extra[name]) then
      kept[#kept + 1] = name
      kept[#kept + 1] = flat[i + 1]
    end
    if name == ENTRY.start then
      start = flat[i + 1]
    elseif name == ENTRY.count then
      count = flat[i + 1]
    elseif name == ENTRY.queued then
      stamp = false
    end
  end
  if stamp then
    kept[#kept + 1] = ENTRY.queued
    kept[#kept + 1] = string.match(sid, '^(%d+)')
  end
  for name, value in pairs(extra or {}) do
    kept[#kept + 1] = name
    kept[#kept + 1] = value
  end
  redis.call('XDEL', from, sid)
  local new_sid = redis.call('XADD', to, '*', unpack(kept))
  local entries = redis.call('HGET', key, 'entries')
  if entries then
    local at, last = string.find(entries, entry_ref(sid, start, count), 1, true)
    if at then
      entries = string.sub(entries, 1, at - 1) .. entry_ref(new_sid, start, count) .. string.sub(entries, last + 1)
      redis.call('HSET', key, 'entries', entries)
    end
  end
  return new_sid
end
