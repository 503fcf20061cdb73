-- Memory per live thread: BENCH_MEM_THREADS (default 1000) threads alive at once, each
-- blocked (no CPU) reading a FIFO until released. Resident memory of the process once
-- all of them run (VmRSS from /proc/self/status) minus the baseline before the first
-- new(), divided by the thread count: KiB per thread. VmHWM (peak RSS) is reported too.
-- Each run is a fresh interpreter process, so runs do not inherit each other's heap.
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads

local THREADS = B.getenv_number("BENCH_MEM_THREADS", 1000)

local CHILD = [[
local fifo, count = ...
local c = assert(io.open(count, "a"))
c:write("x")
c:close()
local f = assert(io.open(fifo, "r"))
f:setvbuf("no")     -- no 4 KiB stdio buffer: measure the thread, not the benchmark
f:read("*a")        -- blocks until the parent closes the FIFO's only writer
f:close()
return true
]]

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n or 0
end

local function once()
  local base = os.tmpname()
  os.remove(base)
  local fifo, count = base .. ".fifo", base .. ".count"
  assert(os.execute("mkfifo '" .. fifo .. "'"), "mkfifo failed")
  -- Held open read+write (never blocks): the FIFO's only writer until release.
  local holder = assert(io.open(fifo, "r+"))
  collectgarbage()
  collectgarbage()
  local rss0, hwm0 = B.proc_status_kb("VmRSS"), B.proc_status_kb("VmHWM")

  local threads = {}
  for i = 1, THREADS do
    local t = llthreads.new(CHILD, fifo, count)
    local ok, err = t:start()
    if not ok then
      holder:close()
      error("start of thread " .. i .. " failed: " .. tostring(err))
    end
    threads[i] = t
  end
  -- Wait until every child has run its code up to the blocking read.
  local waited = 0
  while file_size(count) < THREADS do
    os.execute("sleep 0.05")
    waited = waited + 0.05
    if waited > 120 then
      holder:close()
      error("only " .. file_size(count) .. " of " .. THREADS .. " threads started")
    end
  end
  os.execute("sleep 0.2") -- let the last ones settle into read()
  local rss1, hwm1 = B.proc_status_kb("VmRSS"), B.proc_status_kb("VmHWM")

  holder:close() -- EOF for every reader
  for i = 1, THREADS do
    local ok, v = threads[i]:join()
    assert(ok and v == true, "thread " .. i .. " failed: " .. tostring(v))
  end
  os.remove(fifo)
  os.remove(count)
  print(string.format("rss_kib_per_thread=%.3f hwm_kib_per_thread=%.3f rss_base_kib=%d rss_alive_kib=%d",
    (rss1 - rss0) / THREADS, (hwm1 - hwm0) / THREADS, rss0, rss1))
end

if arg and arg[1] == "once" then
  once()
  return
end

B.header("memory")
local interp, script = B.interpreter(), B.script_path()
local rss, hwm, bases = {}, {}, {}
for r = 1, B.runs do
  local p = assert(io.popen("'" .. interp .. "' '" .. script .. "' once", "r"))
  local out = p:read("*a")
  p:close()
  local a, b, c = out:match("rss_kib_per_thread=([%d.%-]+) hwm_kib_per_thread=([%d.%-]+) rss_base_kib=(%d+)")
  if not a then error("memory run failed: " .. out) end
  rss[r], hwm[r], bases[r] = tonumber(a), tonumber(b), tonumber(c)
end
B.report("mem_rss_kib_per_thread", rss, "threads=" .. THREADS)
B.report("mem_hwm_kib_per_thread", hwm, "threads=" .. THREADS)
B.report("mem_baseline_rss_kib", bases)
