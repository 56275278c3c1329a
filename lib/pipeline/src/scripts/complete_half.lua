-- COMPLETE_HALF: Records one half (metadata `m` or embeddings `e`) of a batch; the first result of
-- a half wins. Whichever half completes the pair enqueues the batch for storage, exactly once.
-- KEYS: job, join hash, result key, storage stream, events
-- ARGV: half, batch, chunk count, payload, ttl, job id, job counter field, stage name, traceparent
--   ('' for none), generation, started ms (when the stage's worker read the batch's entry: the
--   `batch` event's `started_ms`)
-- The storage entry carries the job's tenant and collection, from its record.
-- Returns 2 if this call enqueued storage, 1 if recorded, -1 if the job is finished, -2 if
--   unknown, -3 if the entry's generation is not the job's.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status ~= 'running' then return -1 end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[10] then return -3 end
local batch = ARGV[2]
if redis.call('HSETNX', KEYS[2], ARGV[1] .. ':' .. batch, '1') == 1 then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
  redis.call('HINCRBY', KEYS[1], ARGV[7], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100000, '*', 'type', 'batch', 'stage', ARGV[8], 'batch', batch, 'chunks', ARGV[3],
    'started_ms', ARGV[11])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
end
if redis.call('HEXISTS', KEYS[2], 'm:' .. batch) == 1 and redis.call('HEXISTS', KEYS[2], 'e:' .. batch) == 1 then
  if redis.call('HSETNX', KEYS[2], 'q:' .. batch, '1') == 1 then
    local tenant = redis.call('HGET', KEYS[1], 'tenant_id') or ''
    local collection = redis.call('HGET', KEYS[1], 'collection') or ''
    if ARGV[9] == '' then
      redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[6], 'batch', batch, 'gen', ARGV[10], 'tenant', tenant,
        'collection', collection)
    else
      redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[6], 'batch', batch, 'gen', ARGV[10], 'tenant', tenant,
        'collection', collection, 'traceparent', ARGV[9])
    end
    return 2
  end
end
return 1
