//! The Lua scripts that move a job from one stage to the next. Each runs atomically in Redis,
//! so a hand-off happens entirely or not at all, and each is guarded by a flag so that a
//! redelivered message repeats nothing. Each also appends what it did to the job's events
//! stream (`Keys::job_events`), inside the same guard, so every event is written exactly once
//! and in the order the job went through it.
//!
//! Every entry a script adds carries the job's retry generation (`gen`), and every script that
//! acts for an entry first checks that the entry's generation is the job's: a dead-letter retry
//! starts a new generation and puts back every step it needs, so an older entry still on a
//! stream (or a worker still running one) changes nothing.

use std::sync::LazyLock;

use redis::Script;

/// Stores every batch of a chunked document and enqueues each batch on both the metadata and
/// embeddings streams, once per job (guarded by the `chunked` flag).
/// KEYS: job, metadata stream, embeddings stream, events, batch keys…, job status counts
/// ARGV: job id, chunks total, ttl, now ms, traceparent ('' for none), generation, payloads…
/// Returns the number of batches, 0 if already chunked, -1 if the job is finished, -2 if unknown,
/// -3 if the entry's generation is not the job's.
pub(crate) static COMMIT_CHUNKS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return -1 end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[6] then return -3 end
if redis.call('HSETNX', KEYS[1], 'chunked', '1') == 0 then return 0 end
local batches = #KEYS - 5
for i = 1, batches do
  redis.call('SET', KEYS[4 + i], ARGV[6 + i], 'EX', ARGV[3])
end
for i = 1, batches do
  for _, stream in ipairs({KEYS[2], KEYS[3]}) do
    if ARGV[5] == '' then
      redis.call('XADD', stream, '*', 'job_id', ARGV[1], 'batch', i - 1, 'gen', ARGV[6])
    else
      redis.call('XADD', stream, '*', 'job_id', ARGV[1], 'batch', i - 1, 'gen', ARGV[6], 'traceparent', ARGV[5])
    end
  end
end
redis.call('HSET', KEYS[1], 'status', 'running', 'chunks_total', ARGV[2], 'batches_total', batches)
redis.call('HINCRBY', KEYS[#KEYS], status, -1)
redis.call('HINCRBY', KEYS[#KEYS], 'running', 1)
redis.call('HSETNX', KEYS[1], 'started_ms', ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'type', 'chunked', 'chunks', ARGV[2], 'batches', batches)
redis.call('EXPIRE', KEYS[4], ARGV[3])
return batches
",
    )
});

/// Records one half (metadata `m` or embeddings `e`) of a batch; the first result of a half
/// wins. Whichever half completes the pair enqueues the batch for storage, exactly once.
/// KEYS: job, join hash, result key, storage stream, events
/// ARGV: half, batch, chunk count, payload, ttl, job id, job counter field, stage name,
/// traceparent ('' for none), generation
/// Returns 2 if this call enqueued storage, 1 if recorded, -1 if the job is finished, -2 if
/// unknown, -3 if the entry's generation is not the job's.
pub(crate) static COMPLETE_HALF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status ~= 'running' then return -1 end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[10] then return -3 end
local batch = ARGV[2]
if redis.call('HSETNX', KEYS[2], ARGV[1] .. ':' .. batch, '1') == 1 then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
  redis.call('HINCRBY', KEYS[1], ARGV[7], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100000, '*', 'type', 'batch', 'stage', ARGV[8], 'batch', batch, 'chunks', ARGV[3])
  redis.call('EXPIRE', KEYS[5], ARGV[5])
end
if redis.call('HEXISTS', KEYS[2], 'm:' .. batch) == 1 and redis.call('HEXISTS', KEYS[2], 'e:' .. batch) == 1 then
  if redis.call('HSETNX', KEYS[2], 'q:' .. batch, '1') == 1 then
    if ARGV[9] == '' then
      redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[6], 'batch', batch, 'gen', ARGV[10])
    else
      redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[6], 'batch', batch, 'gen', ARGV[10], 'traceparent', ARGV[9])
    end
    return 2
  end
end
return 1
",
    )
});

/// Counts a stored batch once, with its reused chunks and failed metadata. When it is the last
/// batch of a running job, the job is marked `committing`: from then on a cancel is refused,
/// so a version can never be both made visible and discarded.
/// KEYS: job, join hash, events
/// ARGV: batch, chunk count, reused chunks, chunks whose metadata failed, ttl, generation
/// Returns {batches stored, batches total, status}; status is '' for an unknown job and 'stale'
/// when the entry's generation is not the job's (nothing is counted).
pub(crate) static RECORD_STORED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 0, ''} end
if (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[6] then return {0, 0, 'stale'} end
if redis.call('HSETNX', KEYS[2], 's:' .. ARGV[1], '1') == 1 then
  redis.call('HINCRBY', KEYS[1], 'stored', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'reused', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'metadata_failed', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'batches_stored', 1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100000, '*', 'type', 'batch', 'stage', 'storage', 'batch', ARGV[1],
    'chunks', ARGV[2], 'reused', ARGV[3], 'metadata_failed', ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'batches_stored') or '0')
