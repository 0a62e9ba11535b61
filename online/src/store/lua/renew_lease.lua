-- RENEW_LEASE: extends the lease if the run still holds it.
-- KEYS[1] lease. ARGV[1] run id, ARGV[2] new time to live (ms).
-- Returns 1 when renewed, 0 when the lease is gone or another run's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
