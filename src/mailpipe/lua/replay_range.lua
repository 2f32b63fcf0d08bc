-- Re-publish stream entries for reprocessing (mailpipe replay): each id's fields are copied to a new
-- entry with attempts reset, in one step per call, so a copy is either complete or not there at all.
-- KEYS[1] stream. ARGV[1] now (ms), ARGV[2] target group ("" = every group), ARGV[3] "1" to mark the
-- copies replay=force (the workers of the target group run them even if their key is done),
-- ARGV[4..] stream ids to copy. Ids no longer in the stream (trimmed) are skipped.
-- Returns {source id, new id} pairs.
local stream, now, group, force = KEYS[1], ARGV[1], ARGV[2], ARGV[3] == '1'
local dropped = {replay = true, replay_of = true, last_error = true, grp = true}
local out = {}
for i = 4, #ARGV do
  local r = redis.call('XRANGE', stream, ARGV[i], ARGV[i])
  if #r > 0 then
    local src, fields = r[1][2], {}
    for j = 1, #src, 2 do
      local name, value = src[j], src[j + 1]
      if not dropped[name] and string.sub(name, 1, 3) ~= 'dl_' then
        if name == 'attempt' then value = '1' end
        if name == 'enq_ms' then value = now end
        fields[#fields + 1] = name
        fields[#fields + 1] = value
      end
    end
    fields[#fields + 1] = 'grp'
    fields[#fields + 1] = group
    fields[#fields + 1] = 'replay_of'
    fields[#fields + 1] = ARGV[i]
    if force then
      fields[#fields + 1] = 'replay'
      fields[#fields + 1] = 'force'
    end
    out[#out + 1] = {ARGV[i], redis.call('XADD', stream, '*', unpack(fields))}
  end
end
return out
