-- Renew or release a mailbox lease only if this producer still holds it (mailpipe producer).
-- KEYS[1] lease   ARGV[1] "renew" | "release"   ARGV[2] token   ARGV[3] TTL in ms (renew)
-- Returns 1 if the lease was ours (and is now renewed / released), else 0.
if redis.call("GET", KEYS[1]) ~= ARGV[2] then
  return 0
end
if ARGV[1] == "release" then
  redis.call("DEL", KEYS[1])
else
  redis.call("PEXPIRE", KEYS[1], ARGV[3])
end
return 1
