-- Claim idempotency keys for a batch of entries, so two entries with one key never run at once.
-- KEYS: the live done-bucket sets.
-- ARGV[1] claim TTL (ms), ARGV[2] consumer, ARGV[3] claim key prefix, ARGV[4] the entries, one line each:
-- "<stream id> <idempotency key> <bypass>\n" (bypass "1": an explicit forced replay runs even if done).
-- One packed argument instead of three per entry: packing arguments dominates the client's cost.
-- Claim keys (prefix .. key) share the pipeline's hash tag, so they live in the declared keys' slot.
-- Returns one status per entry: 0 claimed (now ours), 1 already done (duplicate), 2 claimed by another.
local ttl, consumer, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
local nb = #KEYS
local i = -1
for id, idem, flag in string.gmatch(ARGV[4], '(%S+) (%S+) (%S+)\n') do
  i = i + 1
  local bypass = flag == '1'
  local claim_key = prefix .. idem
  local token = consumer .. ' ' .. id
  local done = false
  if not bypass then
    for b = 1, nb do
      if redis.call('SISMEMBER', KEYS[b], idem) == 1 then done = true; break end
    end
  end
  if done then
    out[i + 1] = 1
  elseif redis.call('SET', claim_key, token, 'NX', 'PX', ttl) then
    out[i + 1] = 0
  elseif redis.call('GET', claim_key) == token then
    redis.call('PEXPIRE', claim_key, ttl)  -- our own claim from before a restart
    out[i + 1] = 0
  else
    out[i + 1] = 2
  end
end
return out
