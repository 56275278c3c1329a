-- settle_run: prepended to the scripts that change a run's counts (FINISH, RUN_PROGRESS). A run
-- is done when nothing is left to turn into a job (`pending`: items still to submit, crawl pages
-- still to fetch) and none of its jobs is unfinished (`open`); the first script to see both at
-- zero while the run is `running` marks it `done` and records `run_done` in the history, so
-- that happens once per run.
-- Returns 1 if this call finished the run, 0 otherwise.
local function settle_run(run_key, history, run_id, now)
  if redis.call('HGET', run_key, 'status') ~= 'running' then return 0 end
  local pending = tonumber(redis.call('HGET', run_key, 'pending') or '0') or 0
  local open = tonumber(redis.call('HGET', run_key, 'open') or '0') or 0
  if pending > 0 or open > 0 then return 0 end
  redis.call('HSET', run_key, 'status', 'done', 'finished_ms', now)
  redis.call('XADD', history, '*', 'kind', 'run_done', 'run_id', run_id,
    'tenant', redis.call('HGET', run_key, 'tenant') or '')
  return 1
end
