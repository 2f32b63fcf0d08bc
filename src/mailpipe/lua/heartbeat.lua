-- Keep in-flight entries alive: renew our claims and reset the entries' idle time (XCLAIM JUSTID by the
-- owner) so no other worker reclaims an entry whose handler is still running.
-- KEYS[1] stream. ARGV[1] group, ARGV[2] consumer, ARGV[3] claim TTL (ms), ARGV[4] claim key prefix,
-- then per entry: stream id, idempotency key ("" for entries we hold no claim for).
-- Returns the number of entries still pending on us.
local group, consumer, ttl, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local alive = 0
for i = 5, #ARGV, 2 do
  local id, idem = ARGV[i], ARGV[i + 1]
  if idem ~= '' then
    local claim_key = prefix .. idem
    if redis.call('GET', claim_key) == consumer .. ' ' .. id then redis.call('PEXPIRE', claim_key, ttl) end
  end
  alive = alive + #redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'JUSTID')
end
return alive
