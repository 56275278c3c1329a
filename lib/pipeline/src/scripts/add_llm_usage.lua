-- ADD_LLM_USAGE: adds LLM tokens and cost to a job's record, only if the record exists: a stray
-- job id must not create one. A finished job still takes it (the call was answered, so its tokens
-- were spent, even if the job finished before the charge was written).
-- KEYS: job
-- ARGV: prompt tokens, completion tokens, cost in US dollars
-- Returns 1 if added, 0 if the job is unknown.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'llm_prompt_tokens', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'llm_completion_tokens', ARGV[2])
redis.call('HINCRBYFLOAT', KEYS[1], 'llm_cost_usd', ARGV[3])
return 1
