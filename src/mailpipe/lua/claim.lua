-- Claim idempotency keys for a batch of entries, so two entries with one key never run at once.
-- KEYS: the live done-bucket sets (ARGV[1] of them), then one claim key per entry.
-- ARGV[1] number of bucket keys, ARGV[2] claim TTL (ms), then per entry: idempotency key, owner token,
-- bypass ("1": an explicit forced replay runs even if the key is done).
-- Returns one status per entry: 0 claimed (now ours), 1 already done (duplicate), 2 claimed by another.
local nb = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local out = {}
local n = (#KEYS - nb)
for i = 1, n do
  local idem = ARGV[3 * i]
  local token = ARGV[3 * i + 1]
  local bypass = ARGV[3 * i + 2] == '1'
  local claim_key = KEYS[nb + i]
  local done = false
  for b = 1, nb do
    if bypass then break end
    if redis.call('SISMEMBER', KEYS[b], idem) == 1 then done = true; break end
  end
  if done then
    out[i] = 1
  elseif redis.call('SET', claim_key, token, 'NX', 'PX', ttl) then
    out[i] = 0
  elseif redis.call('GET', claim_key) == token then
    redis.call('PEXPIRE', claim_key, ttl)  -- our own claim from before a restart
    out[i] = 0
  else
    out[i] = 2
  end
end
return out