local total = tonumber(redis.call('HGET', KEYS[1], 'batches_total') or '0')
if status == 'running' and total > 0 and stored >= total then
  redis.call('HSET', KEYS[1], 'committing', '1')
end
return {stored, total, status}
",
    )
});

/// Moves a job to a final status, once: a finished job never changes status again.
/// KEYS: job, active set, finished zset, events, job status counts
/// ARGV: status, now ms, retention secs, job id, error stage, error message, generation ('' for
/// any: the caller acts on the job, not for one of its entries), '1' to refuse while the job
/// is committing its last batch (a cancel)
/// Returns 1 if this call finished the job, 0 if it was already finished, -2 if unknown, -3 if
/// the generation is not the job's, 2 if refused because the job is committing.
pub(crate) static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return 0 end
if ARGV[7] ~= '' and (redis.call('HGET', KEYS[1], 'gen') or '0') ~= ARGV[7] then return -3 end
if ARGV[8] == '1' and redis.call('HEXISTS', KEYS[1], 'committing') == 1 then return 2 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_ms', ARGV[2])
redis.call('HINCRBY', KEYS[5], status, -1)
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
-- (Lua's -0 is '-0', which HINCRBY refuses, and a script stops half-way on an error.)
local bytes = tonumber(redis.call('HGET', KEYS[1], 'content_bytes') or '0') or 0
if bytes > 0 then redis.call('HINCRBY', KEYS[5], 'queued_bytes', -bytes) end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'error_stage', ARGV[5], 'error_message', ARGV[6])
end
redis.call('SREM', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[2]) - 3600000)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[5] ~= '' then
  redis.call('XADD', KEYS[4], '*', 'type', ARGV[1], 'stage', ARGV[5], 'error', ARGV[6])
else
  redis.call('XADD', KEYS[4], '*', 'type', ARGV[1])
end
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 1
",
    )
});

/// Retries the job of a dead-lettered entry (see `dead_letters`). The entry must still be in its
/// dead-letter stream (else `missing`: another retry took it). A failed job is reopened, once,
/// with every step it still lacks put back on the streams: chunking if it was never chunked;
/// else, per batch, each missing half and, for a batch with both halves, storage again (storage
/// discards a failed version's chunks, so every batch is stored again and counted anew; upserts
/// and `RECORD_STORED` keep that from storing or counting anything twice). Its dead letters in
/// every stage go (ARGV pairs), a `retried` event is written and its keys get a full retention
/// again. The reopened job starts a new generation (`gen` + 1) and every entry put back carries
/// it, so the failed attempt's stale entries and late writers change nothing. A job still queued or running only gets this entry back on its stream (with the
/// fields it had, its traceparent among them). A reopened job's work is traced under the retry:
/// every entry put back carries ARGV's traceparent, and the job's `trace_id` becomes its trace.
/// Nothing is written unless every payload the retry needs is still there.
/// KEYS: job, join, events, active set, finished zset, content, the chunking, metadata,
///   embeddings and storage streams, their four dead-letter streams, the job status counts,
///   then per batch its payload, metadata result and embeddings result. The reopened job counts
///   as queued or running again; its failure stays counted (finishes are a counter).
/// ARGV: job id, ttl, stage number of the entry (1 chunking … 4 storage), entry id, batches,
///   traceparent ('' for none), then (stage number, entry id) of each of the job's dead letters
/// Returns {outcome, …}: {'retried', status, requeued per stage ×4}, {'requeued', status},
/// {'missing'}, {'empty'} (no fields to put back), {'expired'}, {'cancelled'}, {'completed'}, {'content'}, {'batch', n},
/// {'result', n, half}, {'stale', batches} (batches_total is not ARGV's: read it again).
pub(crate) static RETRY_JOB: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local STAGES = {'chunking', 'metadata', 'embeddings', 'storage'}
local function enqueue(stream, ...)
  if ARGV[6] == '' then
    redis.call('XADD', stream, '*', ...)
  else
    redis.call('XADD', stream, '*', 'traceparent', ARGV[6], ...)
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
    local k = 16 + 3 * i
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
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
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
  if i <= 3 or i == 6 or i >= 16 then redis.call('EXPIRE', KEYS[i], ARGV[2]) end
end
return {'retried', reopened, tostring(queued[1]), tostring(queued[2]), tostring(queued[3]), tostring(queued[4])}
",
    )
});
