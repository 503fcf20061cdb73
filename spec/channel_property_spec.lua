-- Property test of channels: rounds of P producer threads and C consumer threads
-- on one channel, each round with a random capacity (rendezvous, 1, small,
-- unbounded), random timeouts per operation (nil, 0 and a few milliseconds), a
-- random message shape and a close at a random moment, by the parent or by a
-- producer. Whatever the interleaving:
--   * every message is received exactly once, or its send said it was not sent
--     (nil, "timeout" or nil, "closed"), and a message reported as not sent is
--     never received;
--   * each consumer sees each producer's messages in the order they were sent;
--   * a send that starts after a close has returned fails with "closed";
--   * once a receive has reported "closed" (closed and drained), no receive that
--     starts later gets a message or a "timeout";
--   * nothing deadlocks: every join is bounded, and a round that overruns fails.
--
-- Replay a failure with the seed in the describe line:
--   LLTHREADS_SEED=<seed> busted spec/channel_property_spec.lua
-- The seed fixes each round's shape (counts, capacity, timeouts, close moment);
-- the threads' interleaving is the scheduler's, so a rare race may need several
-- runs of the same seed. LLTHREADS_STRESS scales the number of rounds and of
-- messages (1, the default, is what tools/test.sh runs).
--
-- Cross-thread "before/after" is judged with CLOCK_MONOTONIC (luasystem's
-- monotime, which busted itself depends on), read in every state: one clock for
-- the whole process.

local H = require "spec.helper"
local llthreads = require "llthreads"

local SEED = tonumber(os.getenv("LLTHREADS_SEED") or "") or os.time()
SEED = math.floor(SEED) % 2147483646

local SCALE = tonumber(os.getenv("LLTHREADS_STRESS") or "") or 1
if SCALE < 1 then SCALE = 1 end

local ROUNDS = 60 * SCALE
local MAX_PER_PRODUCER = 200 * SCALE
-- A round that is not over by then has deadlocked (valgrind included: a round
-- takes well under a second natively).
local ROUND_LIMIT_MS = 120000

