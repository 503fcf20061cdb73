-- Pipeline: a producer thread feeds a pool of worker threads through one bounded
-- channel; the workers hand their results back through another channel, which this
-- thread gathers while they work. Shutdown is by close: the producer closes the jobs
-- channel after its last job, each worker stops once that channel is drained, and no
-- job is lost or done twice.
-- The work: count the primes up to some number, by trial division (slow on purpose,
-- so that the workers really run side by side).
--
--   tools/run-example.sh examples/pipeline.lua [5.1|5.2|5.3|5.4|5.5|jit]
local llthreads = require "llthreads"

local JOBS, WORKERS = 200, 4

-- Bounded: the producer gets at most 8 jobs ahead of the workers (its send waits
-- while the channel is full), so the queue stays small however many jobs there are.
local jobs = llthreads.channel(8)
-- Unbounded: a worker never waits to hand in a result.
local results = llthreads.channel()

-- Each thread runs in a fresh Lua state and sees none of this file's locals: the
-- channels come in as arguments (every copy of a channel is the same channel).
local producer = llthreads.new([[
   local jobs, n = ...
   for i = 1, n do
      jobs:send(1000 + 10 * i)
   end
   jobs:close() -- no more jobs: the workers drain what is queued, then stop
]], jobs, JOBS):start()

local COUNT_PRIMES = [[
   local function count_primes(n)
      local count = 0
      for k = 2, n do
         local prime = true
         for d = 2, math.floor(math.sqrt(k)) do
            if k % d == 0 then prime = false break end
         end
         if prime then count = count + 1 end
      end
      return count
   end
]]

local workers = {}
for w = 1, WORKERS do
   workers[w] = llthreads.new(COUNT_PRIMES .. [[
      local jobs, results, id = ...
      local done = 0
      while true do
         local n = jobs:receive() -- nil, "closed" once closed and drained
         if n == nil then break end
         results:send({ n = n, primes = count_primes(n), worker = id })
         done = done + 1
      end
      return done
   ]], jobs, results, w):start()
end

-- Gather: select waits for whichever comes first, a result or a worker's end. It
-- looks at the list in order, so results are taken before a worker's end is noticed.
local got, per_worker = {}, {}
local waiting_on = { results }
for _, worker in ipairs(workers) do waiting_on[#waiting_on + 1] = worker end
local function take(r)
   assert(got[r.n] == nil, "result for " .. r.n .. " gathered twice")
   got[r.n] = r.primes
   per_worker[r.worker] = (per_worker[r.worker] or 0) + 1
end
while #waiting_on > 1 do
   local which, value = llthreads.select(waiting_on)
   if which == results then
      take(value)
   else
      -- a worker ended: join will not block; stop waiting on it
      local ok, done = which:join()
      assert(ok, done)
      for i = #waiting_on, 2, -1 do
         if waiting_on[i] == which then table.remove(waiting_on, i) end
      end
   end
end
assert(producer:join())

-- Every worker has ended, so nothing more will be sent: close, then drain what the
-- last workers sent after our last look.
results:close()
while true do
   local r = results:receive() -- nil, "closed" once drained
   if r == nil then break end
   take(r)
end

local count_primes = assert((loadstring or load)(COUNT_PRIMES .. " return count_primes"))()
for i = 1, JOBS do
   local n = 1000 + 10 * i
   assert(got[n] == count_primes(n), "wrong or missing result for " .. n)
end
local shares = {}
for w = 1, WORKERS do shares[w] = ("worker %d: %d"):format(w, per_worker[w] or 0) end
print(table.concat(shares, ", "))
print(("OK: %d jobs through %d workers, every result gathered once, all threads ended"):format(JOBS, WORKERS))
