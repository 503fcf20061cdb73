-- A detached worker: start(true) lets the thread run on its own. It cannot be joined,
-- so it reports through the outside world, here by writing a file that the parent
-- waits for (with a deadline).
--
--   tools/run-example.sh examples/detached_worker.lua [flavour]
local llthreads = require "llthreads"

local path = arg and arg[1] or os.tmpname()
os.remove(path) -- os.tmpname may create the file; the worker's file must be new

local worker = llthreads.new([[
   local path = ...
   os.execute("sleep 0.1") -- some work
   -- Write under another name, then rename: the parent never reads half a file.
   local f = assert(io.open(path .. ".part", "w"))
   f:write("report from the detached worker\n")
   f:close()
   assert(os.rename(path .. ".part", path))
]], path)

assert(worker:start(true)) -- detached; joinable defaults to false
print(("started: detached() = %s, joinable() = %s"):format(tostring(worker:detached()),
   tostring(worker:joinable())))
local ok, err = worker:join()
assert(ok == nil, "a detached thread cannot be joined")
print("join() on it: nil, " .. err)

-- Poll for the file, with a deadline of a few seconds.
local deadline = os.time() + 10
local report
repeat
   local f = io.open(path, "r")
   if f then
      report = f:read("*l")
      f:close()
   else
      os.execute("sleep 0.05")
   end
until report or os.time() > deadline
assert(report, "the worker wrote no file within 10 s: " .. path)
os.remove(path)
print("the worker wrote: " .. report)
print("OK: the detached worker wrote its file and the parent found it")
