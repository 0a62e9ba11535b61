-- ADVANCE: records an incremental run on the live generation: the watermark
-- only moves forward, row count and bytes grow by what the run added.
-- KEYS[1] lease, KEYS[2] the generation's metadata hash (one slot).
-- ARGV[1] run id, ARGV[2] watermark (µs), ARGV[3] added rows, ARGV[4] added
--   bytes, ARGV[5] materialized_at, ARGV[6] as_of, ARGV[7] source_snapshot.
-- Returns 1.
-- Errors: DAEDA_LEASE_LOST when the lease is gone or held by another run;
--   then nothing is written.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('DAEDA_LEASE_LOST the lease is no longer held by this run')
end
local wm = tonumber(redis.call('HGET', KEYS[2], 'watermark_micros') or '0')
if tonumber(ARGV[2]) > wm then redis.call('HSET', KEYS[2], 'watermark_micros', ARGV[2]) end
redis.call('HINCRBY', KEYS[2], 'row_count', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'bytes', ARGV[4])
redis.call('HSET', KEYS[2], 'run_id', ARGV[1], 'materialized_at', ARGV[5], 'as_of', ARGV[6], 'source_snapshot', ARGV[7])
return 1
