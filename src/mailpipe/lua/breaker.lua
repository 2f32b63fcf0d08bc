-- Circuit breaker shared by the workers of a group (HASH: state, failures, opened_at_ms, probe, probe_until).
-- KEYS[1] breaker hash. ARGV[1] op: check | success | failure, ARGV[2] now (ms), ARGV[3] threshold,
-- ARGV[4] cool-down (ms), ARGV[5] caller token.
-- check:   open -> half_open once the cool-down passed, the caller becomes the one probe;
--          returns {state, 1 if caller is the probe}
-- success: closes the breaker (from half_open) and resets the failure count
-- failure: counts a consecutive downstream failure; opens at the threshold; a failed probe re-opens
-- Returns {state, is_probe, transitioned (1/0)}.
local key = KEYS[1]
local op, now = ARGV[1], tonumber(ARGV[2])
local threshold, cooldown, token = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local state = redis.call('HGET', key, 'state') or 'closed'
local probe = redis.call('HGET', key, 'probe') or ''
local changed = 0

local function set_state(s)
  if s ~= state then changed = 1 end
  state = s
  redis.call('HSET', key, 'state', s, 'changed_ms', now)
end

if op == 'check' then
  if state == 'open' then
    local opened = tonumber(redis.call('HGET', key, 'opened_at_ms') or '0')
    if now - opened >= cooldown then
      set_state('half_open')
      redis.call('HSET', key, 'probe', token, 'probe_until', now + cooldown)
      probe = token
    end
  elseif state == 'half_open' then
    -- a probe that died never reports back: hand the probe to someone else after a cool-down
    local until_ms = tonumber(redis.call('HGET', key, 'probe_until') or '0')
    if now > until_ms then
      redis.call('HSET', key, 'probe', token, 'probe_until', now + cooldown)
      probe = token
    end
  end
elseif op == 'success' then
  redis.call('HSET', key, 'failures', 0)
  if state ~= 'closed' then
    set_state('closed')
    redis.call('HDEL', key, 'probe', 'probe_until')
  end
elseif op == 'failure' then
  local failures = redis.call('HINCRBY', key, 'failures', 1)
  if state == 'half_open' or (state == 'closed' and threshold > 0 and failures >= threshold) then
    set_state('open')
    redis.call('HSET', key, 'opened_at_ms', now)
    redis.call('HDEL', key, 'probe', 'probe_until')
  end
end
local is_probe = 0
if state == 'half_open' and probe == token then is_probe = 1 end
return {state, is_probe, changed}
