-- Publish one email and advance its mailbox checkpoint in one atomic step (mailpipe producer).
--
-- KEYS[1] stream   KEYS[2] checkpoint hash   KEYS[3] lease
-- KEYS[4] current "published" bucket set; KEYS[5..] older live buckets (checked, never written)
-- ARGV[1] mode: "publish" (XADD unless already published) or "skip" (only advance the checkpoint)
-- ARGV[2] lease token ("" = no lease: local imports)      ARGV[3] lease TTL in ms
-- ARGV[4] UIDVALIDITY ("" = no checkpoint: local imports) ARGV[5] UID
-- ARGV[6] idempotency key   ARGV[7] expiry (Unix s) of KEYS[4]   ARGV[8] now (Unix ms)
-- ARGV[9..] the entry's field/value pairs
--
-- Returns {status, detail}: published <stream id> | duplicate "" | skipped "" | behind <last_uid> |
-- uidvalidity <checkpoint's> | no_checkpoint "" | lease_lost "".
-- A crash before this script leaves nothing published and the checkpoint where it was; after it, both
-- are done. The published set makes a second publish of the same email (another UID after a
-- UIDVALIDITY change, a re-run import, a second folder) a no-op that still advances the checkpoint.

local token, uidvalidity, mode = ARGV[2], ARGV[4], ARGV[1]
if token ~= "" then
  if redis.call("GET", KEYS[3]) ~= token then
    return {"lease_lost", ""}
  end
  redis.call("PEXPIRE", KEYS[3], ARGV[3])
end

local uid = tonumber(ARGV[5])
if uidvalidity ~= "" then
  local cp = redis.call("HMGET", KEYS[2], "uidvalidity", "last_uid")
  if not cp[1] then
    return {"no_checkpoint", ""}
  end
  if cp[1] ~= uidvalidity then
    return {"uidvalidity", cp[1]}
  end
  if uid <= tonumber(cp[2] or "0") then
    return {"behind", cp[2] or "0"}
  end
end

local status, id = "skipped", ""
if mode == "publish" then
  status = "published"
  for i = 4, #KEYS do
    if redis.call("SISMEMBER", KEYS[i], ARGV[6]) == 1 then
      status = "duplicate"
      break
    end
  end
  if status == "published" then
    local fields = {}
    for i = 9, #ARGV do
      fields[#fields + 1] = ARGV[i]
    end
    id = redis.call("XADD", KEYS[1], "*", unpack(fields))
    redis.call("SADD", KEYS[4], ARGV[6])
    redis.call("EXPIREAT", KEYS[4], ARGV[7])
  end
end

if uidvalidity ~= "" then
  redis.call("HSET", KEYS[2], "last_uid", ARGV[5], "updated_ms", ARGV[8])
end
return {status, id}
