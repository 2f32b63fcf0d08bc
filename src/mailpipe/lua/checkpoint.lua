-- Change a mailbox checkpoint only while this producer holds the mailbox lease (mailpipe producer).
--
-- KEYS[1] checkpoint hash   KEYS[2] lease
-- ARGV[1] op: "reset" (replace the whole hash) or "set" (update some fields)
-- ARGV[2] lease token ("" = no lease check: admin tools)   ARGV[3] lease TTL in ms
-- ARGV[4] expected UIDVALIDITY: for "reset", "" means "no checkpoint may exist yet"; for "set", the
--         checkpoint must still have this UIDVALIDITY (a re-sync by someone else wins)
-- ARGV[5..] field/value pairs
-- Returns {"ok", ""} | {"moved", <current UIDVALIDITY or "">} | {"lease_lost", ""}

local token = ARGV[2]
if token ~= "" then
  if redis.call("GET", KEYS[2]) ~= token then
    return {"lease_lost", ""}
  end
  redis.call("PEXPIRE", KEYS[2], ARGV[3])
end

local current = redis.call("HGET", KEYS[1], "uidvalidity")
if current ~= ARGV[4] and not (ARGV[4] == "" and not current) then
  return {"moved", current or ""}
end

local fields = {}
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
if ARGV[1] == "reset" then
  redis.call("DEL", KEYS[1])
end
if #fields > 0 then
  redis.call("HSET", KEYS[1], unpack(fields))
end
return {"ok", ""}
