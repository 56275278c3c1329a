-- CRAWL_PAGE: Ends the crawler's work on one page of a crawl (an entry of the crawl stream),
-- once: the links it found that are new to the run join the frontier (counted in `pending`
-- before their entries are added), a page not taken is recorded in the history, the page
-- leaves `pending`, and the run is settled (settle_run). A redelivered entry changes nothing.
-- KEYS: run, seen set, done set, crawl stream, history stream
-- ARGV: url, now ms, run id, tenant, collection, skip reason ('' if taken or not recorded),
--       http status ('' if none), depth, then pairs of (link url, link depth)
-- Returns 1 if this call finished the run, 0 if not, -2 if the run is unknown, -3 if the page
-- was already done.
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return -3 end
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[3], ttl) end
local added = 0
if redis.call('HGET', KEYS[1], 'status') == 'running' then
  for i = 9, #ARGV - 1, 2 do
    if redis.call('SADD', KEYS[2], ARGV[i]) == 1 then
      added = added + 1
      redis.call('XADD', KEYS[4], '*', 'run_id', ARGV[3], 'tenant', ARGV[4], 'collection', ARGV[5],
        'url', ARGV[i], 'depth', ARGV[i + 1])
    end
  end
  if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
end
if ARGV[6] ~= '' then
  local fields = {'kind', 'page_skipped', 'run_id', ARGV[3], 'tenant', ARGV[4], 'url', ARGV[1],
    'reason', ARGV[6], 'depth', ARGV[8]}
  if ARGV[7] ~= '' then
    table.insert(fields, 'http_status')
    table.insert(fields, ARGV[7])
  end
  redis.call('XADD', KEYS[5], '*', unpack(fields))
end
redis.call('HINCRBY', KEYS[1], 'pending', added - 1)
return settle_run(KEYS[1], KEYS[5], ARGV[3], ARGV[2])
