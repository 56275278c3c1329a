-- COMMIT_CHUNKS: Stores every batch of a chunked document and enqueues each batch on both the
-- metadata and embeddings streams, once per job (guarded by the `chunked` flag).
-- KEYS: job, metadata stream, embeddings stream, events, batch keys…, job status counts
-- ARGV: job id, chunks total, ttl, now ms, traceparent ('' for none), generation, started ms (when
--   the chunking worker read the job's entry: the `chunked` event's `started_ms`), payloads…
-- Each entry carries the job's tenant and collection, from its record.
-- Returns the number of batches, 0 if already chunked, -1 if the job is finished, -2 if unknown,
--   -3 if the entry's generation is not the job's.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return -1 end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[6] then return -3 end
if redis.call('HSETNX', KEYS[1], 'chunked', '1') == 0 then return 0 end
local batches = #KEYS - 5
local tenant = redis.call('HGET', KEYS[1], 'tenant_id') or ''
local collection = redis.call('HGET', KEYS[1], 'collection') or ''
for i = 1, batches do
  redis.call('SET', KEYS[4 + i], ARGV[7 + i], 'EX', ARGV[3])
end
for i = 1, batches do
  for _, stream in ipairs({KEYS[2], KEYS[3]}) do
    if ARGV[5] == '' then
      redis.call('XADD', stream, '*', 'job_id', ARGV[1], 'batch', i - 1, 'gen', ARGV[6], 'tenant', tenant,
        'collection', collection)
    else
      redis.call('XADD', stream, '*', 'job_id', ARGV[1], 'batch', i - 1, 'gen', ARGV[6], 'tenant', tenant,
        'collection', collection, 'traceparent', ARGV[5])
    end
  end
end
redis.call('HSET', KEYS[1], 'status', 'running', 'chunks_total', ARGV[2], 'batches_total', batches)
redis.call('HINCRBY', KEYS[#KEYS], status, -1)
redis.call('HINCRBY', KEYS[#KEYS], 'running', 1)
redis.call('HSETNX', KEYS[1], 'started_ms', ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'type', 'chunked', 'chunks', ARGV[2], 'batches', batches,
  'started_ms', ARGV[7])
redis.call('EXPIRE', KEYS[4], ARGV[3])
return batches
