-- Copy round trips: a value passed as the argument of new(), returned by the child
-- ("return ..."), and got back by join(). Each figure is the WHOLE round trip in ms
-- (new + start + join, i.e. create the child state, copy in, run, copy out, close
-- the state, plus the thread start). The cost of the same round trip with no
-- argument (copy_baseline_ms, measured in this script) is also printed, and the
-- `net=` field on each line is median minus that baseline: the copying alone.
--   copy_array100k_ms   {1, 2, ..., 100000} (integers on 5.3+)
--   copy_strkeys10k_ms  {k1 = 1, ..., k10000 = 10000}
--   copy_nested11k_ms   depth 4, fan-out 10: 1+10+100+1000+10000 = 11111 tables
--   copy_string16m_ms   a 16 MiB string
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads

local CODE = "return ..."

local function roundtrip(v)
  local ok, r = llthreads.new(CODE, v):start():join()
  if not ok then error("round trip failed: " .. tostring(r)) end
  return r
end

local function make_array(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

local function make_strkeys(n)
  local t = {}
  for i = 1, n do t["k" .. i] = i end
  return t
end

local function make_nested(depth, fan)
  if depth == 0 then return {} end
  local t = {}
  for i = 1, fan do t[i] = make_nested(depth - 1, fan) end
  return t
end

local function count_tables(t)
  local n = 1
  for _, v in pairs(t) do
    if type(v) == "table" then n = n + count_tables(v) end
  end
  return n
end

local cases = {
  { "copy_array100k_ms", function() return make_array(100000) end,
    function(r) return #r == 100000 and r[100000] == 100000 end },
  { "copy_strkeys10k_ms", function() return make_strkeys(10000) end,
    function(r) local n = 0; for _ in pairs(r) do n = n + 1 end; return n == 10000 and r.k10000 == 10000 end },
  { "copy_nested11k_ms", function() return make_nested(4, 10) end,
    function(r) return count_tables(r) == 11111 end },
  { "copy_string16m_ms", function() return string.rep("x", 16 * 1024 * 1024) end,
    function(r) return #r == 16 * 1024 * 1024 end },
}

B.header("copy")

-- Measures `n` round trips of `v` per batch; returns ms per round trip for each run.
local function measure(v)
  collectgarbage()
  local n = B.calibrate(function(k) for _ = 1, k do roundtrip(v) end end, 1)
  local xs = {}
  for r = 1, B.runs do
    collectgarbage()
    xs[r] = B.time_ms(function() for _ = 1, n do roundtrip(v) end end) / n
  end
  return xs, n
end

local base_xs, base_n = measure(nil)
local base = B.report("copy_baseline_ms", base_xs, "per_batch=" .. base_n .. " what=round_trip_without_argument").median

local only = os.getenv("BENCH_COPY_ONLY")
for _, case in ipairs(cases) do
  local name, make, check = case[1], case[2], case[3]
  if not only or name:find(only, 1, true) then
    local v = make()
    assert(check(roundtrip(v)), name .. ": the copy came back wrong")
    local xs, n = measure(v)
    local st = B.stats(xs)
    B.report(name, xs, string.format("per_batch=%d net=%s what=whole_round_trip", n, B.fmt(st.median - base)))
    v = nil
    collectgarbage()
  end
end
