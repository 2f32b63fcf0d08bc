-- Trim the stream towards max_len without ever removing an entry that some group has not yet
-- delivered or that is still pending: the cut is bounded by every group's last-delivered id and
-- oldest pending id.
-- Finding the id of the (len - max_len)-th entry exactly would cost O(len) (XRANGE materialises the
-- entries), so the cut is estimated from the entry ids' timestamps: the stream's span is divided in
-- proportion to the excess. Under a steady rate this lands on max_len; under a changing rate it trims
-- somewhat more or less processed history, never anything a group still needs, and converges on the next
-- call. XTRIM MINID ~ frees whole radix-tree nodes (cheap), at most ARGV[2] entries per call.
-- KEYS[1] stream. ARGV[1] max length, ARGV[2] max entries to remove per call.
-- Returns the number of entries removed.
local stream = KEYS[1]
local max_len = tonumber(ARGV[1])
if max_len <= 0 then return 0 end
local len = redis.call('XLEN', stream)
local excess = len - max_len
if excess <= 0 then return 0 end

local function id_parts(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = id_parts(a)
  local bm, bs = id_parts(b)
  return am < bm or (am == bm and as < bs)
end

local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local first_ms, first_seq = id_parts(first[1][1])
local last_ms = id_parts(last[1][1])
local cut_ms = first_ms + math.floor((last_ms - first_ms) * excess / (len - 1))  -- where entry #excess sits
local cut = cut_ms .. '-0'
if cut_ms <= first_ms then
  -- the excess lies within the first millisecond (a burst): count it off in sequence numbers
  cut = first_ms .. '-' .. (first_seq + excess)
end

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
