-- Admission: priorities, and fair shares between tenants (API key owners).
--
-- While the inputs in the worker stream or held by workers (queued minus waiting) stay
-- under a limit (`per_worker` inputs per live worker: about the batch each runs and the
-- one it reads ahead), submits add their entries to the stream at once, first come
-- first served. Past it, entries wait in a stream of their priority and tenant,
--   <prefix>wait:<priority>:<tenant>  (the same fields as the worker stream's entries),
-- and are admitted into the worker stream as room frees up: the priority by turns
-- (TURNS: of every 7 entries admitted while all three wait, 4 high, 2 normal, 1 low; a
-- turn whose priority has nothing waiting goes to the highest that has), and within a
-- priority one entry per tenant in turn (<prefix>turns:<priority> lists the waiting
-- streams; a tenant that starts waiting goes first). <prefix>waiting counts the inputs
-- waiting, <prefix>turn the turns taken. A prediction with waiting entries names its
-- stream in its hash (`wq`), so that a cancel finds them.
-- What a worker has read ahead would still run before what starts waiting: submit.lua
-- announces a waiting stream that starts while others wait (or a high one), and
-- step_aside.lua admits its first entries out of turn in place of read-ahead entries of
-- a lower priority (or another tenant), each of which steps aside at most once. The
-- turns above are untouched by it, so their bound stands.

local PRIORITIES = {'high', 'normal', 'low'}
local TURNS = {'high', 'normal', 'high', 'low', 'high', 'normal', 'high'}

-- The key prefix of a namespace, from its worker stream's name (`<prefix>queue`).
local function prefix_of(queue)
  return string.sub(queue, 1, -6)
end

-- How many inputs the worker stream and the workers may hold before entries wait.
local function admission_limit(prefix, per_worker)
  return per_worker * math.max(1, redis.call('ZCARD', prefix .. 'workers'))
end

-- Moves the first entry of the waiting stream `stream` (listed in `turns`) to the end
-- of the worker stream, and takes the stream off the list once it is empty. Returns the
-- inputs moved (0 if it had none). The caller updates <prefix>waiting.
local function admit_head(queue, prefix, turns, stream)
  local found = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  local count = 0
  if #found > 0 then
    local sid, flat = found[1][1], found[1][2]
    local id
    for i = 1, #flat, 2 do
      if flat[i] == ENTRY.prediction then
        id = flat[i + 1]
      elseif flat[i] == ENTRY.count then
        count = tonumber(flat[i + 1])
      end
    end
    readd(stream, queue, prefix .. 'pred:' .. id, sid, nil, true)
  end
  if #found == 0 or redis.call('XLEN', stream) == 0 then
    redis.call('LREM', turns, 0, stream)
    redis.call('DEL', stream)
  end
  return count
end

-- Moves waiting entries into the worker stream while there is room. Returns the inputs moved.
local function admit(queue, counter, per_worker)
  local prefix = prefix_of(queue)
  local waiting_key = prefix .. 'waiting'
  local waiting = tonumber(redis.call('GET', waiting_key) or '0')
  if waiting <= 0 then
    return 0
  end
  local queued = tonumber(redis.call('GET', counter) or '0')
  local room = admission_limit(prefix, per_worker) - (queued - waiting)
  local admitted, rounds = 0, 0
  while room > 0 and rounds < 1000 do
    rounds = rounds + 1
    local preferred = TURNS[redis.call('INCR', prefix .. 'turn') % #TURNS + 1]
    local turns
    for _, priority in ipairs({preferred, unpack(PRIORITIES)}) do
      if redis.call('LLEN', prefix .. 'turns:' .. priority) > 0 then
        turns = prefix .. 'turns:' .. priority
        break
      end
    end
    if not turns then
      -- Nothing waits after all (what waited was canceled): the count starts afresh.
      redis.call('SET', waiting_key, 0)
      return admitted
    end
    local count = admit_head(queue, prefix, turns, redis.call('LMOVE', turns, turns, 'LEFT', 'RIGHT'))
    room = room - count
    admitted = admitted + count
  end
  if admitted > 0 and redis.call('DECRBY', waiting_key, admitted) < 0 then
    redis.call('SET', waiting_key, 0)
  end
  return admitted
end
