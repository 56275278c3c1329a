-- RECORD_STORED: Counts a stored batch once, with its reused chunks and failed metadata. When it
-- is the last batch of a running job, the job is marked `committing`: from then on a cancel is
-- refused, so a version can never be both made visible and discarded.
-- KEYS: job, join hash, events
-- ARGV: batch, chunk count, reused chunks, chunks whose metadata failed, ttl, generation, started
--   ms (when the storage worker read the batch's entry: the `batch` event's `started_ms`)
-- Returns {batches stored, batches total, status}; status is '' for an unknown job and 'stale'
--   when the entry's generation is not the job's (nothing is counted).
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 0, ''} end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[6] then return {0, 0, 'stale'} end
if redis.call('HSETNX', KEYS[2], 's:' .. ARGV[1], '1') == 1 then
  redis.call('HINCRBY', KEYS[1], 'stored', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'reused', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'metadata_failed', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'batches_stored', 1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'type', 'batch', 'stage', 'storage', 'batch', ARGV[1],
    'chunks', ARGV[2], 'reused', ARGV[3], 'metadata_failed', ARGV[4], 'started_ms', ARGV[7])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'batches_stored') or '0')
local total = tonumber(redis.call('HGET', KEYS[1], 'batches_total') or '0')
if status == 'running' and total > 0 and stored >= total then
  redis.call('HSET', KEYS[1], 'committing', '1')
end
return {stored, total, status}
