-- ADMIT: admits a request and its tokens to the sliding-window log, or says how long to wait.
-- KEYS: log, tokens
-- ARGV: rpm (0 = unlimited), tpm (0 = unlimited), span ms, tokens, member id, ttl ms.
-- Returns {1, 0, '', requests, tokens} when admitted (counts include this request), or {0, wait
--   ms, limit, requests, tokens} when it must wait; -1 in the first slot when it can never fit.
if redis.replicate_commands then redis.replicate_commands() end
local rpm = tonumber(ARGV[1])
local tpm = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
if tpm > 0 and tokens > tpm then return {-1, 0, 'tokens', 0, 0} end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local function tokens_of(member)
  return tonumber(string.match(member, ':(%d+)$')) or 0
end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - span)
if #expired > 0 then
  for _, member in ipairs(expired) do total = total - tokens_of(member) end
  if total < 0 then total = 0 end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - span)
  redis.call('SET', KEYS[2], total, 'PX', ARGV[6])
end
local requests = redis.call('ZCARD', KEYS[1])
local fits_at = -1
local limit = ''
if rpm > 0 and requests >= rpm then
  local entry = redis.call('ZRANGE', KEYS[1], requests - rpm, requests - rpm, 'WITHSCORES')
  fits_at = tonumber(entry[2]) + span
  limit = 'requests'
end
if tpm > 0 and total + tokens > tpm then
  local excess = total + tokens - tpm
  local freed = 0
  local at = now
  local offset = 0
  while freed < excess do
    local page = redis.call('ZRANGE', KEYS[1], offset, offset + 99, 'WITHSCORES')
    if #page == 0 then break end
    for i = 1, #page, 2 do
      freed = freed + tokens_of(page[i])
      at = tonumber(page[i + 1]) + span
      if freed >= excess then break end
    end
    offset = offset + 100
  end
  if at > fits_at then
    fits_at = at
    limit = 'tokens'
  end
end
if fits_at >= 0 then return {0, fits_at - now, limit, requests, total} end
redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. tokens)
total = total + tokens
redis.call('SET', KEYS[2], total, 'PX', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return {1, 0, '', requests + 1, total}
