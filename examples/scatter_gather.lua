-- Scatter-gather: split one job into parts, run the parts on OS threads at the same
-- time, wait for all of them with join, and combine the results.
-- The job: the sum of squares 1^2 + 2^2 + ... + N^2, one range of numbers per thread.
--
--   tools/run-example.sh examples/scatter_gather.lua [5.1|5.2|5.3|5.4|5.5|jit]
local llthreads = require "llthreads.ex" -- .ex runs a Lua function as the thread body

local N, TASKS = 200000, 4

-- The thread body. It runs in a fresh Lua state, so it cannot see this file's
-- locals (no upvalues): everything it needs comes in as arguments.
local function sum_of_squares(first, last)
   local s = 0
   for i = first, last do
      s = s + i * i
   end
   return s, first, last
end

-- Scatter: start one thread per range. They all run at once.
local threads = {}
local chunk = math.ceil(N / TASKS)
for k = 1, TASKS do
   local first, last = (k - 1) * chunk + 1, math.min(k * chunk, N)
   threads[k] = llthreads.new(sum_of_squares, first, last):start()
   print(("started task %d: %d..%d"):format(k, first, last))
end

-- Gather: join waits for each thread and gives back what its function returned.
local total = 0
for k, thread in ipairs(threads) do
   local ok, partial, first, last = thread:join()
   assert(ok, partial) -- on an error: false, "Error from child thread: ..."
   print(("task %d (%d..%d) returned %.0f"):format(k, first, last, partial))
   total = total + partial
end

-- Check against the same sum done here, one number after the other.
local expected = sum_of_squares(1, N)
assert(total == expected, ("parallel %.0f ~= sequential %.0f"):format(total, expected))
print(("OK: %d tasks, sum of squares 1..%d = %.0f, as computed sequentially"):format(TASKS, N, total))
