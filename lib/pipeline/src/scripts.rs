//! The Lua scripts that move a job from one stage to the next. Each runs atomically in Redis,
//! so a hand-off happens entirely or not at all, and each is guarded by a flag so that a
//! redelivered message repeats nothing. Each also appends what it did to the job's events
//! stream (`Keys::job_events`), inside the same guard, so every event is written exactly once
//! and in the order the job went through it.

use std::sync::LazyLock;

use redis::Script;

/// Stores every batch of a chunked document and enqueues each batch on both the metadata and
/// embeddings streams, once per job (guarded by the `chunked` flag).
/// KEYS: job, metadata stream, embeddings stream, events, batch keys…, job status counts
/// ARGV: job id, chunks total, ttl, now ms, payloads…
/// Returns the number of batches, 0 if already chunked, -1 if the job is finished, -2 if unknown.
pub(crate) static COMMIT_CHUNKS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return -1 end
if redis.call('HSETNX', KEYS[1], 'chunked', '1') == 0 then return 0 end
local batches = #KEYS - 5
for i = 1, batches do
  redis.call('SET', KEYS[4 + i], ARGV[4 + i], 'EX', ARGV[3])
end
for i = 1, batches do
  redis.call('XADD', KEYS[2], '*', 'job_id', ARGV[1], 'batch', i - 1)
  redis.call('XADD', KEYS[3], '*', 'job_id', ARGV[1], 'batch', i - 1)
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
/// ARGV: half, batch, chunk count, payload, ttl, job id, job counter field, stage name
/// Returns 2 if this call enqueued storage, 1 if recorded, -1 if the job is finished, -2 if unknown.
pub(crate) static COMPLETE_HALF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status ~= 'running' then return -1 end
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
    redis.call('XADD', KEYS[4], '*', 'job_id', ARGV[6], 'batch', batch)
    return 2
  end
end
return 1
",
    )
});

/// Counts a stored batch once, with its reused chunks and failed metadata.
/// KEYS: job, join hash, events
/// ARGV: batch, chunk count, reused chunks, chunks whose metadata failed, ttl
/// Returns {batches stored, batches total, status}; status is '' for an unknown job.
pub(crate) static RECORD_STORED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {0, 0, ''} end
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
return {stored, total, status}
",
    )
});

/// Moves a job to a final status, once: a finished job never changes status again.
/// KEYS: job, active set, finished zset, events, job status counts
/// ARGV: status, now ms, retention secs, job id, error stage, error message
/// Returns 1 if this call finished the job, 0 if it was already finished, -2 if unknown.
pub(crate) static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -2 end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_ms', ARGV[2])
redis.call('HINCRBY', KEYS[5], status, -1)
redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
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
