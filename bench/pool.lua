-- The task pool (issue 12), each figure side by side in one run where it is a ratio:
--   submit_join_us      pool:submit(fn):join() of `return 1`, one at a time, pool of 1:
--                       µs per task (target: median ≤ 8)
--   throughput_tps      BENCH_POOL_N (default 100000) trivial tasks submitted, then all
--                       joined, pool of 2: tasks per second (target ≥ 200,000)
--   module_task_us      a task that needs a module (require "string", then a real
--                       string job) on a warm pool, against new(source):start():join()
--                       of the same code: µs each, alternating, and the ratio
--   module_cjson_*      the same with a real C module, lua-cjson (encode a 20-field
--                       record), when `require "cjson"` works here; the pool's workers
--                       load it once, in `init`
--   idle_worker_kib     resident memory of a pool of BENCH_POOL_IDLE (default 64) idle
--                       workers, per worker, against a live thread's (bench/memory.lua)
--   scaling_x           CPU-bound tasks on a pool of 2 against a pool of 1: the speedup
--                       (target ≥ 1.9 on 2 cores)
--   scaling_process_x   control, in the same rounds: the same tasks in two interpreter
--                       processes (8 each) against one (16): what the machine gives two
--                       CPU-bound loops at that moment, with no threads and no module
--   scaling_vs_process  scaling_x / scaling_process_x, per round
-- Rounds: BENCH_RUNS (default 7).
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads

local N = B.getenv_number("BENCH_POOL_N", 100000)
local IDLE = B.getenv_number("BENCH_POOL_IDLE", 64)

B.header("pool")

local function one() return 1 end

do -- submit + join, one at a time
  local pool = llthreads.pool{ size = 1 }
  local n = 2000
  for _ = 1, n do pool:submit(one):join() end
  local xs = {}
  for _ = 1, B.runs do
    xs[#xs + 1] = B.time_ms(function()
      for _ = 1, n do
        local ok, v = pool:submit(one):join()
        if not ok or v ~= 1 then error("task gave " .. tostring(v)) end
      end
    end) * 1000 / n
  end
  B.report("submit_join_us", xs)
  pool:close()
end

do -- throughput
  local pool = llthreads.pool{ size = 2 }
  local xs = {}
  for _ = 1, B.runs do
    local tasks = {}
    local ms = B.time_ms(function()
      for i = 1, N do tasks[i] = pool:submit(one) end
      for i = 1, N do tasks[i]:join() end
    end)
    xs[#xs + 1] = N / (ms / 1000)
    tasks = nil
    collectgarbage()
  end
  B.report("throughput_tps", xs)
  pool:close()
end

-- 300 tasks fn(arg) on `pool` against 300 threads new(source, arg), side by side;
-- every one must return `expect`.
local function pool_against_new(name, pool, fn, source, arg, expect)
  local function check(what, ok, v)
    if not ok or v ~= expect then error(what .. " gave " .. tostring(v)) end
  end
  B.side_by_side(name, "pool", function(n)
    for _ = 1, n do check("task", pool:submit(fn, arg):join()) end
  end, "new", function(n)
    for _ = 1, n do check("thread", llthreads.new(source, arg):start():join()) end
  end, 300)
end

do -- a task that needs a module: warm pool against a fresh thread
  local function job(n)
    local string = require "string"
    return #string.rep("ab", n):upper()
  end
  local SOURCE = "local n = ... local string = require 'string' return #string.rep('ab', n):upper()"
  local pool = llthreads.pool{ size = 1 }
  pool_against_new("module_task", pool, job, SOURCE, 100, 200)
  pool:close()
end

do -- a task that needs a real C module: lua-cjson, when installed
  if not pcall(require, "cjson") then
    B.note("module_cjson: lua-cjson is not installed here (Debian: apt-get install lua-cjson): skipped")
  else
    local function job(t) return #require("cjson").encode(t) end
    local SOURCE = "local t = ... return #require('cjson').encode(t)"
    local record = {}
    for i = 1, 20 do record["field" .. i] = i % 2 == 0 and i * 1.5 or ("value " .. i) end
    local pool = llthreads.pool{ size = 1, init = function() require "cjson" end }
    pool_against_new("module_cjson", pool, job, SOURCE, record, #require("cjson").encode(record))
    pool:close()
  end
end

do -- idle workers
  local xs = {}
  for _ = 1, B.runs do
    collectgarbage()
    local before = B.proc_status_kb("VmRSS")
    local pool = llthreads.pool{ size = IDLE }
    local after = B.proc_status_kb("VmRSS")
    xs[#xs + 1] = (after - before) / IDLE
    pool:close()
  end
  B.report("idle_worker_kib", xs, ("workers=%d"):format(IDLE))
end

do -- scaling on CPU-bound tasks
  local BURN = "local function burn(n) local x = 0 for i = 1, n do x = x + i % 7 end return x end"
  local burn = assert((loadstring or load)(BURN .. " return burn"))()
  local tasks_n, work = 16, 2000000
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(BURN, " for _ = 1, tonumber(arg[1]) do burn(", work, ") end")
  f:close()
  local interp = B.interpreter()
  local function processes(k)
    return B.time_ms(function()
      local ps = {}
      for i = 1, k do
        ps[i] = assert(io.popen(("'%s' '%s' %d"):format(interp, script, tasks_n / k), "r"))
      end
      for i = 1, k do
        ps[i]:read("*a")
        ps[i]:close()
      end
    end)
  end
  local function run(size)
    local pool = llthreads.pool{ size = size }
    local ms = B.time_ms(function()
      local ts = {}
      for i = 1, tasks_n do ts[i] = pool:submit(burn, work) end
      for i = 1, tasks_n do ts[i]:join() end
    end)
    pool:close()
    return ms
  end
  local xs, ps, rs = {}, {}, {}
  for _ = 1, B.runs do
    local one_ms = run(1)
    local two_ms = run(2)
    xs[#xs + 1] = one_ms / two_ms
    ps[#ps + 1] = processes(1) / processes(2)
    rs[#rs + 1] = xs[#xs] / ps[#ps]
  end
  os.remove(script)
  B.report("scaling_x", xs, "pool_of_2_vs_1")
  B.report("scaling_process_x", ps, "2_processes_vs_1_same_rounds")
  B.report("scaling_vs_process", rs, "per_round")
end
