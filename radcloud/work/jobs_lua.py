"""The Lua scripts behind :mod:`radcloud.work.jobs`: every job change is one atomic script.

Each script changes the job/shard records, bumps the job's ``version`` and
appends the matching event to the job's stream in one step, so readers never
see a version without its event, and exactly one caller learns that it
recorded the last shard outcome (it becomes the finaliser).

State names come from :mod:`radcloud.work.lifecycle` (``@SHARD_FINAL@`` and
the like are filled in below), so the scripts cannot drift from its table.
"""

from radcloud.work.lifecycle import JOB, JOB_FINAL, SHARD_FINAL


def _lua_set(states) -> str:
    return "{" + ", ".join(f"{s}=1" for s in sorted(states)) + "}"


def _fill(script: str) -> str:
    return (script.replace("@SHARD_FINAL@", _lua_set(SHARD_FINAL))
            .replace("@JOB_FINAL@", _lua_set(JOB_FINAL))
            .replace("@JOB_RETRYABLE@", _lua_set(JOB.sources("retry")))
            .replace("@JOB_STARTABLE@", _lua_set(s for s in JOB.sources("start") if JOB.next(s, "start") != s))
            .replace("@JOB_DONE_FROM@", _lua_set(JOB.sources("all_done"))))


# Patch one shard record and the job counters atomically.
# KEYS: job, shards, events.  ARGV: shard id, allowed states (csv), patch (JSON),
# event type, event data (JSON), now, maxlen.
# Returns {version, finaliser(0/1), job state} or {-1, current shard state} when refused.
SHARD_LUA = """
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {-2, 'missing'} end
local shard = cjson.decode(raw)
local allowed = false
for s in string.gmatch(ARGV[2], '[^,]+') do if s == shard.state then allowed = true end end
if not allowed then return {-1, shard.state} end
local patch = cjson.decode(ARGV[3])
local old_done = tonumber(shard.instances_done or 0)
for k, v in pairs(patch) do shard[k] = v end
local jstate = redis.call('HGET', KEYS[1], 'state')
if patch.instances_done ~= nil then
  redis.call('HINCRBY', KEYS[1], 'instances_done', tonumber(patch.instances_done) - old_done)
end
local final = @SHARD_FINAL@
local startable = @JOB_STARTABLE@
local done_from = @JOB_DONE_FROM@
if patch.state == 'running' and startable[jstate] then
  jstate = 'running'
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[6])
end
local finaliser = 0
if final[patch.state] then
  redis.call('HINCRBY', KEYS[1], 'shards_' .. patch.state, 1)
  local done = redis.call('HINCRBY', KEYS[1], 'shards_done', 1)
  local total = tonumber(redis.call('HGET', KEYS[1], 'shards_total'))
  if done >= total and done_from[jstate] then
    jstate = 'finishing'
    redis.call('HSET', KEYS[1], 'state', 'finishing', 'finishing_at', ARGV[6])
    finaliser = 1
  end
end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(shard))
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', ARGV[4], 'v', v,
           'shard', ARGV[1], 'data', ARGV[5], 'ts', ARGV[6])
if finaliser == 1 then
  v = redis.call('HINCRBY', KEYS[1], 'version', 1)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'type', 'state', 'v', v,
             'shard', '', 'data', '{"state":"finishing"}', 'ts', ARGV[6])
end
return {v, finaliser, jstate}
"""

# Move the job between states if it is in one of the allowed ones.
# KEYS: job, events.  ARGV: allowed (csv or '*'), new state ('' = keep),
# fields (JSON object of hash fields), event type, event data, now, maxlen.
# Returns {version, state} or {-1, current state}.
JOB_LUA = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {-2, 'missing'} end
if ARGV[1] ~= '*' then
  local ok = false
  for s in string.gmatch(ARGV[1], '[^,]+') do if s == cur then ok = true end end
  if not ok then return {-1, cur} end
end
local fields = cjson.decode(ARGV[3])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, tostring(v)) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'state', ARGV[2]); cur = ARGV[2] end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'type', ARGV[4], 'v', v,
           'shard', '', 'data', ARGV[5], 'ts', ARGV[6])
return {v, cur}
"""

# Reopen the shards of a finished job for a retry: those in the states the shard event ARGV[4]
# leaves (``retry``: failed shards; ``rerun``: a pipeline's failed and stopped steps).
# KEYS: job, shards, events.  ARGV: now, maxlen, deadline, shard states to reopen (csv).
# Returns the list of reopened shard ids, or {-1, state} when the job cannot be retried.
RETRY_LUA = """
local cur = redis.call('HGET', KEYS[1], 'state')
local retryable = @JOB_RETRYABLE@
if not cur or not retryable[cur] then return {-1, cur or 'missing'} end
local reopen = {}
for s in string.gmatch(ARGV[4], '[^,]+') do reopen[s] = true end
local ids = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local shard = cjson.decode(all[i + 1])
  if reopen[shard.state] then
    local lost = tonumber(shard.instances_done or 0)
    -- Lua's -0 reaches Redis as the string '-0', which HINCRBY refuses as
    -- "not an integer": a shard that failed before any progress broke retry.
    if lost ~= 0 then redis.call('HINCRBY', KEYS[1], 'instances_done', -lost) end
    redis.call('HINCRBY', KEYS[1], 'shards_' .. shard.state, -1)
    shard.state = 'pending'; shard.attempt = (shard.attempt or 1) + 1
    shard.instances_done = 0; shard.reason = cjson.null; shard.exit_code = cjson.null
    shard.activation_id = cjson.null; shard.deadline = tonumber(ARGV[3])
    shard.started_at = cjson.null; shard.finished_at = cjson.null; shard.plugin_started_at = cjson.null
    redis.call('HSET', KEYS[2], all[i], cjson.encode(shard))
    table.insert(ids, all[i])
  end
end
local n = #ids
if n == 0 then return {} end  -- nothing to rerun: the job stays as it is
redis.call('HINCRBY', KEYS[1], 'shards_done', -n)
redis.call('HSET', KEYS[1], 'state', 'staging', 'reason', '', 'finished_at', '')
redis.call('PERSIST', KEYS[1]); redis.call('PERSIST', KEYS[2]); redis.call('PERSIST', KEYS[3])
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'type', 'retry', 'v', v,
           'shard', '', 'data', cjson.encode({shards = ids}), 'ts', ARGV[1])
return ids
"""


SHARD_LUA, JOB_LUA, RETRY_LUA = _fill(SHARD_LUA), _fill(JOB_LUA), _fill(RETRY_LUA)
