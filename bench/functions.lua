-- Issue 11's two speed targets, each measured side by side (A B A B ... in one run):
--   spawn_vs_new     spawn(fn) of a small function with three upvalues, joined, against
--                    new(source):start():join() of the same code with the values as
--                    arguments: µs per thread, and the ratio of the medians (target
--                    ≤ 1.1)
--   upvalue_vs_arg   a thread whose function has an upvalue table of 100k numbers,
--                    against new(source, table) passing that table as an argument:
--                    µs per thread, and the ratio (target 0.9–1.1)
-- Rounds: BENCH_RUNS (default 7); threads per batch: BENCH_FN_N (default 400) and
-- BENCH_FN_BIG_N (default 40).
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads

local N = B.getenv_number("BENCH_FN_N", 400)
local BIG_N = B.getenv_number("BENCH_FN_BIG_N", 40)

local a, b, name = 20, 22, "sum"
local function small()
  return name, a + b
end
local SMALL_SOURCE = "local name, a, b = ... return name, a + b"

local function spawn_small(n)
  for _ = 1, n do
    local ok, _, v = llthreads.spawn(small):join()
    if not ok or v ~= 42 then error("spawn gave " .. tostring(v)) end
  end
end

local function new_small(n)
  for _ = 1, n do
    local ok, _, v = llthreads.new(SMALL_SOURCE, name, a, b):start():join()
    if not ok or v ~= 42 then error("new gave " .. tostring(v)) end
  end
end

local big = {}
for i = 1, 100000 do big[i] = i * 0.5 end
local function uses_big()
  return #big
end
local BIG_SOURCE = "local big = ... return #big"

local function spawn_big(n)
  for _ = 1, n do
    local ok, v = llthreads.spawn(uses_big):join()
    if not ok or v ~= 100000 then error("spawn gave " .. tostring(v)) end
  end
end

local function new_big(n)
  for _ = 1, n do
    local ok, v = llthreads.new(BIG_SOURCE, big):start():join()
    if not ok or v ~= 100000 then error("new gave " .. tostring(v)) end
  end
end

B.header("functions")
B.side_by_side("spawn_vs_new", "a", spawn_small, "b", new_small, N)
B.side_by_side("upvalue_vs_arg", "a", spawn_big, "b", new_big, BIG_N)
