-- Defect (PUC): an interrupt meant for a thread is delivered into ANOTHER Lua
-- state's code. `join` of an attached child closes the child's state on the
-- joining thread; that state's finalizers run there, and the coroutine.resume they
-- call is the library's (installed in every child state). It calls
-- interrupt::switch_to, which consults the joining thread's interruptor (a
-- thread-local) and moves the joiner's hook onto the closing state's coroutine.
-- The request raises there (swallowed with the finalizer), "once" is consumed,
-- and the thread that was asked to stop runs on.
-- README: "interrupt() reaches the child's code"; "fires in the chunk or in
-- whichever coroutine runs".
-- Flavours: 5.1 5.2 5.3 5.4 (LuaJIT has no coroutine switch: not affected).
-- Observed: parent's join: true  not interrupted  true  1
--           grandchild finalizer's coroutine: false llthreads: thread was interrupted
local llthreads = require "llthreads"
local t = llthreads.new([[
  local llthreads = require "llthreads"
  local g = llthreads.new([=[
    local mk = newproxy and function(f) local u = newproxy(true); getmetatable(u).__gc = f; return u end
      or function(f) return setmetatable({}, { __gc = f }) end
    KEEP = mk(function()
      -- runs on the JOINING thread, while join closes this state
      local co = coroutine.create(function() local t0 = os.clock() while os.clock() - t0 < 1 do end end)
      local ok, e = coroutine.resume(co)
      local f = io.open("/tmp/llthreads-attack-steal.out", "w"); f:write("grandchild finalizer's coroutine: ", tostring(ok), " ", tostring(e)); f:close()
    end)
    return 1
  ]=]):start()
  local ok, v = g:join()          -- closes g's state here, running its finalizer
  -- the interrupt sent meanwhile should be delivered here, in this chunk
  local t0 = os.clock() while os.clock() - t0 < 1 do end
  return "not interrupted", ok, v
]]):start()
local t0 = os.clock() while os.clock() - t0 < 0.4 do end
t:interrupt()
print("parent's join:", t:join(5000))
local f = io.open("/tmp/llthreads-attack-steal.out"); print(f and f:read("*a")); if f then f:close() end
