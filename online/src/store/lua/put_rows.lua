-- PUT_ROWS: writes a batch of a full run's rows if the run still holds the
-- lease (one server only: the lease and the rows live in different slots).
-- KEYS[1] the service's lease, KEYS[2..n] the row keys.
-- ARGV[1] run id, ARGV[i] the value for KEYS[i] (i >= 2).
-- Returns the number of rows written.
-- Errors: DAEDA_LEASE_LOST when the lease is gone or held by another run;
--   then nothing is written.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DAEDA_LEASE_LOST the lease is no longer held by this run')
end
-- MSET in slices: unpack has a bounded stack (LUAI_MAXCSTACK, 8000).
local args = {}
local n = 0
for i = 2, #KEYS do
  n = n + 1
  args[2 * n - 1] = KEYS[i]
  args[2 * n] = ARGV[i]
  if n == 1000 then
    redis.call('MSET', unpack(args, 1, 2 * n))
    n = 0
  end
end
if n > 0 then redis.call('MSET', unpack(args, 1, 2 * n)) end
return #KEYS - 1
