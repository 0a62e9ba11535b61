-- PUT_IF_NEWER: writes a row unless the stored one is as new or newer (the
-- event time, a little-endian i64, sits at byte 2 of both; see `codec`).
-- KEYS[1] the row; KEYS[2] (optional, one server only, where a script may
--   touch keys of two slots) the service's lease.
-- ARGV[1] the row's value; ARGV[2] (with KEYS[2]) the run id.
-- Returns 1 inserted, 2 replaced, 0 kept; -1 when KEYS[2] is given and the
--   lease is gone or another run's: then nothing is written.
if KEYS[2] and redis.call('GET', KEYS[2]) ~= ARGV[2] then return -1 end
local cur = redis.call('GET', KEYS[1])
if cur then
  if struct.unpack('<i8', cur, 2) >= struct.unpack('<i8', ARGV[1], 2) then return 0 end
  redis.call('SET', KEYS[1], ARGV[1])
  return 2
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
