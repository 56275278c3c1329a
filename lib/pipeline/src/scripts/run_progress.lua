-- RUN_PROGRESS: Adds to a run's `pending` count (items still to submit, crawl pages still to
-- fetch; negative when one was submitted, fetched or skipped) and settles the run (settle_run).
-- KEYS: run, history stream
-- ARGV: pending delta (a signed integer), now ms, run id
-- Returns 1 if this call finished the run, 0 if not, -2 if the run is unknown.
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
if ARGV[1] ~= '0' then redis.call('HINCRBY', KEYS[1], 'pending', ARGV[1]) end
return settle_run(KEYS[1], KEYS[2], ARGV[3], ARGV[2])
