-- Thread creation cost, measured with the llthreads API only.
--   spawn_join_us      new("return 1") + start() + join(), one after another: µs per thread
--   new_close_us       new("return 1") never started, collected (state created and
--                      closed, no OS thread): µs per thread; the Lua-state share of the above
--   spawn_batch16_us   16 threads started, then the 16 joined, repeated: µs per thread
--   *_cpu_us           the same batches in process CPU time (os.clock: all threads of
--                      the process, user + system), µs per thread: what a thread costs
--                      in work, without the waits, so less sensitive to a busy machine
--   after_idle_spawn_join_us, after_idle_new_us
--                      the parent idles BENCH_SPAWN_GAP_MS (default 20) before each
--                      new() + start() + join() (or new() alone): the latency of a thread
--                      started now and then, as a server would for a request; median
--                      over the run's BENCH_SPAWN_IDLE_N (default 100) threads, each
--                      timed alone. Needs luasystem (`require "system"`, Debian's
--                      lua-system, which busted depends on) for its clock and sleep.
-- Each other run is one wall-clock batch of N threads (BENCH_SPAWN_N, default 2000).
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads

local N = B.getenv_number("BENCH_SPAWN_N", 2000)
local CODE = "return 1"

local function spawn_join(n)
  for _ = 1, n do
    local ok, v = llthreads.new(CODE):start():join()
    if not ok or v ~= 1 then error("join gave " .. tostring(ok) .. ", " .. tostring(v)) end
  end
end

local function new_close(n)
  local keep = {}
  for i = 1, n do
    keep[#keep + 1] = llthreads.new(CODE)
    if i % 100 == 0 then
      keep = {}
      collectgarbage()
    end
  end
  keep = nil
  collectgarbage()
end

local function batch16(n)
  local ts = {}
  local done = 0
  while done < n do
    local k = math.min(16, n - done)
    for j = 1, k do ts[j] = llthreads.new(CODE):start() end
    for j = 1, k do
      local ok, v = ts[j]:join()
      if not ok or v ~= 1 then error("join gave " .. tostring(ok) .. ", " .. tostring(v)) end
      ts[j] = nil
    end
    done = done + k
  end
end

local function measure(name, fn)
  collectgarbage()
  fn(math.max(1, math.floor(N / 10))) -- warm-up (pool, allocator, JIT)
  local xs, cs = {}, {}
  for r = 1, B.runs do
    collectgarbage()
    local c0 = os.clock()
    local ms = B.time_ms(function() fn(N) end)
    cs[r] = (os.clock() - c0) * 1e6 / N
    xs[r] = ms * 1000 / N
  end
  B.report(name, xs, "n=" .. N)
  B.report((name:gsub("_us$", "_cpu_us")), cs, "n=" .. N .. " what=process_cpu_time")
end

-- Times each of n threads started after an idle gap; gives the median in µs.
local function after_idle(n, started)
  local ok, system = pcall(require, "system")
  if not ok or not system.monotime or not system.sleep then return nil end
  local gap = B.getenv_number("BENCH_SPAWN_GAP_MS", 20) / 1000
  local xs = {}
  for i = 1, n do
    system.sleep(gap)
    local t0 = system.monotime()
    local t = llthreads.new(CODE)
    if started then
      local ok2, v = t:start():join()
      if not ok2 or v ~= 1 then error("join gave " .. tostring(ok2) .. ", " .. tostring(v)) end
    end
    xs[i] = (system.monotime() - t0) * 1e6
    t = nil
  end
  return B.stats(xs).median
end

local function measure_after_idle(name, started)
  local n = B.getenv_number("BENCH_SPAWN_IDLE_N", 100)
  if not after_idle(math.max(1, math.floor(n / 10)), started) then
    B.note(name .. ": skipped (no luasystem: require 'system' failed)")
    return
  end
  local xs = {}
  for r = 1, B.runs do xs[r] = after_idle(n, started) end
  B.report(name, xs, "n=" .. n .. " gap_ms=" .. B.getenv_number("BENCH_SPAWN_GAP_MS", 20) .. " what=median_of_each_timed")
end

B.header("spawn")
measure("spawn_join_us", spawn_join)
measure("new_close_us", new_close)
measure("spawn_batch16_us", batch16)
measure_after_idle("after_idle_spawn_join_us", true)
measure_after_idle("after_idle_new_us", false)
