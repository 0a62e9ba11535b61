-- FLIP: makes a generation the live one, if the run still holds the lease.
-- KEYS[1] lease, KEYS[2] current (the pointer), KEYS[3] the generation's
--   metadata hash, KEYS[4] the service's set of generations (all one slot).
-- ARGV[1] run id, ARGV[2] generation id, ARGV[3..] metadata field, value, ...
-- Returns the generation the pointer named before (nil when none).
-- Errors: DAEDA_LEASE_LOST when the lease is gone or held by another run;
--   then nothing is written.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DAEDA_LEASE_LOST the lease is no longer held by this run')
end
redis.call('HSET', KEYS[3], unpack(ARGV, 3))
local old = redis.call('GET', KEYS[2])
redis.call('SET', KEYS[2], ARGV[2])
return old
