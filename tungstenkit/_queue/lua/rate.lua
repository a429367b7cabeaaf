-- Requests of API keys against their rate limits (those of one flush of an API
-- process, together): each key has a token bucket holding up to `burst` requests,
-- refilled at `rate` per second, on Redis's clock (so every API process draws from the
-- same bucket).
-- KEYS: one bucket (hash: tokens, at) per request
-- ARGV: per request: rate (requests per second), burst
-- Returns, per request, '0' if it may go, else the seconds until it may (as strings:
-- Redis would truncate a Lua number to an integer).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local waits = {}
for k = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * k - 1]), tonumber(ARGV[2 * k])
  local state = redis.call('HMGET', KEYS[k], 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = (1 - tokens) / rate
  end
  redis.call('HSET', KEYS[k], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
  -- A full bucket is the same as none: let it go once it would have refilled.
  redis.call('PEXPIRE', KEYS[k], math.ceil(burst / rate * 1000) + 1000)
  waits[k] = string.format('%.3f', wait)
end
return waits
