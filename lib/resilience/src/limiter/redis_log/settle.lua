-- SETTLE: corrects admitted reservations to the tokens actually used.
-- KEYS: log, tokens
-- ARGV: span ms, ttl ms, then for each reservation: the member as admitted, the member with the
--   actual tokens, actual minus estimated tokens.
-- Returns how many were settled; one whose entry has already left the window changes nothing.
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local oldest = now - tonumber(ARGV[1])
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local settled = 0
for i = 3, #ARGV, 3 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > oldest then
    redis.call('ZREM', KEYS[1], ARGV[i])
    redis.call('ZADD', KEYS[1], score, ARGV[i + 1])
    total = total + tonumber(ARGV[i + 2])
    settled = settled + 1
  end
end
if settled > 0 then
  if total < 0 then total = 0 end
  redis.call('SET', KEYS[2], total, 'PX', ARGV[2])
end
return settled
