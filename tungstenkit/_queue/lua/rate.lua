-- One request of an API key against its rate limit: a token bucket holding up to
-- `burst` requests, refilled at `rate` per second, on Redis's clock (so every API
-- process draws from the same bucket).
-- KEYS: the key's bucket (hash: tokens, at)
-- ARGV: rate (requests per second), burst
-- Returns '0' if the request may go, else the seconds until it may (as a string: Redis
-- would truncate a Lua number to an integer).
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.6f', now))
-- A full bucket is the same as none: let it go once it would have refilled.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.3f', wait)
