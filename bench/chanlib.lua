-- Harness shared by the channel benchmarks: bench/channel.lua (this module's channels),
-- bench/peers/lanes_channel.lua (Lua Lanes lindas) and bench/peers/effil_channel.lua
-- (effil channels). Each script hands over an adapter; the workloads, the timing and
-- the output live here, so the three measure exactly the same thing.
--
-- Workloads (issue 10, "Speed and memory"):
--   numbers_100k     one producer thread -> one consumer thread through an unbounded
--                    queue, 100,000 messages of one number: ms per 100,000
--   strings_1k_10k   the same with 10,000 messages of one 1 KiB string: ms per 10,000
--   pingpong_rtt     two threads and two unbounded queues: one sends a number on A and
--                    waits for it on B, the other receives on A and sends back on B:
--                    µs per round trip (the mean over a batch of round trips)
--   pingpong_p50     the same two queues, this time the main thread plays the pinger
--                    and times every round trip on its own with luasystem's monotonic
--                    clock (`require "system"`, which busted brings): the median round
--                    trip of BENCH_CHAN_PINGPONG_EACH (10,000) in µs, and its 90th
--                    percentile; left out when luasystem is missing
--   mpmc_8x8_cap64   8 producers and 8 consumers on one queue bounded to 64 messages,
--                    100,000 numbers in all (12,500 per thread): messages/s
--   mpmc_1x1_cap64   the same bounded queue, 1 producer and 1 consumer: messages/s
--   mem_queued_per_msg, mem_after_drain, mem_after_collect
--                    1,000,000 numbers sent from the main thread into an unbounded
--                    queue with no receiver: RSS growth per queued message (bytes),
--                    then RSS above the starting point once they are all received,
--                    and once the queue itself is collected (KiB). Each run is a fresh
--                    interpreter process.
--
-- Method. The threads of a workload start once, then each waits on a control queue of
-- its own. One repetition: the main thread sends each consumer, then each producer,
-- its message count (its go), and waits for every consumer's done (the last message it
-- received, which is checked). The timing runs from the first go to the last done, so
-- it covers both threads running and the consumer holding the last message. A run is
-- a batch of repetitions long enough (BENCH_MIN_BATCH_MS, 200) for common.lua's clock
-- (date +%s%N, its cost subtracted); a figure is the batch time / repetitions. Before
-- the runs, two repetitions and the calibration warm up threads, allocator and JIT.
-- Each figure: median of BENCH_RUNS (7) runs, with min–max.
--
-- Output: one line per figure, `name value unit (min–max) key=value...`; `#` lines are
-- notes. Knobs: BENCH_CHAN_ONLY="numbers strings pingpong mpmc memory" (a subset),
-- BENCH_CHAN_MEM_MESSAGES (1000000), BENCH_CHAN_PINGPONG (round trips per repetition,
-- 1000), BENCH_CHAN_PINGPONG_EACH (round trips timed one by one per run, 10000),
-- BENCH_CHAN_MEM_RUNS (BENCH_RUNS), plus BENCH_RUNS and BENCH_MIN_BATCH_MS.
--
-- The adapter:
--   name                  "ours" | "lanes" | "effil"
--   describe()            a string: module, version, where it was loaded from
--   channel(capacity)     a new queue; capacity nil = unbounded (never 0 here)
--   send(q, v)            main thread: queue v, waiting while a bounded q is full
--   receive(q)            main thread: the next message, waiting while q is empty
--   spawn(role, ...)      a running thread playing role (below) with these arguments
--   join(h)               waits for it; raises if the thread failed
--   collect()             optional: the module's own collection, after collectgarbage
--   notes                 optional: a list of lines printed as notes
-- Roles (each written against its module's API in the script):
--   producer(ctl, data, kind, bytes)  loop: n = receive(ctl); n == 0: return; send n
--                                     messages on data: i = 1..n (kind "number") or
--                                     one string of `bytes` bytes (kind "string")
--   consumer(ctl, done, data)         loop: n = receive(ctl); n == 0: return; receive
--                                     n messages from data; send the last one on done
--   pinger(ctl, done, a, b)           loop: n = receive(ctl); n == 0: return; n times:
--                                     send i on a, receive from b; send true on done
--   ponger(a, b)                      loop: v = receive(a); v == false: return; send v on b
local B = require "common"

local C = {}
C.B = B

C.NUMBERS = 100000
C.STRINGS = 10000
C.STRING_BYTES = 1024
C.MPMC_MESSAGES = 100000
C.MPMC_CAPACITY = 64
C.MPMC_THREADS = 8
C.PINGPONG = B.getenv_number("BENCH_CHAN_PINGPONG", 1000)
C.PINGPONG_EACH = B.getenv_number("BENCH_CHAN_PINGPONG_EACH", 10000)
C.MEM_MESSAGES = B.getenv_number("BENCH_CHAN_MEM_MESSAGES", 1000000)
C.MEM_RUNS = B.getenv_number("BENCH_CHAN_MEM_RUNS", B.runs)

-- "5.1" .. "5.4" or "jit": the flavour names of bench/run.sh and tools/build-peers.sh.
function C.flavour()
  if type(jit) == "table" then return "jit" end
  return (_VERSION:match("%d+%.%d+"))
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Puts a peer build first on package.cpath and package.path. The environment variable
-- `env` names a folder laid out as tools/build-peers.sh leaves it (<dir>/<flavour>/
-- holding `file`) or the folder holding `file` itself. Returns the folder used, or nil
-- when the variable is unset (then the module is searched where Lua looks anyway).
function C.use_peer_build(env, file)
  local root = os.getenv(env)
  if not root or root == "" then return nil end
  local d = root .. "/" .. C.flavour()
  if not file_exists(d .. "/" .. file) then d = root end
  if not file_exists(d .. "/" .. file) then
    error(string.format("%s=%s: no %s there nor in %s/%s (build it with tools/build-peers.sh)",
      env, root, file, root, C.flavour()), 0)
  end
  package.cpath = d .. "/?.so;" .. package.cpath
  package.path = d .. "/?.lua;" .. package.path
  return d
end

local function fmt(x)
  if x ~= x then return "nan" end
  if math.abs(x) >= 10000 then return string.format("%.0f", x) end
  return B.fmt(x)
end
C.fmt = fmt

-- `name value unit (min–max) extra`
function C.report(name, xs, unit, extra)
  local st = B.stats(xs)
  local line = string.format("%s %s %s (%s\226\128\147%s) runs=%d", name, fmt(st.median), unit,
    fmt(st.min), fmt(st.max), st.n)
  if extra then line = line .. " " .. extra end
  print(line)
  io.stdout:flush()
  return st
end

local function int_div(a, b)
  local q = math.floor(a / b)
  assert(q * b == a, a .. " is not a multiple of " .. b)
  return q
end

-- P producers and Cn consumers on one queue of `capacity`; `total` messages per
-- repetition, split evenly.
local function stream_rig(impl, P, Cn, capacity, total, kind)
  local data = impl.channel(capacity)
  local done = impl.channel(nil)
  local pctl, cctl, threads = {}, {}, {}
  for i = 1, Cn do
    cctl[i] = impl.channel(nil)
    threads[#threads + 1] = impl.spawn("consumer", cctl[i], done, data)
  end
  for i = 1, P do
    pctl[i] = impl.channel(nil)
    threads[#threads + 1] = impl.spawn("producer", pctl[i], data, kind, C.STRING_BYTES)
  end
  local per_p, per_c = int_div(total, P), int_div(total, Cn)
  local rig = {}
  function rig.rep()
    for i = 1, Cn do impl.send(cctl[i], per_c) end
    for i = 1, P do impl.send(pctl[i], per_p) end
    for _ = 1, Cn do
      local v = impl.receive(done)
      if P == 1 and Cn == 1 then
        if kind == "number" and v ~= total then
          error("consumer's last message was " .. tostring(v) .. ", not " .. total)
        elseif kind == "string" and (type(v) ~= "string" or #v ~= C.STRING_BYTES) then
          error("consumer's last message was not a " .. C.STRING_BYTES .. "-byte string: " .. tostring(v))
        end
      elseif v == nil then
        error("a consumer reported nil as its last message")
      end
    end
  end
  function rig.stop()
    for i = 1, Cn do impl.send(cctl[i], 0) end
    for i = 1, P do impl.send(pctl[i], 0) end
    for i = 1, #threads do impl.join(threads[i]) end
  end
  return rig
end

local function pingpong_rig(impl, n)
  local a, b = impl.channel(nil), impl.channel(nil)
  local ctl, done = impl.channel(nil), impl.channel(nil)
  local pinger = impl.spawn("pinger", ctl, done, a, b)
  local ponger = impl.spawn("ponger", a, b)
  local rig = {}
  function rig.rep()
    impl.send(ctl, n)
    assert(impl.receive(done) == true, "pinger did not report")
  end
  function rig.stop()
    impl.send(ctl, 0)
    impl.send(a, false)
    impl.join(pinger)
    impl.join(ponger)
  end
  return rig
end

-- Round trips timed one by one from the main thread: { p50 = µs, p90 = µs } per run.
local has_system, system = pcall(require, "system")
local function pingpong_each(impl)
  local a, b = impl.channel(nil), impl.channel(nil)
  local ponger = impl.spawn("ponger", a, b)
  local send, receive, clock = impl.send, impl.receive, system.monotime
  for i = 1, 1000 do
    send(a, i)
    receive(b)
  end
  local p50, p90 = {}, {}
  for r = 1, B.runs do
    collectgarbage()
    local xs = {}
    for i = 1, C.PINGPONG_EACH do
      local t0 = clock()
      send(a, i)
      receive(b)
      xs[i] = (clock() - t0) * 1e6
    end
    table.sort(xs)
    p50[r] = xs[math.floor(#xs * 0.5) + 1]
    p90[r] = xs[math.floor(#xs * 0.9) + 1]
  end
  send(a, false)
  impl.join(ponger)
  local extra = "round_trips=" .. C.PINGPONG_EACH .. " clock=system.monotime"
  C.report("pingpong_p50", p50, "\194\181s", extra)
  C.report("pingpong_p90", p90, "\194\181s", extra)
end

-- Runs rig.rep in batches (see Method above); convert(ms per repetition) -> figure.
local function measure(name, unit, rig, convert, extra)
  rig.rep()
  rig.rep()
  local reps = B.calibrate(function(n) for _ = 1, n do rig.rep() end end, 1)
  local xs = {}
  for r = 1, B.runs do
    collectgarbage()
    local ms = B.time_ms(function() for _ = 1, reps do rig.rep() end end)
    xs[r] = convert(ms / reps)
  end
  rig.stop()
  return C.report(name, xs, unit, "reps=" .. reps .. (extra and (" " .. extra) or ""))
end

local function ms_per_rep(ms) return ms end

local function per_second(count)
  return function(ms) return count / (ms / 1000) end
end

local WORKLOADS = {
  { "numbers", function(impl)
    measure("numbers_100k", "ms", stream_rig(impl, 1, 1, nil, C.NUMBERS, "number"), ms_per_rep,
      "msgs=" .. C.NUMBERS)
  end },
  { "strings", function(impl)
    measure("strings_1k_10k", "ms", stream_rig(impl, 1, 1, nil, C.STRINGS, "string"), ms_per_rep,
      "msgs=" .. C.STRINGS .. " bytes=" .. C.STRING_BYTES)
  end },
  { "pingpong", function(impl)
    measure("pingpong_rtt", "\194\181s", pingpong_rig(impl, C.PINGPONG),
      function(ms) return ms * 1000 / C.PINGPONG end, "round_trips=" .. C.PINGPONG)
  end },
  { "pingpong", function(impl)
    if has_system and system.monotime then
      pingpong_each(impl)
    else
      B.note("pingpong_p50: no luasystem (require 'system'), left out")
    end
  end },
  { "mpmc", function(impl)
    local n = C.MPMC_THREADS
    measure(string.format("mpmc_%dx%d_cap%d", n, n, C.MPMC_CAPACITY), "msg/s",
      stream_rig(impl, n, n, C.MPMC_CAPACITY, C.MPMC_MESSAGES, "number"), per_second(C.MPMC_MESSAGES),
      "msgs=" .. C.MPMC_MESSAGES)
    measure(string.format("mpmc_1x1_cap%d", C.MPMC_CAPACITY), "msg/s",
      stream_rig(impl, 1, 1, C.MPMC_CAPACITY, C.MPMC_MESSAGES, "number"), per_second(C.MPMC_MESSAGES),
      "msgs=" .. C.MPMC_MESSAGES)
  end },
}

local function rss_kb()
  local v = B.proc_status_kb("VmRSS")
  if not v then error("no VmRSS in /proc/self/status (Linux only)") end
  return v
end

local function full_collect(impl)
  collectgarbage()
  collectgarbage()
  if impl.collect then impl.collect() end
  collectgarbage()
end

-- One memory run, in this (fresh) process.
local function mem_once(impl)
  local N = C.MEM_MESSAGES
  full_collect(impl)
  local base = rss_kb()
  local q = impl.channel(nil)
  local send, receive = impl.send, impl.receive
  for i = 1, N do send(q, i) end
  full_collect(impl)
  local full = rss_kb()
  local last
  for _ = 1, N do last = receive(q) end
  assert(last == N, "last message received was " .. tostring(last) .. ", not " .. N)
  full_collect(impl)
  local drained = rss_kb()
  q = nil
  full_collect(impl)
  full_collect(impl)
  local collected = rss_kb()
  print(string.format("mem_result base_kb=%d full_kb=%d drained_kb=%d collected_kb=%d",
    base, full, drained, collected))
end

local function memory(impl)
  local interp, script = B.interpreter(), B.script_path()
  local per_msg, drained, collected, bases = {}, {}, {}, {}
  for r = 1, C.MEM_RUNS do
    local p = assert(io.popen("'" .. interp .. "' '" .. script .. "' mem 2>&1", "r"))
    local out = p:read("*a")
    p:close()
    local b, f, d, c = out:match("mem_result base_kb=(%d+) full_kb=(%d+) drained_kb=(%d+) collected_kb=(%d+)")
    if not b then error("memory run failed: " .. out, 0) end
    b, f, d, c = tonumber(b), tonumber(f), tonumber(d), tonumber(c)
    per_msg[r] = (f - b) * 1024 / C.MEM_MESSAGES
    drained[r], collected[r], bases[r] = d - b, c - b, b
  end
  local extra = "msgs=" .. C.MEM_MESSAGES
  C.report("mem_queued_per_msg", per_msg, "B", extra)
  C.report("mem_after_drain", drained, "KiB", extra .. " what=rss_above_start")
  C.report("mem_after_collect", collected, "KiB", extra .. " what=rss_above_start")
  C.report("mem_start_rss", bases, "KiB")
end

-- Entry point of the three scripts.
function C.main(impl)
  if arg and arg[1] == "mem" then
    mem_once(impl)
    return
  end
  local only = os.getenv("BENCH_CHAN_ONLY")
  if only == "" then only = nil end
  local wanted = {}
  for w in (only or ""):gmatch("[%w_]+") do wanted[w] = true end
  local flavour = (type(jit) == "table" and jit.version) or _VERSION
  B.note(string.format("channels: impl=%s %s lua=%s runs=%d min_batch_ms=%d clock_overhead_ms=%s",
    impl.name, impl.describe(), flavour, B.runs, B.min_batch_ms, B.fmt(B.clock_overhead_ms())))
  for _, line in ipairs(impl.notes or {}) do B.note(line) end
  for _, w in ipairs(WORKLOADS) do
    if not only or wanted[w[1]] then w[2](impl) end
  end
  if not only or wanted.memory then memory(impl) end
end

return C
