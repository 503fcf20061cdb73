-- A per-thread logger: each Lua state has its own logger, set with set_logger in that
-- state. An error that ends a thread is passed to its logger as "Error from thread: ...".
-- Here the child's logger appends to a file named by the parent, and the parent reads
-- the file after join.
--
--   tools/run-example.sh examples/logger.lua [flavour]
local llthreads = require "llthreads"

local log_path = arg and arg[1] or os.tmpname()
os.remove(log_path)

local thread = llthreads.new([[
   local log_path = ...
   local llthreads = require "llthreads"
   -- This logger belongs to the child's Lua state only.
   llthreads.set_logger(function(msg)
      local f = assert(io.open(log_path, "a"))
      f:write("[child logger] ", msg, "\n")
      f:close()
   end)
   local function parse(line) error("cannot parse: " .. line) end
   parse("1 + ")  -- the error ends the thread
]], log_path)

local ok, err = thread:start():join()
assert(ok == false, "the child was expected to fail")
print("join() returned false, \"" .. (err:match("^[^\n]*")) .. "\" (and a traceback)")
assert(err:find("Error from child thread: ", 1, true), err)

local f = assert(io.open(log_path, "r"), "the child's logger wrote no file")
local logged = f:read("*a")
f:close()
os.remove(log_path)
assert(logged:find("[child logger] Error from thread: ", 1, true), logged)
assert(logged:find("cannot parse: 1 + ", 1, true), logged)
print("the child's logger wrote: " .. (logged:match("^[^\n]*")))
print("OK: the child's error reached the logger set in the child state")
