-- Defect: a C function copied from one state to another keeps no hold on the
-- shared library its code lives in. A child that `require`s a C module (here lfs,
-- installed with busted) and returns one of its functions hands the parent a bare
-- pointer; `join` then closes the child state, whose package library dlclose()s
-- the module (the parent never loaded it), and calling the copied function jumps
-- into unmapped memory. No debug library needed.
-- The same happens the other way: a detached child calling a C function of a
-- module that only the parent loaded, after the parent's state closed.
-- README: "C function without upvalues: copied as the same C function"; "never a
-- crash". (The library pins itself with -z nodelete; other modules are not pinned.)
-- Flavours: 5.1 5.2 5.3 5.4 LuaJIT. Observed: SIGSEGV at the call of `f`.
local llthreads = require "llthreads"
local ok, f = llthreads.new([[
  return require("lfs").currentdir
]]):start():join()
io.stderr:write("join gave: ", tostring(ok), " ", tostring(f), "\n")
print(pcall(f))
