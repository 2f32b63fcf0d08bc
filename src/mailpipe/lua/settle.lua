-- Settle a batch of entries atomically: each outcome's state change happens together with its XACK.
-- KEYS[1] stream, KEYS[2] dead-letter stream, KEYS[3] retry schedule (ZSET), KEYS[4] retry data (HASH),
-- KEYS[5] current done bucket, KEYS[6..] one claim key per entry.
-- ARGV[1] group, ARGV[2] done-bucket expire-at (unix s), ARGV[3] now (ms), ARGV[4] consumer,
-- then 8 values per entry: outcome, stream id, idempotency key, claim token, a1, a2, a3, a4
--   ok       handler succeeded: mark done + ack + release claim
--   dup      already done (or addressed to another group): ack
--   release  not run (shutdown): release claim, leave pending
--   retry    a1 due (ms), a2 next attempt, a3 error type, a4 error message: ack + schedule a copy
--   dead     a1 error type, a2 error message, a3 traceback, a4 reason: ack + append to dead letters
-- Returns per entry: 1 settled, 0 the entry was no longer pending (someone else settled it; no effect).
local stream, dead, zset, data, bucket = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, expire_at, now, consumer = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local out = {}
local marked = false

local function release(claim_key, token)
  if redis.call('GET', claim_key) == token then redis.call('DEL', claim_key) end
end

local function fields_of(id)
  local r = redis.call('XRANGE', stream, id, id)
  if #r == 0 then return nil end
  return r[1][2]
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

local n = (#ARGV - 4) / 8
for i = 1, n do
  local base = 4 + (i - 1) * 8
  local outcome, id, idem, token = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3], ARGV[base + 4]
  local a1, a2, a3, a4 = ARGV[base + 5], ARGV[base + 6], ARGV[base + 7], ARGV[base + 8]
  local claim_key = KEYS[5 + i]
  if outcome == 'release' then
    release(claim_key, token)
    out[i] = 1
  elseif outcome == 'ok' then
    -- done is recorded even if the entry is no longer pending: the handler did succeed
    redis.call('SADD', bucket, idem)
    marked = true
    out[i] = redis.call('XACK', stream, group, id)
    release(claim_key, token)
  elseif outcome == 'dup' then
    out[i] = redis.call('XACK', stream, group, id)
  else
    local fields = fields_of(id)
    local acked = redis.call('XACK', stream, group, id)
    if acked == 1 and fields then
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
    end
    release(claim_key, token)
    if acked == 1 and not fields then acked = 0 end
    out[i] = acked
  end
end
if marked then redis.call('EXPIREAT', bucket, expire_at) end
return out
