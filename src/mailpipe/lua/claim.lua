-- Claim idempotency keys for a batch of entries, so two entries with one key never run at once.
-- KEYS: the live done-bucket sets.
-- ARGV[1] claim TTL (ms), ARGV[2] consumer, ARGV[3] claim key prefix, then per entry: stream id,
-- idempotency key, bypass ("1": an explicit forced replay runs even if the key is done).
-- Claim keys (prefix .. key) share the pipeline's hash tag, so they live in the declared keys' slot.
-- Returns one status per entry: 0 claimed (now ours), 1 already done (duplicate), 2 claimed by another.
local ttl, consumer, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
local nb = #KEYS
for i = 0, (#ARGV - 3) / 3 - 1 do
  local id, idem, bypass = ARGV[4 + 3 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i] == '1'
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
