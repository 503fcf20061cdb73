-- CPU scaling: T threads each run the same CPU-bound loop (fixed work per thread),
-- started together and joined; T = 1, 2, 4, 8, 16 (BENCH_SCALING_THREADS to change).
-- speedup(T) = T * time(1) / time(T): the ideal is min(T, cores). Each run measures
-- every T once, in one round, and the speedup is computed within the round, so slow
-- drifts of the machine's load cancel out; the median over rounds is reported.
-- Because the machine may be shared, each batch also records the process CPU time
-- (os.clock: all threads of this process) and the whole machine's busy time
-- (/proc/stat), giving per T:
--   scaling_parallelism_T  our CPU time / wall time: the cores we actually got
--   scaling_cpu_eff_T      T * cpu(1) / cpu(T): 1.0 when T threads cost no more CPU
--                          than T times one (no lock or cache contention); with
--                          idle cores, speedup = parallelism * cpu_eff
--   scaling_others_cores_T cores kept busy by OTHER processes during the batch
--   scaling_process_speedup_P2  control: 2 * time(1 process) / time(2 processes)
--                          running the same loop as separate interpreters, in the
--                          same rounds: the best any threads library can show then
--   scaling_speedup_quiet_T speedup over the rounds where other processes kept less
--                          than BENCH_QUIET_CORES (0.15) cores busy during both the
--                          T = 1 and the T batch: the figure to quote on a shared box
-- The work per thread is calibrated at start so that T = 1 takes about
-- BENCH_SCALING_MS (default 300) ms.
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads

local TARGET_MS = B.getenv_number("BENCH_SCALING_MS", 300)
local TS = {}
for t in (os.getenv("BENCH_SCALING_THREADS") or "1 2 4 8 16"):gmatch("%d+") do
  TS[#TS + 1] = tonumber(t)
end

-- No table or string allocation: pure arithmetic, so the threads share nothing.
local WORK = [[
local n = tonumber((...))
local s = 0
for i = 1, n do
  s = (s + i * 7) % 1000003
end
return s
]]

-- Busy and total jiffies of the whole machine (nil where /proc/stat is missing).
local function machine_jiffies()
  local f = io.open("/proc/stat", "r")
  if not f then return nil end
  local line = f:read("*l")
  f:close()
  local xs = {}
  for v in line:gmatch("%d+") do xs[#xs + 1] = tonumber(v) end
  -- user nice system idle iowait irq softirq steal ...
  local total = 0
  for i = 1, math.min(#xs, 8) do total = total + xs[i] end
  local idle = xs[4] + (xs[5] or 0)
  return total - idle, total
end

local HZ = 100 -- USER_HZ on Linux

local function run(T, n)
  local ts = {}
  for i = 1, T do ts[i] = llthreads.new(WORK, n):start() end
  for i = 1, T do
    local ok, v = ts[i]:join()
    if not ok then error("worker failed: " .. tostring(v)) end
  end
end

-- Control: the same work in T separate interpreter processes (no threads, no module),
-- for T = 1 and 2, in the same rounds: what this machine gives at that moment.
local CONTROL = os.getenv("BENCH_SCALING_CONTROL") ~= "0"
local work_file = os.tmpname()
do
  local f = assert(io.open(work_file, "w"))
  f:write(WORK)
  f:close()
end
local interp = B.interpreter()
local function run_processes(T, n)
  local ps = {}
  for i = 1, T do
    ps[i] = assert(io.popen("'" .. interp .. "' '" .. work_file .. "' " .. string.format("%d", n), "r"))
  end
  for i = 1, T do
    ps[i]:read("*a")
    ps[i]:close()
  end
end

B.header("scaling")
local n, ms = B.calibrate(function(k) run(1, k) end, 100000, TARGET_MS)
B.note(string.format("loop iterations per thread=%d (T=1 took %.1f ms at calibration)", n, ms))

local QUIET = B.getenv_number("BENCH_QUIET_CORES", 0.15)
local times, speedups, par, eff, others, quiet = {}, {}, {}, {}, {}, {}
for _, T in ipairs(TS) do
  times[T], speedups[T], par[T], eff[T], others[T], quiet[T] = {}, {}, {}, {}, {}, {}
end
-- Rounds go on past BENCH_RUNS (up to twice as many) until BENCH_RUNS of them were
-- quiet for T = 2, so that a busy spell on a shared machine does not leave no
-- usable round at all.
local rounds = 0
local pspeed = {}
while rounds < B.runs or (#quiet[TS[#TS >= 2 and 2 or 1]] < B.runs and rounds < 2 * B.runs) do
  rounds = rounds + 1
  if CONTROL then
    local p1 = B.time_ms(function() run_processes(1, n) end)
    local p2 = B.time_ms(function() run_processes(2, n) end)
    pspeed[#pspeed + 1] = 2 * p1 / p2
  end
  local t1, c1, o1
  for _, T in ipairs(TS) do
    local busy0 = machine_jiffies()
    local cpu0 = os.clock()
    local t = B.time_ms(function() run(T, n) end)
    local cpu = (os.clock() - cpu0) * 1000
    local busy1 = machine_jiffies()
    local other
    if busy0 and busy1 then
      local machine_ms = (busy1 - busy0) * 1000 / HZ
      other = math.max(0, machine_ms - cpu) / t
      others[T][#others[T] + 1] = other
    end
    times[T][#times[T] + 1] = t
    par[T][#par[T] + 1] = cpu / t
    if T == 1 then t1, c1, o1 = t, cpu, other end
    if t1 then
      local sp = T * t1 / t
      speedups[T][#speedups[T] + 1] = sp
      eff[T][#eff[T] + 1] = T * c1 / cpu
      if o1 and other and o1 < QUIET and other < QUIET then
        quiet[T][#quiet[T] + 1] = sp
      end
      if os.getenv("BENCH_VERBOSE") then
        B.note(string.format("round %d T=%d wall=%.1f cpu=%.1f others=%.2f speedup=%.2f",
          rounds, T, t, cpu, other or -1, sp))
      end
    end
  end
end
os.remove(work_file)
for _, T in ipairs(TS) do
  B.report(string.format("scaling_T%d_ms", T), times[T], "threads=" .. T)
end
if CONTROL then
  B.report("scaling_process_speedup_P2", pspeed, "what=2_processes_vs_1_same_rounds_no_threads")
end
for _, T in ipairs(TS) do
  if #speedups[T] > 0 then
    B.report(string.format("scaling_speedup_T%d", T), speedups[T], "threads=" .. T .. " ideal=min(T,cores)")
  end
end
for _, T in ipairs(TS) do
  if #quiet[T] > 0 then
    B.report(string.format("scaling_speedup_quiet_T%d", T), quiet[T],
      string.format("threads=%d what=speedup_in_rounds_where_other_processes_used_<%.2f_cores", T, QUIET))
  else
    print(string.format("scaling_speedup_quiet_T%d median=nan min=nan max=nan runs=0 threads=%d what=no_quiet_round", T, T))
  end
end
for _, T in ipairs(TS) do
  B.report(string.format("scaling_parallelism_T%d", T), par[T], "threads=" .. T .. " what=our_cpu/wall")
end
for _, T in ipairs(TS) do
  if #eff[T] > 0 then
    B.report(string.format("scaling_cpu_eff_T%d", T), eff[T], "threads=" .. T .. " what=T*cpu(1)/cpu(T)")
  end
end
for _, T in ipairs(TS) do
  if #others[T] > 0 then
    B.report(string.format("scaling_others_cores_T%d", T), others[T], "threads=" .. T .. " what=other_processes_busy_cores")
  end
end
