-- Trim the stream towards max_len without ever removing an entry that some group has not yet
-- delivered or that is still pending: the cut is bounded by every group's last-delivered id and
-- oldest pending id. Work per call is bounded by ARGV[2].
-- KEYS[1] stream. ARGV[1] max length, ARGV[2] max entries to remove per call.
-- Returns the number of entries removed.
local stream = KEYS[1]
local max_len, step = tonumber(ARGV[1]), tonumber(ARGV[2])
local len = redis.call('XLEN', stream)
local excess = len - max_len
if max_len <= 0 or excess <= 0 then return 0 end
if excess > step then excess = step end

local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end

-- candidate cut: keep everything after the first `excess` entries
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', excess)
local last = head[#head][1]
local lm, ls = id_parts(last)
local cut = lm .. '-' .. (ls + 1)

local groups = redis.call('XINFO', 'GROUPS', stream)
for _, g in ipairs(groups) do
  local name, delivered
  for j = 1, #g, 2 do
    if g[j] == 'name' then name = g[j + 1] end
    if g[j] == 'last-delivered-id' then delivered = g[j + 1] end
  end
  -- entries after last-delivered-id are undelivered: keep the next one onwards
  local dm, ds = id_parts(delivered)
  local keep_from = dm .. '-' .. (ds + 1)
  if less(keep_from, cut) then cut = keep_from end
  local summary = redis.call('XPENDING', stream, name)
  if summary[1] > 0 and less(summary[2], cut) then cut = summary[2] end
end
return redis.call('XTRIM', stream, 'MINID', cut)
