-- Re-publish retries whose time has come: remove from the schedule + XADD a copy, in one step.
-- Concurrent callers are serialized by Redis, so an entry is moved exactly once.
-- KEYS[1] stream, KEYS[2] retry schedule (ZSET), KEYS[3] retry data (HASH).
-- ARGV[1] now (ms), ARGV[2] max entries to move.
-- Returns the number moved.
local stream, zset, data = KEYS[1], KEYS[2], KEYS[3]
local now, limit = ARGV[1], tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', zset, '-inf', now, 'LIMIT', 0, limit)
local moved = 0
for _, rid in ipairs(due) do
  local raw = redis.call('HGET', data, rid)
  if raw then
    local fields = cjson.decode(raw)
    for j = 1, #fields, 2 do
      if fields[j] == 'enq_ms' then fields[j + 1] = now end
    end
    redis.call('XADD', stream, '*', unpack(fields))
    moved = moved + 1
  end
  redis.call('ZREM', zset, rid)
  redis.call('HDEL', data, rid)
end
return moved
