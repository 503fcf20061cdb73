-- Offloading CPU work to a pool of warm Lua states: a loop hands each request's
-- heavy part (here: counting primes in a range) to llthreads.pool, goes on with the
-- next request, and gathers the results with select as they finish. The workers'
-- states are made once; `init` prepares them (a helper every task uses).
--
--   tools/run-example.sh examples/pool_offload.lua [5.1|5.2|5.3|5.4|jit]
local llthreads = require "llthreads"

local pool = llthreads.pool{
   size = 2,
   init = function()
      -- Runs once per worker: tasks find `is_prime` in the worker's globals.
      function is_prime(n)
         if n < 2 then return false end
         for d = 2, math.floor(math.sqrt(n)) do
            if n % d == 0 then return false end
         end
         return true
      end
   end,
}

local function count_primes(first, last)
   local n = 0
   for i = first, last do
      if is_prime(i) then n = n + 1 end
   end
   return n, first, last
end

-- "Requests": ranges to scan. Each becomes a task at once; the loop does not wait.
local pending = {}
for k = 0, 7 do
   pending[#pending + 1] = pool:submit(count_primes, k * 25000 + 1, (k + 1) * 25000)
end
print(("submitted %d tasks to a pool of %d"):format(#pending, pool:size()))

-- Gather in the order they finish.
local total, done = 0, 0
while #pending > 0 do
   local task = llthreads.select(pending, 10000)
   assert(task, "no task finished within 10 s")
   for i, t in ipairs(pending) do
      if t == task then table.remove(pending, i) break end
   end
   local ok, n, first, last = task:join()
   assert(ok, n)
   print(("%6d..%-6d %d primes"):format(first, last, n))
   total, done = total + n, done + 1
end

assert(pool:close())
assert(total == 17984, "expected 17984 primes below 200000, got " .. total)
print(("OK: %d tasks on a pool of warm states found %d primes below 200000"):format(done, total))
