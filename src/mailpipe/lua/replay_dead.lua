-- Move dead letters back onto the stream with attempts reset, addressed to the group that dead-lettered
-- them (other groups already handled the email): XADD the original fields + XDEL the dead
-- letter in one step, so no entry is both replayed and still dead, and none is lost.
-- KEYS[1] dead-letter stream, KEYS[2] stream. ARGV[1] now (ms), ARGV[2..] dead-letter ids.
-- Returns {replayed dead-letter id, new stream id} pairs.
local dead, stream, now = KEYS[1], KEYS[2], ARGV[1]
local out = {}
for i = 2, #ARGV do
  local r = redis.call('XRANGE', dead, ARGV[i], ARGV[i])
  if #r > 0 then
    local src, fields, group = r[1][2], {}, ''
    for j = 1, #src, 2 do
      if src[j] == 'dl_group' then group = src[j + 1] end
    end
    for j = 1, #src, 2 do
      local name = src[j]
      if string.sub(name, 1, 3) ~= 'dl_' and name ~= 'last_error' then
        local value = src[j + 1]
        if name == 'attempt' then value = '1' end
        if name == 'grp' then value = group end  -- only the group that gave up on it
        if name == 'enq_ms' then value = now end
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
    local new_id = redis.call('XADD', stream, '*', unpack(fields))
    redis.call('XDEL', dead, ARGV[i])
    out[#out + 1] = {ARGV[i], new_id}
  end
end
return out
