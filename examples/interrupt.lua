-- Interrupting a runaway loop. interrupt() installs a debug hook in the child's state
-- that raises llthreads.interrupted_error there; join then gives false and a message.
--
-- The child sets no logger, so its error is also printed on stderr ("Error from
-- thread: ..." and a traceback), as llthreads2 does.
--
-- LuaJIT: debug hooks do not fire inside JIT-compiled loops. This loop calls a C
-- function (os.clock), which LuaJIT does not compile, so the hook gets its chance.
--
--   tools/run-example.sh examples/interrupt.lua [flavour]
local llthreads = require "llthreads"

local thread = llthreads.new([[
   local n = 0
   while true do -- runs forever unless interrupted
      n = n + 1
      os.clock()
   end
]]):start()

-- Let it spin for about 100 ms: join(100) waits 100 ms and reports "timeout".
local ok, err = thread:join(100)
assert(ok == nil and err == "timeout", "the loop was expected to still run")
print("after 100 ms the loop still runs: join(100) gave nil, " .. err)

thread:interrupt()
print("interrupt() called")

-- Bounded wait, so a failed interrupt shows up as an error instead of a hang.
local ok2, msg = thread:join(5000)
if ok2 == nil and msg == "timeout" then
   io.stderr:write("the thread did not stop within 5 s of interrupt()\n")
   os.exit(1) -- exits without waiting for the still running thread
end
assert(ok2 == false, "join after interrupt: " .. tostring(ok2))
assert(msg:find(llthreads.interrupted_error, 1, true), msg)
print("join() gave false, \"" .. msg:match("^[^\n]*") .. "\"")
print("OK: the runaway loop was stopped with " .. llthreads.interrupted_error)
