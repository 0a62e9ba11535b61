-- RELEASE_LEASE: removes the lease if the run still holds it (never another run's).
-- KEYS[1] lease. ARGV[1] run id.
-- Returns 1 when removed, 0 when the lease is gone or another run's.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
