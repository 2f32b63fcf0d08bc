-- Take over pending entries and hand them back for processing, dead-lettering poison on the way.
-- mode "own":  this consumer's own pending entries (after a restart under the same name);
-- mode "auto": any consumer's entries idle longer than min_idle (orphans of dead workers), via XAUTOCLAIM.
-- An entry is delivered at most max_deliveries times; the next delivery dead-letters it instead.
-- KEYS[1] stream, KEYS[2] dead-letter stream.
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] mode, ARGV[4] min idle (ms), ARGV[5] count,
-- ARGV[6] max deliveries, ARGV[7] start id (cursor; "(id" is exclusive), ARGV[8] now (ms).
-- Returns {next cursor, entries {id, fields}..., poison ids, gone ids}.
local stream, dead = KEYS[1], KEYS[2]
local group, consumer, mode = ARGV[1], ARGV[2], ARGV[3]
local min_idle, count, max_deliveries = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local start, now = ARGV[7], ARGV[8]
local entries, poison, gone = {}, {}, {}
local cursor = '0-0'

local function dead_letter(id, fields, deliveries)
  local extra = {
    'dl_error_type', 'PoisonEntry',
    'dl_error', 'delivered ' .. deliveries .. ' times without being settled (does it crash the worker?)',
    'dl_traceback', '', 'dl_reason', 'poison', 'dl_attempts', tostring(deliveries),
    'dl_consumer', consumer, 'dl_group', group, 'dl_stream_id', id, 'dl_failed_ms', now,
  }
  for _, v in ipairs(extra) do fields[#fields + 1] = v end
  redis.call('XADD', dead, '*', unpack(fields))
  redis.call('XACK', stream, group, id)
  poison[#poison + 1] = id
end

local function deliveries_of(id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if #p == 0 then return 0 end
  return tonumber(p[1][4])
end

if mode == 'own' then
  local pend = redis.call('XPENDING', stream, group, start, '+', count, consumer)
  for _, p in ipairs(pend) do
    local id, deliveries = p[1], tonumber(p[4])
    local r = redis.call('XRANGE', stream, id, id)
    if #r == 0 then
      redis.call('XACK', stream, group, id)  -- payload deleted: drop it, never loop on it
      gone[#gone + 1] = id
    elseif deliveries >= max_deliveries then
      dead_letter(id, r[1][2], deliveries)
    else
      local claimed = redis.call('XCLAIM', stream, group, consumer, 0, id)
      if #claimed > 0 then entries[#entries + 1] = claimed[1] end
    end
  end
else
  local res = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, start, 'COUNT', count)
  cursor = res[1]
  for _, e in ipairs(res[2]) do
    local id, fields = e[1], e[2]
    if not fields then
      redis.call('XACK', stream, group, id)
      gone[#gone + 1] = id
    else
      local deliveries = deliveries_of(id)  -- includes this claim
      if deliveries > max_deliveries then
        dead_letter(id, fields, deliveries - 1)
      else
        entries[#entries + 1] = e
      end
    end
  end
  if res[3] then
    for _, id in ipairs(res[3]) do gone[#gone + 1] = id end  -- XAUTOCLAIM already dropped them
  end
end
return {cursor, entries, poison, gone}
