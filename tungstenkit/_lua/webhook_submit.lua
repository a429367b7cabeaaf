-- Accept a prediction that asked for a webhook. _queue.py wraps submit.lua as the
-- function `submit` above this text, so both accept predictions the same way.
-- KEYS and ARGV: submit.lua's, then two more arguments: the webhook's URL and the
-- events it wants (space-separated: start, completed).
-- Returns what submit.lua returns.
local events = table.remove(ARGV)
local url = table.remove(ARGV)
local reply = submit()
if reply[1] == 1 then
  redis.call('HSET', KEYS[3], 'webhook', url, 'webhook_events', events)
end
return reply
