-- Accept predictions (one request's, or several sent together): check the queue
-- bound, add each prediction's entries to the stream, and create its hash.
-- KEYS: queue stream, queued-inputs counter, then per prediction: its hash and its
--       idempotency key (the hash again when the request carried no Idempotency-Key)
-- ARGV: created timestamp, limit (0: none), idempotency ttl (seconds), inputs per
--       worker before entries wait for admission (see admission.lua), then per
--       prediction: id, inputs, chunks, its options ('' for none of them, else a JSON
--       list: webhook URL ('' if none), webhook events ('' if none), request fingerprint
--       ('' without an Idempotency-Key), the API key owner it is created for ('' if
--       none) and that owner's limit of queued inputs (0: none), its deadline (ms from
--       now, 0: none), priority (high, normal, low), tenant (a name for keys)), and per
--       chunk: start, count, option group, JSON list of inputs
-- Entries (fields ENTRY) carry webhook_events when there is a webhook, deadline (in ms
-- of Redis's clock) when there is a deadline, priority unless it is normal, and tenant
-- unless it is the one tenant of a server without API keys (NO_TENANT).
-- A waiting stream that starts is announced on the channel <prefix>waits (see below).
-- Returns {per prediction in order: 1 accepted, 0 refused (queue full), 2 refused (its
--          owner has as many inputs queued as it may), '=<id>' the
--          same request was accepted before as prediction <id>, '!<id>' its
--          Idempotency-Key was used with another request (for <id>); queued inputs
--          afterwards}. Running it again with the same ids changes nothing (a retry
--          after a dropped connection is safe).
-- An owner's count of queued inputs is `<counter>:<owner>`, released by the scripts
-- that release the queue bound (common.lua's release_owner).
local queue, counter = KEYS[1], KEYS[2]
local created, limit, idem_ttl, per_worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local queued = tonumber(redis.call('GET', counter) or '0')
local prefix = prefix_of(queue)
local waiting = tonumber(redis.call('GET', prefix .. 'waiting') or '0')
local admission
local added = 0
local accepted = {}
local owners = {}
local started = {}
local now_ms
local i = 5
for p = 3, #KEYS, 2 do
  local id, total, chunks = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local hook, events, fingerprint, owner, owner_limit, deadline, priority, tenant =
    '', '', '', '', 0, 0, 'normal', NO_TENANT
  if ARGV[i + 3] ~= '' then
    local options = cjson.decode(ARGV[i + 3])
    hook, events, fingerprint, owner = options[1], options[2], options[3], options[4]
    owner_limit, deadline, priority, tenant = options[5], options[6], options[7], options[8]
  end
  i = i + 4
  local key, idem = KEYS[p], KEYS[p + 1]
  local owner_queued = 0
  if owner ~= '' then
    owner_queued = owners[owner] or tonumber(redis.call('GET', counter .. ':' .. owner) or '0')
  end
  local earlier = fingerprint ~= '' and redis.call('GET', idem)
  if earlier then
    -- "<id>|<fingerprint>" of the request first sent with this key: concurrent
    -- duplicates all see the first one's (this script runs alone).
    local first, first_fingerprint = string.match(earlier, '^([^|]*)|(.*)$')
    accepted[#accepted + 1] = (first_fingerprint == fingerprint and '=' or '!') .. first
  elseif redis.call('EXISTS', key) == 1 then
    -- The same request sent again after its connection dropped (ids are random, so an
    -- existing hash is this very prediction): it was accepted the first time.
    accepted[#accepted + 1] = 1
  elseif limit > 0 and queued + total > limit then
    accepted[#accepted + 1] = 0
  elseif owner_limit > 0 and owner_queued + total > owner_limit then
    accepted[#accepted + 1] = 2
  else
    local entries = {}
    local extra = {}
    if hook ~= '' then
      -- Workers see which events the prediction's webhook wants.
      extra[#extra + 1] = ENTRY.webhook_events
      extra[#extra + 1] = events
    end
    if deadline > 0 then
      if not now_ms then
        local clock = redis.call('TIME')
        now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
      end
      extra[#extra + 1] = ENTRY.deadline
      extra[#extra + 1] = string.format('%d', now_ms + deadline)
    end
    -- Workers see whose and how urgent an entry is (see step_aside.lua); the usual ones
    -- (normal, the one tenant of a server without API keys) say nothing.
    if priority ~= 'normal' then
      extra[#extra + 1] = ENTRY.priority
      extra[#extra + 1] = priority
    end
    if tenant ~= NO_TENANT then
      extra[#extra + 1] = ENTRY.tenant
      extra[#extra + 1] = tenant
    end
    -- Straight to the workers while they have room and nothing waits; else it waits
    -- for admission, by priority and tenant.
    local target = queue
    -- (The limit is per_worker for one worker or none: above it, ask how many there are.)
    if queued + total > per_worker then
      admission = admission or admission_limit(prefix, per_worker)
    end
    if waiting > 0 or queued + total > (admission or per_worker) then
      target = prefix .. 'wait:' .. priority .. ':' .. tenant
      if redis.call('EXISTS', target) == 0 then
        redis.call('LPUSH', prefix .. 'turns:' .. priority, target)
        if priority == 'high' or waiting > 0 then
          started[#started + 1] = target
        end
      end
      redis.call('INCRBY', prefix .. 'waiting', total)
      waiting = waiting + total
      redis.call('HSET', key, 'wq', target)
    end
    for c = 0, chunks - 1 do
      local at = i + c * 4
      local sid
      if #extra == 0 then
        sid = redis.call('XADD', target, '*', ENTRY.prediction, id, ENTRY.start, ARGV[at], ENTRY.count, ARGV[at + 1],
          ENTRY.group, ARGV[at + 2], ENTRY.data, ARGV[at + 3], ENTRY.total, total, ENTRY.created, created)
      else
        sid = redis.call('XADD', target, '*', ENTRY.prediction, id, ENTRY.start, ARGV[at], ENTRY.count, ARGV[at + 1],
          ENTRY.group, ARGV[at + 2], ENTRY.data, ARGV[at + 3], ENTRY.total, total, ENTRY.created, created,
          unpack(extra))
      end
      entries[#entries + 1] = entry_ref(sid, ARGV[at], ARGV[at + 1])
    end
    redis.call('HSET', key, 'created', created, PREDICTION.inputs, total, 'left', chunks, 'entries', entry_list(entries))
    if hook ~= '' then
      redis.call('HSET', key, 'webhook', hook, 'webhook_events', events)
    end
    if fingerprint ~= '' then
      redis.call('SET', idem, id .. '|' .. fingerprint, 'EX', idem_ttl)
    end
    if owner ~= '' then
      redis.call('HSET', key, 'owner', owner)
      redis.call('INCRBY', counter .. ':' .. owner, total)
      owners[owner] = owner_queued + total
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
if waiting > 0 then
  admit(queue, counter, per_worker)
end
-- The waiting streams that started (while others waited, or of high priority) and still
-- wait: workers holding read-ahead entries of a lower priority, or of another tenant,
-- hand them back for these (step_aside.lua). Nothing is announced while one tenant's
-- work of one priority waits alone (the usual backlog).
for _, stream in ipairs(started) do
  if redis.call('EXISTS', stream) == 1 then
    redis.call('PUBLISH', prefix .. 'waits', stream)
  end
end
return {accepted, queued}
