-- Change a producer checkpoint on an operator's request (mailpipe checkpoint set|reset), refused while a
-- producer holds the mailbox lease unless forced: the check and the change are one step, so a producer
-- taking the lease in between cannot be overwritten.
-- KEYS[1] checkpoint hash, KEYS[2] lease. ARGV[1] force ("1"/"0"), ARGV[2] op ("set" | "reset"),
-- ARGV[3] now (ms), ARGV[4..] field/value pairs for "set".
-- Returns {status, lease owner or "", lease PTTL, flat field/value list of the checkpoint before}:
-- status ok | leased (nothing changed) | no_checkpoint ("set" without uidvalidity on a missing checkpoint).
local cp, lease = KEYS[1], KEYS[2]
local force, op, now = ARGV[1] == '1', ARGV[2], ARGV[3]
local owner = redis.call('GET', lease)
local ttl = redis.call('PTTL', lease)
local before = redis.call('HGETALL', cp)
if owner and not force then
  return {'leased', owner, ttl, before}
end
if op == 'reset' then
  redis.call('DEL', cp)
  return {'ok', owner or '', ttl, before}
end
local fields, has_uidvalidity = {}, false
for i = 4, #ARGV, 2 do
  if ARGV[i] == 'uidvalidity' then has_uidvalidity = true end
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
if not has_uidvalidity and redis.call('HEXISTS', cp, 'uidvalidity') == 0 then
  return {'no_checkpoint', owner or '', ttl, before}
end
redis.call('HSET', cp, 'updated_ms', now, unpack(fields))
return {'ok', owner or '', ttl, before}
