-- Defect: an interrupt that arrives while the child's own debug hook is running is
-- lost when that hook calls debug.sethook (a profiler re-arming itself): the signal
-- handler installs the interrupt hook (saving the user's), the user's hook then
-- replaces it, and nothing re-installs it; interrupt(true) sent again meets the
-- same fate. README: "interrupt() reaches the child's code wherever it runs".
-- Flavours: 5.1 5.2 5.3 5.4 LuaJIT. Observed: both joins give `nil timeout`
-- (expected: false, "Error from child thread: llthreads: thread was interrupted").
local llthreads = require "llthreads"
local t = llthreads.new([[
  if jit then jit.off() end
  local function h()
    local x = 0
    for i = 1, 20000 do x = x + i end      -- most of the time is spent in the hook
    debug.sethook(h, "", 100)              -- and it re-arms itself
  end
  debug.sethook(h, "", 100)
  local x = 0
  while true do x = x + 1 end
]]):start()
local t0 = os.clock() while os.clock() - t0 < 0.3 do end
t:interrupt(true)
print("join after interrupt(true):", t:join(3000))
t:interrupt(true)
print("join after a second interrupt(true):", t:join(3000))
io.stdout:flush()
os.exit(0) -- the attached thread never ends; do not wait for it at exit
