-- Settle a batch of entries atomically: each outcome's state change happens together with its XACK.
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] retry schedule (ZSET), KEYS[4] retry data (HASH),
-- KEYS[5] current done bucket.
-- ARGV[1] group, ARGV[2] done-bucket expire-at (unix s), ARGV[3] now (ms), ARGV[4] consumer,
-- ARGV[5] claim key prefix, ARGV[6] the entries, one line each: "<outcome> <stream id> <idempotency key>\n"
-- (one packed argument: packing many arguments dominates the client's cost), then 4 extra values for
-- every retry/dead entry, in entry order, from ARGV[7] on:
--   ok       handler succeeded: mark done + ack + release claim
--   dup      already done (or addressed to another group): ack
--   release  not run (shutdown): release claim, leave pending
--   retry    extras: due (ms), next attempt, error type, error message: ack + schedule a copy
--   dead     extras: error type, error message, traceback, reason: ack + append to dead letters
-- The claim token is "<consumer> <stream id>"; claim keys (prefix .. key) share the hash tag.
-- Returns per entry: 1 settled, 0 the entry was no longer pending (someone else settled it; no effect).
local stream, dead, zset, data, bucket = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, expire_at, now, consumer, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local extra = 7
local out = {}
local marked = false

local function release(idem, id)
  local claim_key = prefix .. idem
  if redis.call('GET', claim_key) == consumer .. ' ' .. id then redis.call('DEL', claim_key) end
end

local function set_field(fields, name, value)
  for j = 1, #fields, 2 do
    if fields[j] == name then fields[j + 1] = value; return end
  end
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end

local function get_field(fields, name)
  for j = 1, #fields, 2 do
    if fields[j] == name then return fields[j + 1] end
  end
  return nil
end

local i = -1
for outcome, id, idem in string.gmatch(ARGV[6], '(%S+) (%S+) (%S+)\n') do
  i = i + 1
  if outcome == 'ok' then
    -- done is recorded even if the entry is no longer pending: the handler did succeed
    redis.call('SADD', bucket, idem)
    marked = true
    out[i + 1] = redis.call('XACK', stream, group, id)
    release(idem, id)
  elseif outcome == 'dup' then
    out[i + 1] = redis.call('XACK', stream, group, id)
  elseif outcome == 'release' then
    release(idem, id)
    out[i + 1] = 1
  else
    local a1, a2, a3, a4 = ARGV[extra], ARGV[extra + 1], ARGV[extra + 2], ARGV[extra + 3]
    extra = extra + 4
    local r = redis.call('XRANGE', stream, id, id)
    local acked = redis.call('XACK', stream, group, id)
    if acked == 1 and #r > 0 then
      local fields = r[1][2]
      if outcome == 'retry' then
        set_field(fields, 'attempt', a2)
        set_field(fields, 'grp', group)
        set_field(fields, 'last_error', a3 .. ': ' .. a4)
        redis.call('HSET', data, id, cjson.encode(fields))
        redis.call('ZADD', zset, tonumber(a1), id)
      else
        set_field(fields, 'dl_error_type', a1)
        set_field(fields, 'dl_error', a2)
        set_field(fields, 'dl_traceback', a3)
        set_field(fields, 'dl_reason', a4)
        set_field(fields, 'dl_attempts', get_field(fields, 'attempt') or '1')
        set_field(fields, 'dl_consumer', consumer)
        set_field(fields, 'dl_group', group)
        set_field(fields, 'dl_stream_id', id)
        set_field(fields, 'dl_failed_ms', now)
        redis.call('XADD', dead, '*', unpack(fields))
      end
    elseif #r == 0 then
      acked = 0
    end
    release(idem, id)
    out[i + 1] = acked
  end
end
if marked then redis.call('EXPIREAT', bucket, expire_at) end
return out
