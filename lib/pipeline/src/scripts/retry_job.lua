-- RETRY_JOB: Retries the job of a dead-lettered entry (see `dead_letters`). The entry must still
-- be in its dead-letter stream (else `missing`: another retry took it). A failed job is reopened,
-- once, with every step it still lacks put back on the streams: chunking if it was never chunked;
-- else, per batch, each missing half and, for a batch with both halves, storage again (storage
-- discards a failed version's chunks, so every batch is stored again and counted anew; upserts and
-- `RECORD_STORED` keep that from storing or counting anything twice). Its dead letters in every
-- stage go (ARGV pairs), a `retried` event is written and its keys get a full retention again. The
-- reopened job starts a new generation (`gen` + 1) and every entry put back carries it, so the
-- failed attempt's stale entries and late writers change nothing. A job still queued or running
-- only gets this entry back on its stream (with the fields it had, its traceparent among them). A
-- reopened job's work is traced under the retry: every entry put back carries ARGV's traceparent,
-- and the job's `trace_id` becomes its trace. Nothing is written unless every payload the retry
-- needs is still there.
-- KEYS: job, join, events, active set, finished zset, content, the chunking, metadata, embeddings
--   and storage streams, their four dead-letter streams, the job status counts, the tenant backlog,
--   the history stream, the job's run (any key if it has none), then per batch its payload,
--   metadata result and embeddings result. A reopened job's attempt starts now (`last_attempt_ms`),
--   it is recorded `job_queued` in the history again, and it counts in its run's `open` jobs again. The reopened job counts as
--   queued or running again, and in its tenant's backlog; its failure stays counted (finishes are
--   a counter). Entries put back carry the job's tenant and collection, from its record.
-- ARGV: job id, ttl, stage number of the entry (1 chunking … 4 storage), entry id, batches,
--   traceparent ('' for none), then (stage number, entry id) of each of the job's dead letters
-- Returns {outcome, …}: {'retried', status, requeued per stage ×4}, {'requeued', status},
--   {'missing'}, {'empty'} (no fields to put back), {'expired'}, {'cancelled'}, {'completed'},
--   {'content'}, {'batch', n}, {'result', n, half}, {'stale', batches} (batches_total is not ARGV's:
--   read it again).
local STAGES = {'chunking', 'metadata', 'embeddings', 'storage'}
local tenant = redis.call('HGET', KEYS[1], 'tenant_id') or ''
local collection = redis.call('HGET', KEYS[1], 'collection') or ''
local function enqueue(stream, ...)
  if ARGV[6] == '' then
    redis.call('XADD', stream, '*', 'tenant', tenant, 'collection', collection, ...)
  else
    redis.call('XADD', stream, '*', 'tenant', tenant, 'collection', collection, 'traceparent', ARGV[6], ...)
  end
end
local stage = tonumber(ARGV[3])
local entry = redis.call('XRANGE', KEYS[10 + stage], ARGV[4], ARGV[4])
if #entry == 0 then return {'missing'} end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'expired'} end
if status == 'cancelled' or status == 'completed' then return {status} end
local previous = redis.call('HGET', KEYS[1], 'error_message') or ''
if status ~= 'failed' then
  local fields = entry[1][2]
  local copy = {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name ~= 'source_stream' and name ~= 'source_id' and name ~= 'deliveries' and name ~= 'error' then
      copy[#copy + 1] = name
      copy[#copy + 1] = fields[i + 1]
    end
  end
  if #copy == 0 then return {'empty'} end
  redis.call('XADD', KEYS[6 + stage], '*', unpack(copy))
  redis.call('XDEL', KEYS[10 + stage], ARGV[4])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'type', 'retried', 'stage', STAGES[stage])
  return {'requeued', status}
end
local batches = tonumber(ARGV[5])
local chunked = redis.call('HEXISTS', KEYS[1], 'chunked') == 1
local total = tonumber(redis.call('HGET', KEYS[1], 'batches_total') or '0')
if chunked and total ~= batches then return {'stale', tostring(total)} end
if not chunked and redis.call('EXISTS', KEYS[6]) == 0 then return {'content'} end
local halves = {}
if chunked then
  for i = 0, batches - 1 do
    local k = 19 + 3 * i
    if redis.call('EXISTS', KEYS[k]) == 0 then return {'batch', tostring(i)} end
    local m = redis.call('HEXISTS', KEYS[2], 'm:' .. i) == 1
    local e = redis.call('HEXISTS', KEYS[2], 'e:' .. i) == 1
    if m and redis.call('EXISTS', KEYS[k + 1]) == 0 then return {'result', tostring(i), 'metadata'} end
    if e and redis.call('EXISTS', KEYS[k + 2]) == 0 then return {'result', tostring(i), 'embeddings'} end
    halves[i + 1] = {m, e}
  end
end
local reopened = 'queued'
if chunked then reopened = 'running' end
redis.call('HSET', KEYS[1], 'status', reopened)
redis.call('HINCRBY', KEYS[15], reopened, 1)
local bytes = tonumber(redis.call('HGET', KEYS[1], 'content_bytes') or '0') or 0
if bytes > 0 then redis.call('HINCRBY', KEYS[15], 'queued_bytes', bytes) end
redis.call('HDEL', KEYS[1], 'finished_ms', 'error_stage', 'error_message', 'committing')
if redis.call('HSETNX', KEYS[1], 'in_backlog', '1') == 1 then
  redis.call('HINCRBY', KEYS[16], tenant, 1)
end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
local clock = redis.call('TIME')
redis.call('HSET', KEYS[1], 'last_attempt_ms', tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
local run_id = redis.call('HGET', KEYS[1], 'run_id') or ''
if run_id ~= '' and redis.call('EXISTS', KEYS[18]) == 1 then
  redis.call('HINCRBY', KEYS[18], 'open', 1)
end
redis.call('XADD', KEYS[17], '*', 'kind', 'job_queued', 'job_id', ARGV[1], 'tenant', tenant, 'run_id', run_id)
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'trace_id', string.sub(ARGV[6], 4, 35))
end
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
local queued = {0, 0, 0, 0}
if chunked then
  redis.call('HSET', KEYS[1], 'stored', 0, 'reused', 0, 'metadata_failed', 0, 'batches_stored', 0)
  for i = 0, batches - 1 do
    redis.call('HDEL', KEYS[2], 's:' .. i)
    local m, e = halves[i + 1][1], halves[i + 1][2]
    if not m then
      enqueue(KEYS[8], 'job_id', ARGV[1], 'batch', i, 'gen', gen)
      queued[2] = queued[2] + 1
    end
    if not e then
      enqueue(KEYS[9], 'job_id', ARGV[1], 'batch', i, 'gen', gen)
      queued[3] = queued[3] + 1
    end
    if m and e then
      redis.call('HSET', KEYS[2], 'q:' .. i, '1')
      enqueue(KEYS[10], 'job_id', ARGV[1], 'batch', i, 'gen', gen)
      queued[4] = queued[4] + 1
    end
  end
else
  enqueue(KEYS[7], 'job_id', ARGV[1], 'gen', gen)
  queued[1] = 1
end
for i = 7, #ARGV - 1, 2 do
  redis.call('XDEL', KEYS[10 + tonumber(ARGV[i])], ARGV[i + 1])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'type', 'retried', 'stage', STAGES[stage], 'error', previous)
for i = 1, #KEYS do
  if i <= 3 or i == 6 or i >= 19 then redis.call('EXPIRE', KEYS[i], ARGV[2]) end
end
return {'retried', reopened, tostring(queued[1]), tostring(queued[2]), tostring(queued[3]), tostring(queued[4])}
