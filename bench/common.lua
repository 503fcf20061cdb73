-- Shared helpers for the benchmark scripts: module loading, a wall clock, statistics
-- and output. Plain Lua (5.1-5.4, LuaJIT); uses only the llthreads API, so the same
-- scripts measure any llthreads2-compatible module (pick it with LUA_CPATH and the
-- BENCH_MODULE environment variable, default "llthreads").
local M = {}

M.module_name = os.getenv("BENCH_MODULE") or "llthreads"
-- M.llthreads is required on first use, so scripts that measure another module (the
-- peers in bench/peers/) can share these helpers without loading this one.
setmetatable(M, {
  __index = function(t, k)
    if k ~= "llthreads" then return nil end
    local m = require(t.module_name)
    rawset(t, "llthreads", m)
    return m
  end,
})

-- Number of measured runs (each run is one batch, or one fresh process for memory).
M.runs = tonumber(os.getenv("BENCH_RUNS") or "") or 7

-- Minimum length of a timed batch. The clock below costs ~1-2 ms per reading, so a
-- batch of >= 200 ms keeps that under 1 % (and it is measured and subtracted anyway).
M.min_batch_ms = tonumber(os.getenv("BENCH_MIN_BATCH_MS") or "") or 200

local function getenv_number(name, default)
  return tonumber(os.getenv(name) or "") or default
end
M.getenv_number = getenv_number

-- Wall clock in nanoseconds. Plain Lua has no portable high-resolution clock (os.clock
-- is process CPU time, which adds up all threads), so read it from date(1). One
-- reading costs a process spawn (~1 ms); batches are long enough that it does not
-- matter, and the measured cost of a reading is subtracted from every batch.
local function now_ns()
  local p = assert(io.popen("date +%s%N", "r"))
  local s = p:read("*l")
  p:close()
  local t = tonumber(s)
  assert(t and t > 1e17, "date +%s%N gave no nanoseconds: " .. tostring(s))
  return t
end
M.now_ns = now_ns

local overhead_ms
-- Cost of one clock reading as seen by a batch (median of several empty batches).
function M.clock_overhead_ms()
  if not overhead_ms then
    local xs = {}
    for i = 1, 9 do
      local a = now_ns()
      local b = now_ns()
      xs[i] = (b - a) / 1e6
    end
    overhead_ms = M.stats(xs).median
  end
  return overhead_ms
end

-- Times fn() (one batch) in milliseconds of wall time, clock cost subtracted.
function M.time_ms(fn)
  local oh = M.clock_overhead_ms()
  local a = now_ns()
  fn()
  local b = now_ns()
  local ms = (b - a) / 1e6 - oh
  if ms < 0 then ms = 0 end
  return ms
end

function M.stats(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  local n = #s
  local median
  if n == 0 then
    median = 0 / 0
  elseif n % 2 == 1 then
    median = s[(n + 1) / 2]
  else
    median = (s[n / 2] + s[n / 2 + 1]) / 2
  end
  return { median = median, min = s[1], max = s[n], n = n }
end

local function fmt(x)
  if x ~= x then return "nan" end
  local ax = math.abs(x)
  if ax >= 100 then return string.format("%.1f", x) end
  if ax >= 1 then return string.format("%.2f", x) end
  return string.format("%.3f", x)
end
M.fmt = fmt

-- Prints one result line: `name median=X min=Y max=Z runs=N [key=value ...]`.
function M.report(name, xs, extra)
  local st = M.stats(xs)
  local line = string.format("%s median=%s min=%s max=%s runs=%d",
    name, fmt(st.median), fmt(st.min), fmt(st.max), st.n)
  if extra then line = line .. " " .. extra end
  print(line)
  io.stdout:flush()
  return st
end

-- Two ways of doing the same thing, side by side: fa(n) and fb(n) each run n of
-- them; after a warm-up of a tenth, they take turns, one batch each per round (a full
-- collection before each). Reports <label>_<a>_us and <label>_<b>_us (µs per thing)
-- and <label>_ratio (a / b within each round).
function M.side_by_side(label, a, fa, b, fb, n)
  fa(math.max(1, math.floor(n / 10)))
  fb(math.max(1, math.floor(n / 10)))
  local xa, xb, ratios = {}, {}, {}
  for _ = 1, M.runs do
    collectgarbage()
    local ta = M.time_ms(function() fa(n) end) * 1000 / n
    collectgarbage()
    local tb = M.time_ms(function() fb(n) end) * 1000 / n
    xa[#xa + 1], xb[#xb + 1], ratios[#ratios + 1] = ta, tb, ta / tb
  end
  local sa = M.report(label .. "_" .. a .. "_us", xa)
  local sb = M.report(label .. "_" .. b .. "_us", xb)
  M.report(label .. "_ratio", ratios, ("median_ratio=%s"):format(fmt(sa.median / sb.median)))
end

function M.note(...)
  print("# " .. table.concat({ ... }, " "))
  io.stdout:flush()
end

function M.header(script)
  local ver = M.llthreads._VERSION or "?"
  local flavour = (type(jit) == "table" and jit.version) or _VERSION
  M.note(string.format("%s: module=%s version=%s lua=%s runs=%d min_batch_ms=%d clock_overhead_ms=%s",
    script, M.module_name, tostring(ver), flavour, M.runs, M.min_batch_ms,
    fmt(M.clock_overhead_ms())))
end

-- Chooses how many repetitions of `one` (called with the repetition count) make a
-- batch of at least min_batch_ms, starting from `start` and doubling.
function M.calibrate(one, start, min_ms)
  local n = start or 1
  min_ms = min_ms or M.min_batch_ms
  while true do
    local ms = M.time_ms(function() one(n) end)
    if ms >= min_ms or n >= 2 ^ 30 then return n, ms end
    local factor = ms > 0 and math.min(math.ceil(min_ms * 1.2 / ms), 16) or 16
    if factor < 2 then factor = 2 end
    n = n * factor
  end
end

-- Reads a field (kB) of /proc/self/status.
function M.proc_status_kb(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  local v = text:match(field .. ":%s*(%d+)%s*kB")
  return v and tonumber(v)
end

-- The interpreter running this script (for re-running a script in a fresh process).
function M.interpreter()
  local i, exe = -1, nil
  while arg and arg[i] do exe = arg[i]; i = i - 1 end
  return exe or "lua"
end

function M.script_path()
  return arg and arg[0] or "?"
end

return M
