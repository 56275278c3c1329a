-- FINISH: Moves a job to a final status, once: a finished job never changes status again. The
-- job leaves its tenant's backlog (once: the `in_backlog` flag of its record).
-- The history stream gets `job_finished`; a job of a run leaves the run's `open` count and may
-- finish the run (settle_run, prepended).
-- KEYS: job, active set, finished zset, events, job status counts, tenant backlog, history stream
-- ARGV: status, now ms, retention secs, job id, error stage, error message, generation ('' for
--   any: the caller acts on the job, not for one of its entries), '1' to refuse while the job is
--   committing its last batch (a cancel), the run key's prefix (`Keys::run_prefix`; the key is
--   the prefix, then `{run_id}`)
-- Returns 1 if this call finished the job, 0 if it was already finished, -2 if unknown, -3 if the
--   generation is not the job's, 2 if refused because the job is committing.
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
if redis.call('HDEL', KEYS[1], 'in_backlog') == 1 then
  redis.call('HINCRBY', KEYS[6], redis.call('HGET', KEYS[1], 'tenant_id') or '', -1)
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
local tenant = redis.call('HGET', KEYS[1], 'tenant_id') or ''
local run_id = redis.call('HGET', KEYS[1], 'run_id') or ''
redis.call('XADD', KEYS[7], '*', 'kind', 'job_finished', 'job_id', ARGV[4], 'tenant', tenant, 'run_id', run_id)
if run_id ~= '' then
  local run_key = ARGV[9] .. '{' .. run_id .. '}'
  if redis.call('EXISTS', run_key) == 1 then
    redis.call('HINCRBY', run_key, 'open', -1)
    settle_run(run_key, KEYS[7], run_id, ARGV[2])
  end
end
return 1
