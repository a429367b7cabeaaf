-- Admit waiting entries into the worker stream while the workers have room (see
-- admission.lua); a reader runs it right before it reads.
-- KEYS: queue stream, queued-inputs counter
-- ARGV: inputs per worker before entries wait
-- Returns the inputs admitted.
return admit(KEYS[1], KEYS[2], tonumber(ARGV[1]))