-- Park-Miller, the same in every flavour and in the children (so a seed gives
-- the same rounds everywhere); NO_TIMEOUT stands for nil in timeout lists,
-- which cannot hold nil.
local PRNG = [[
local function new_rng(seed)
  local s = seed % 2147483646 + 1
  local r = {}
  function r.next() s = (s * 16807) % 2147483647 return s end
  function r.int(a, b) return a + r.next() % (b - a + 1) end
  function r.pick(list) return list[r.int(1, #list)] end
  return r
end
local NO_TIMEOUT = -1
]]
local new_rng = assert((loadstring or load)(PRNG .. " return new_rng"))()
local NO_TIMEOUT = -1

-- Messages carry their producer and sequence number; the shape varies by round
-- so that numbers, strings and tables all go through the queue.
local CODEC = [[
local function encode(shape, p, i)
  if shape == "number" then return p * 1000000 + i end
  if shape == "string" then return p .. ":" .. i end
  return { p = p, i = i, pad = { ("x"):rep(i % 7) } }
end
local function decode(v)
  local tv = type(v)
  if tv == "number" then return math.floor(v / 1000000), v % 1000000 end
  if tv == "string" then
    local p, i = v:match("^(%d+):(%d+)$")
    return tonumber(p), tonumber(i)
  end
  if tv == "table" then return v.p, v.i end
  return nil
end
]]

local PRODUCER = PRNG .. CODEC .. [[
local llthreads = require "llthreads"
local now = require("system").monotime
local ch, p, n, seed, timeouts, shape, close_after = ...
local r = new_rng(seed)
-- status[i]: true (sent) or the failure string; start[i]: when send i began
local status, start, problems = {}, {}, {}
local closed_at
for i = 1, n do
  local to = r.pick(timeouts)
  if to == NO_TIMEOUT then to = nil end
  start[i] = now()
  local ok, err = ch:send(encode(shape, p, i), to)
  if ok == true then
    status[i] = true
  elseif ok == nil and (err == "closed" or (err == "timeout" and to ~= nil)) then
    status[i] = err
  else
    problems[#problems + 1] = ("send %d (timeout %s) gave %s, %s"):format(i, tostring(to), tostring(ok), tostring(err))
    status[i] = "?"
  end
  if i == close_after then
    ch:close()
    closed_at = now()
  end
end
return status, start, closed_at or false, problems
]]

local CONSUMER = PRNG .. CODEC .. [[
local llthreads = require "llthreads"
local now = require("system").monotime
local ch, seed, timeouts = ...
local r = new_rng(seed)
local got, last, problems = {}, {}, {}
-- The latest start of a receive that gave a message / a timeout, and when the
-- first "closed" came back.
local last_message, last_timeout, closed_seen = -1, -1, nil
local function timeout()
  local to = r.pick(timeouts)
  if to == NO_TIMEOUT then return nil end
  return to
end
while true do
  local to = timeout()
  local t0 = now()
  local v, err = ch:receive(to)
  if v ~= nil then
    last_message = t0
    local p, i = decode(v)
    if not p then
      problems[#problems + 1] = "undecodable message " .. tostring(v)
    else
      if last[p] and i <= last[p] then
        problems[#problems + 1] = ("producer %d: message %d after message %d"):format(p, i, last[p])
      end
      last[p] = i
      got[#got + 1] = p * 1000000 + i
    end
  elseif err == "closed" then
    closed_seen = now()
    break
  elseif err == "timeout" and to ~= nil then
    last_timeout = t0
  else
    problems[#problems + 1] = ("receive (timeout %s) gave nil, %s"):format(tostring(to), tostring(err))
    break
  end
end
-- closed stays closed: whatever the timeout, nothing more comes out
for _ = 1, 3 do
  local to = timeout()
  local v, err = ch:receive(to)
  if not (v == nil and err == "closed") then
    problems[#problems + 1] = ("receive after 'closed' gave %s, %s"):format(tostring(v), tostring(err))
  end
end
return got, last_message, last_timeout, closed_seen or false, problems
]]

local CAPACITIES = { { 0, "rendezvous" }, { 1, "capacity 1" }, { 3, "capacity 3" }, { 16, "capacity 16" },
  { nil, "unbounded" } }
-- Sets of timeouts (ms) an operation picks from: nil and 0 alone, each mixed
-- with short waits, and short waits alone.
local TIMEOUT_SETS = {
  { NO_TIMEOUT }, { 0 }, { NO_TIMEOUT, 0 }, { NO_TIMEOUT, 0, 1, 5 }, { 1, 5, 20 }, { 0, 1 },
}
local SHAPES = { "number", "string", "table" }

local function show_timeouts(set)
  local t = {}
  for i, v in ipairs(set) do t[i] = v == NO_TIMEOUT and "nil" or tostring(v) end
  return "{" .. table.concat(t, ",") .. "}"
end

-- The whole shape of round k, drawn from the master generator.
local function plan_rounds()
  local r = new_rng(SEED)
  local rounds = {}
  for k = 1, ROUNDS do
    local cap = r.pick(CAPACITIES)
    local round = {
      k = k,
      producers = r.int(1, 4),
      consumers = r.int(1, 4),
      capacity = cap[1],
      capacity_name = cap[2],
      send_timeouts = r.pick(TIMEOUT_SETS),
      receive_timeouts = r.pick(TIMEOUT_SETS),
      shape = r.pick(SHAPES),
      counts = {},
      seeds = {},
    }
    for p = 1, round.producers do round.counts[p] = r.int(1, MAX_PER_PRODUCER) end
    for i = 1, round.producers + round.consumers do round.seeds[i] = r.int(1, 2147483646) end
    local how = r.int(1, 3)
    if how == 1 then
      round.close = { by = "parent", after_ms = r.int(0, 30) }
    elseif how == 2 then
      local p = r.int(1, round.producers)
      round.close = { by = "producer", p = p, after = r.int(1, round.counts[p]) }
    else
      round.close = { by = "end" }
    end
    rounds[k] = round
  end
  return rounds
end

local function describe_round(round)
  local close
  if round.close.by == "parent" then
    close = ("closed by the parent after %d ms"):format(round.close.after_ms)
  elseif round.close.by == "producer" then
    close = ("closed by producer %d after its message %d"):format(round.close.p, round.close.after)
  else
    close = "closed once every producer is done"
  end
  local total = 0
  for _, n in ipairs(round.counts) do total = total + n end
  return ("round %d: %d producers x %d consumers, %s, %s messages, send timeouts %s, receive timeouts %s, %d messages, %s")
    :format(round.k, round.producers, round.consumers, round.capacity_name, round.shape,
      show_timeouts(round.send_timeouts), show_timeouts(round.receive_timeouts), total, close)
end

-- Joins `t` within what is left of the round; a timeout is a deadlock.
local function bounded_join(t, deadline, what)
  local left = math.max(1, math.floor((deadline - H.now()) * 1000))
  local r = H.pack(t:join(left))
  if r[1] == nil and r[2] == "timeout" then return nil, what .. " still running at the round's time limit: deadlock" end
  if r[1] ~= true then return nil, what .. " failed: " .. H.show_pack(r) end
  return r
end

local function run_round(round)
  local ch = llthreads.channel(round.capacity)
  local producers, consumers = {}, {}
  -- Consumers first: with a rendezvous they are the ones senders hand over to.
  for c = 1, round.consumers do
    consumers[c] = llthreads.new(CONSUMER, ch, round.seeds[round.producers + c], round.receive_timeouts):start()
  end
  for p = 1, round.producers do
    local close_after = round.close.by == "producer" and round.close.p == p and round.close.after or false
    producers[p] = llthreads.new(PRODUCER, ch, p, round.counts[p], round.seeds[p], round.send_timeouts,
      round.shape, close_after):start()
  end
  local close_times = {}
  if round.close.by == "parent" then
    llthreads.sleep(round.close.after_ms)
    ch:close()
    close_times[#close_times + 1] = H.now()
  end

  local deadline = H.now() + ROUND_LIMIT_MS / 1000
  local failure
  local sent = {}
  for p = 1, round.producers do
    local r, err = bounded_join(producers[p], deadline, "producer " .. p)
    if not r then failure = failure or err break end
    sent[p] = r
  end
  -- Whatever the plan, the channel closes once the producers are done, so that
  -- the consumers end; close is idempotent.
  ch:close()
  close_times[#close_times + 1] = H.now()
  local received = {}
  for c = 1, round.consumers do
    if failure then break end
    local r, err = bounded_join(consumers[c], deadline, "consumer " .. c)
    if not r then failure = err break end
    received[c] = r
  end
  if failure then
    -- Free whatever is stuck before failing, so the spec run goes on.
    for _, t in ipairs(producers) do t:interrupt(true) end
    for _, t in ipairs(consumers) do t:interrupt(true) end
    for _, t in ipairs(producers) do t:join(5000) end
    for _, t in ipairs(consumers) do t:join(5000) end
    return failure
  end

  local problems = {}
  local function problem(fmt, ...)
    if #problems < 10 then problems[#problems + 1] = fmt:format(...) end
  end

  -- The first close to return bounds the moment the channel closed.
  local closed_by = math.min(H.unpack(close_times))
  local ok_sent, n_ok = {}, 0
  for p = 1, round.producers do
    local _, status, start, closed_at, child_problems = H.unpack(sent[p], 1, 5)
    for _, msg in ipairs(child_problems) do problem("producer %d: %s", p, msg) end
    if closed_at then closed_by = math.min(closed_by, closed_at) end
    for i = 1, round.counts[p] do
      if status[i] == nil then problem("producer %d: no status for message %d", p, i) end
    end
    sent[p] = { status = status, start = start }
  end
  for p = 1, round.producers do
    local status, start = sent[p].status, sent[p].start
    for i = 1, round.counts[p] do
      if status[i] == true then
        ok_sent[p * 1000000 + i] = true
        n_ok = n_ok + 1
      end
      if start[i] > closed_by and status[i] ~= "closed" then
        problem("producer %d: message %d began %.6f s after the close and gave %s", p, i,
          start[i] - closed_by, tostring(status[i]))
      end
    end
  end

  local seen, n_seen = {}, 0
  local drained_at, last_message, last_timeout = math.huge, -1, -1
  for c = 1, round.consumers do
    local _, got, lm, lt, closed_seen, child_problems = H.unpack(received[c], 1, 6)
    for _, msg in ipairs(child_problems) do problem("consumer %d: %s", c, msg) end
    if not closed_seen then problem("consumer %d: never saw 'closed'", c) end
    drained_at = math.min(drained_at, closed_seen or math.huge)
    last_message = math.max(last_message, lm)
    last_timeout = math.max(last_timeout, lt)
    for _, key in ipairs(got) do
      if seen[key] then
        problem("message %d of producer %d received twice (consumers %d and %d)", key % 1000000,
          math.floor(key / 1000000), seen[key], c)
      elseif not ok_sent[key] then
        problem("message %d of producer %d received but its send said it was not sent", key % 1000000,
          math.floor(key / 1000000))
      end
      if not seen[key] then n_seen = n_seen + 1 end
      seen[key] = seen[key] or c
    end
  end
  for key in pairs(ok_sent) do
    if not seen[key] then
      problem("message %d of producer %d was sent but never received", key % 1000000, math.floor(key / 1000000))
    end
  end
  if last_message > drained_at then
    problem("a receive began %.6f s after another reported 'closed' and got a message", last_message - drained_at)
  end
  if last_timeout > drained_at then
    problem("a receive began %.6f s after another reported 'closed' and timed out", last_timeout - drained_at)
  end
  if ch:len() ~= 0 then problem("%d messages left in the channel", ch:len()) end
  local v, err = ch:receive(0)
  if not (v == nil and err == "closed") then problem("the channel then gave %s, %s", tostring(v), tostring(err)) end
  if #problems > 0 then
    return ("%d sent, %d received:\n  %s"):format(n_ok, n_seen, table.concat(problems, "\n  "))
  end
  return nil, n_ok
end

describe(("channel property (seed %d, LLTHREADS_STRESS=%d)"):format(SEED, SCALE), function()
  for _, round in ipairs(plan_rounds()) do
    local name = describe_round(round)
    it(name, function()
      local failure = run_round(round)
      if failure then
        error(("seed %d, %s:\n%s"):format(SEED, name, failure), 0)
      end
    end)
  end
end)
