-- Closures on threads: llthreads.spawn runs a Lua function on a new OS thread, with
-- its upvalues copied into the thread's own Lua state (by value: the thread works
-- on copies). Here a word counter is configured by locals of this file, the work is
-- split between threads, and each thread sends its partial counts back through a
-- channel as it goes.
--
--   tools/run-example.sh examples/spawn_closures.lua [5.1|5.2|5.3|5.4|jit]
local llthreads = require "llthreads"

local text = {
   "the quick brown fox jumps over the lazy dog",
   "the dog sleeps and the fox runs",
   "a lazy afternoon for the quick and the lazy",
   "over and over the fox returns",
}
local ignored = { the = true, a = true, ["and"] = true } -- an upvalue: a table
local lower = string.lower -- an upvalue: a C function

-- A local function that the thread body calls: copied along with the body.
local function words(line)
   local found = {}
   for word in line:gmatch("%a+") do
      local w = lower(word)
      if not ignored[w] then found[#found + 1] = w end
   end
   return found
end

local results = llthreads.channel()

-- One thread per line, each named (as `ps -L` and gdb show it).
local threads = {}
for i, line in ipairs(text) do
   threads[i] = llthreads.spawn({ name = "count-" .. i }, function()
      local counts = {}
      for _, w in ipairs(words(line)) do counts[w] = (counts[w] or 0) + 1 end
      results:send(counts) -- `results` is the same channel in every thread
      return #words(line)
   end)
end

-- Gather: one message per thread, then join each for its return value.
local total = {}
for _ = 1, #text do
   for w, n in pairs(results:receive()) do total[w] = (total[w] or 0) + n end
end
local kept = 0
for i, t in ipairs(threads) do
   local ok, n = t:join()
   assert(ok, n)
   kept = kept + n
end

local sorted = {}
for w, n in pairs(total) do sorted[#sorted + 1] = { w, n } end
table.sort(sorted, function(a, b) return a[2] > b[2] or (a[2] == b[2] and a[1] < b[1]) end)
for i = 1, 4 do print(("%-6s %d"):format(sorted[i][1], sorted[i][2])) end
print(("%d words counted by %d threads"):format(kept, #threads))
assert(total.fox == 3 and total.lazy == 3 and kept == 20, "unexpected counts")

-- A function made in a thread comes back from join, upvalues and all.
local _, scale = llthreads.spawn(function()
   local factor = 10
   return function(x) return x * factor end
end):join()
assert(scale(4.2) == 42, "the function from join computed " .. tostring(scale(4.2)))
print(("OK: %d words counted by %d named threads from closures; a function came back from join (scale(4.2) = %g)")
   :format(kept, #threads, scale(4.2)))
