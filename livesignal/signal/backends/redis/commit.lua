-- Commit one store step atomically (livesignal/signal/backends/redis/tx.py builds the plan).
--
-- ARGV[1] is a JSON plan:
--   checks  [[key, version]]      each record the step read must still be at that version
--                                 ("0": must still not exist), else nothing is written
--   counts  [[set_key, n]]        each set the step counted must still hold n members
--   ops     [[cmd, ...]]          writes, in order; PUT / AT_SET / AT_CLEAR / VISIT /
--                                 DROP_ROOM are ours, anything else a plain Redis command
--   version_key                   a counter: every write takes a new version from it, so a
--                                 record deleted and created again never repeats a version
--   publish [["room", seq_key, stream_key, channel, live_id, name, data_json] |
--            ["user", channel, user_id, name, data_json]]   in the order the step staged them:
--                                 one node's pub/sub connection receives them in that order
--   seqs    [seq_key]             current seqs to return, after the events
--   now     "unix seconds"        the step's time (the events' ts)
--   maxlen  history entries kept per room (at least)
-- Returns {"conflict"} or {"ok", {event seqs...}, {seqs...}}.
local plan = cjson.decode(ARGV[1])

for _, check in ipairs(plan.checks) do
  local version = redis.call('HGET', check[1], 'v')
  if (version or '0') ~= check[2] then
    return {'conflict'}
  end
end
for _, count in ipairs(plan.counts) do
  if redis.call('SCARD', count[1]) ~= count[2] then
    return {'conflict'}
  end
end

local dropped = {}
for _, op in ipairs(plan.ops) do
  local cmd = op[1]
  if cmd == 'PUT' or cmd == 'AT_SET' then
    redis.call('HSET', op[2], 'v', redis.call('INCR', plan.version_key), 'd', op[3])
  elseif cmd == 'VISIT' then
    -- op: pv_key, visitors_key, uv_key, user_id
    redis.call('INCR', op[2])
    if redis.call('SADD', op[3], op[5]) == 1 then
      redis.call('INCR', op[4])
    end
  elseif cmd == 'AT_CLEAR' then
    -- op: at_key, live_id: the user's current room is cleared only if it is still this one
    if redis.call('HGET', op[2], 'd') == op[3] then
      redis.call('DEL', op[2])
    end
  elseif cmd == 'DROP_ROOM' then
    table.insert(dropped, op)  -- after the events: room.deleted still goes out
  else
    redis.call(unpack(op))
  end
end

local event_seqs = {}
for _, event in ipairs(plan.publish) do
  if event[1] == 'room' then
    local seq = redis.call('INCR', event[2])
    redis.call('XADD', event[3], 'MAXLEN', '~', plan.maxlen, '0-' .. seq,
      'n', event[6], 'd', event[7], 't', plan.now)
    redis.call('PUBLISH', event[4], '{"live_id":' .. cjson.encode(event[5]) .. ',"seq":' ..
      seq .. ',"name":' .. cjson.encode(event[6]) .. ',"data":' .. event[7] .. ',"ts":' ..
      plan.now .. '}')
    table.insert(event_seqs, seq)
  else
    redis.call('PUBLISH', event[2], '{"user_id":' .. cjson.encode(event[3]) .. ',"name":' ..
      cjson.encode(event[4]) .. ',"data":' .. event[5] .. '}')
  end
end

for _, op in ipairs(dropped) do
  -- op: DROP_ROOM, members_key, member_key_prefix, at_prefix, at_suffix, live_id, keys...
  local members = redis.call('ZRANGE', op[2], 0, -1)
  for _, user_id in ipairs(members) do
    redis.call('DEL', op[3] .. user_id)
    local at = op[4] .. user_id .. op[5]
    if redis.call('HGET', at, 'd') == op[6] then
      redis.call('DEL', at)
    end
  end
  for index = 7, #op do
    redis.call('DEL', op[index])
  end
end

local seqs = {}
for _, key in ipairs(plan.seqs) do
  table.insert(seqs, tonumber(redis.call('GET', key) or '0'))
end
return {'ok', event_seqs, seqs}
