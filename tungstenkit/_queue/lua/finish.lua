-- A worker reports what became of entries. A result is one of (RESULT):
--   body     the prediction's whole finished body (the entry was all of it),
--   outputs  outputs of one entry of a larger prediction (JSON objects joined by commas),
--   error    an error message for one entry of a larger prediction,
--   dropped  dropped unrun (its prediction had ended),
--   expired  not started by its deadline: its prediction fails ('Deadline exceeded'), unless
--       it has started (another of its entries runs): then the entry goes back to the
--       end of the stream without its deadline, to run like the others.
-- Results for predictions that already ended are discarded.
--
-- Fenced: a result counts only from the worker that owns its entry (see fence.lua).
-- A worker presumed dead whose entries another worker took over (its heartbeat expired
-- while it was paused, say) has its late results rejected: the successor's result
-- stands, and nothing is written, acked or counted for them. Its report proves it was
-- alive, so the crash that the takeover counted against each such input (reclaim.lua)
-- is withdrawn: a pause is not a death.
--
-- Output files (stored beforehand with a provisional expiry) live exactly as long as
-- the result that links to them: they get the result's expiry when their prediction
-- succeeds, and are deleted when no result links to them (theirs was rejected or
-- discarded) or their prediction fails.
-- KEYS: queue stream, queued-inputs counter, the webhook list, then one prediction
--       hash per result
-- ARGV: group, this worker (its consumer), completed timestamp, result ttl, done
--       channel, stop channel, largest body sent on the done channel, the lowest and
--       highest of the results' entry ids, the inputs per worker before entries wait
--       for admission (admission.lua: what finished makes room), then per result: id,
--       sid, kind, start,
--       count, payload, when the entry's first batch started ('' if unknown), the
--       webhook events its prediction wants ('' if none), the keys of its output
--       files (space-separated, '' if none), and '1' if its prediction may have an
--       owner's count of queued inputs to release (its entry names a tenant: an API
--       key created it), '' if not (so the usual result reads nothing more)
-- Returns {the predictions that ended here, as {id, 'success' or 'failed', ...},
--          the entry ids whose results were rejected,
--          the entry ids whose results were discarded (their prediction had ended)}.
local queue, counter, hooks = KEYS[1], KEYS[2], KEYS[3]
local group, me, now, ttl, inline = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[7])
local acks, delete, done, stopped, outcomes, rejected, discarded = {}, {}, {}, {}, {}, {}, {}
local released = 0
local owned = pending_for(queue, group, me, ARGV[8], ARGV[9])

