-- Remove consumers idle longer than ARGV[2] ms that have no pending entries. XGROUP DELCONSUMER would
-- discard a consumer's pending list, so the check and the delete happen in one step.
-- KEYS[1] stream. ARGV[1] group, ARGV[2] idle threshold (ms), ARGV[3] consumer never to remove (self).
-- Returns the names removed.
local stream, group, idle_ms, me = KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3]
local removed = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name, pending, idle
  for j = 1, #c, 2 do
    if c[j] == 'name' then name = c[j + 1] end
    if c[j] == 'pending' then pending = tonumber(c[j + 1]) end
    if c[j] == 'idle' then idle = tonumber(c[j + 1]) end
  end
  if name ~= me and pending == 0 and idle >= idle_ms then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
    removed[#removed + 1] = name
  end
end
return removed
