-- NEXT_GENERATION: numbers a new generation and registers it before any of
-- its rows is written.
-- KEYS[1] genseq (the counter), KEYS[2] the service's set of generations (one slot).
-- ARGV[1] floor: the highest id the run history has seen; the new id is above it.
-- Returns the new id (an integer).
local n = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if n <= floor then
  n = floor + 1
  redis.call('SET', KEYS[1], n)
end
redis.call('SADD', KEYS[2], tostring(n))
return n
