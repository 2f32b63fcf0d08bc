-- Keep in-flight entries alive: renew our claims and reset the entries' idle time (XCLAIM JUSTID by the
-- owner) so no other worker reclaims an entry whose handler is still running.
-- KEYS[1] stream, KEYS[2..] one claim key per entry.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] claim TTL (ms), then per entry: stream id, claim token.
-- Returns the number of entries still pending on us.
local group, consumer, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local alive = 0
for i = 1, #KEYS - 1 do
  local id, token = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if redis.call('GET', KEYS[1 + i]) == token then redis.call('PEXPIRE', KEYS[1 + i], ttl) end
  local r = redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'JUSTID')
  alive = alive + #r
end
return alive