-- Announces an ended prediction, with its body when that is small enough to carry.
local function ended(id, body, outcome, events)
  if body and #body <= inline then
    done[#done + 1] = id .. ' ' .. body
  else
    done[#done + 1] = id
  end
  outcomes[#outcomes + 1] = id
  outcomes[#outcomes + 1] = outcome
  queue_webhook(hooks, id, events, 'completed')
end

-- Fails an open prediction with `message`; returns whether it was open (the result counts).
local function fail(id, key, message, events)
  local body, dropped = fail_prediction(queue, key, message, now, ttl)
  if not body then
    return false
  end
  released = released + dropped
  release_owner(counter, key, dropped)
  ended(id, body, 'failed', events)
  stopped[#stopped + 1] = id  -- its other entries may sit in workers' buffers
  return true
end

local function assemble(key, entries)
  local fields = {}
  for _, start in entry_refs(entries) do
    fields[#fields + 1] = 'o:' .. start
  end
  local parts = redis.call('HMGET', key, unpack(fields))
  redis.call('HDEL', key, unpack(fields))
  return '[' .. table.concat(parts, ',') .. ']'
end

local function files_do(files, command, ...)
  for file in string.gmatch(files, '%S+') do
    redis.call(command, file, ...)
  end
end

-- Deletes the files of a rejected result, except those a recorded result links to: a
-- write retried after its reply was lost is rejected (its entry was acked by the first
-- try), and its files are the recorded ones.
local function drop_unlinked(key, start, files)
  if files == '' then
    return
  end
  local state = redis.call('HMGET', key, 'result', 'f:' .. start)
  for file in string.gmatch(files, '%S+') do
    local name = string.match(file, ':file:(.+)$') or file
    if not ((state[1] and string.find(state[1], name, 1, true)) or (state[2] and string.find(state[2], file, 1, true))) then
      redis.call('DEL', file)
    end
  end
end

for j = 0, (#ARGV - 10) / 10 - 1 do
  local base = 11 + j * 10
  local id, sid, kind, start, count, payload, started, events, files, owned_by =
    ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], tonumber(ARGV[base + 4]), ARGV[base + 5],
    ARGV[base + 6], ARGV[base + 7], ARGV[base + 8], ARGV[base + 9]
  local key = KEYS[4 + j]
  if not owned[sid] then
    rejected[#rejected + 1] = sid
    drop_unlinked(key, start, files)
    if redis.call('HDEL', key, 'suspect:' .. start .. ':' .. me) == 1 then
      redis.call('HINCRBY', key, 'crashes:' .. start, -1)
    end
  else
    acks[#acks + 1] = sid
    local kept, counted = false, false
    -- An entry of a prediction that ended was deleted by whoever ended it; the others
    -- are deleted here, together, and release their inputs from the queue bound.
    if kind == RESULT.body then
      if redis.call('HSETNX', key, 'result', payload) == 1 then
        redis.call('EXPIRE', key, ttl)
        files_do(files, 'EXPIRE', ttl)
        kept, counted = true, true
        delete[#delete + 1] = sid
        released = released + count
        if owned_by ~= '' then
          release_owner(counter, key, count)
        end
        ended(id, payload, string.find(payload, '"status":"success"', 1, true) and 'success' or 'failed', events)
      end
    elseif kind == RESULT.expired then
      local state = redis.call('HMGET', key, 'result', 'started')
      if not state[1] and state[2] and state[2] ~= '' then
        -- (counted as dropped here; its run counts again when it ends)
        readd(queue, queue, key, sid, {[ENTRY.deadline] = true}, true)
      elseif not state[1] then
        counted = fail(id, key, payload, events)
      end
    elseif kind ~= RESULT.dropped and redis.call('HEXISTS', key, 'result') == 0 then
      if started ~= '' then
        -- The worker may not have announced the batch's start (it ended first).
        redis.call('HSETNX', key, 'started', started)
      end
      if kind == RESULT.error then
        counted = fail(id, key, payload, events)
      elseif redis.call('HSETNX', key, 'o:' .. start, payload) == 1 then
        kept, counted = true, true
        if files ~= '' then
          redis.call('HSET', key, 'f:' .. start, files, 'files', '1')
        end
        delete[#delete + 1] = sid
        released = released + count
        if owned_by ~= '' then
          release_owner(counter, key, count)
        end
        if redis.call('HINCRBY', key, 'left', -1) == 0 then
          local state = redis.call('HMGET', key, 'entries', 'created', 'started', 'files', 'progress', 'logs')
          if state[4] then
            settle_files(key, state[1], ttl)
          end
          local body = render('success', assemble(key, state[1]), nil, state[2], state[3], now, state[5], state[6])
          conclude(key, body, ttl)
          ended(id, body, 'success', events)
        end
      end
    end
    if not kept then
      files_do(files, 'DEL')
    end
    if not counted and kind ~= RESULT.dropped then
      -- Its prediction ended first (canceled, failed by another entry): the result is
      -- dropped, and counted so, not as a success or failure of its own.
      discarded[#discarded + 1] = sid
    end
  end
end
if #delete > 0 then
  redis.call('XDEL', queue, unpack(delete))
end
if #acks > 0 then
  redis.call('XACK', queue, group, unpack(acks))
end
release(counter, released)
if released > 0 then
  admit(queue, counter, tonumber(ARGV[10]))
end
if #done > 0 then
  redis.call('PUBLISH', ARGV[5], table.concat(done, '\n'))
end
if #stopped > 0 then
  redis.call('PUBLISH', ARGV[6], table.concat(stopped, ' '))
end
return {outcomes, rejected, discarded}
