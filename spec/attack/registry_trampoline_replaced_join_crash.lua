-- Defect: on 5.1 and LuaJIT raw::push_trampoline takes registry[TRAMPOLINE_KEY] as
-- the trampoline whenever it is a function. Lua code can find that entry (the only
-- light-userdata key of the registry whose value is a function, once any protected
-- call has run in the state) and replace it with a Lua function. `protected` then
-- calls that function instead of the trampoline: the body never runs, the status
-- is LUA_OK, and copy::transfer reports `last - first + 1` values pushed that were
-- never pushed. l_join returns that many values from a stack that holds fewer, so
-- Lua reads below the C function's frame.
-- Flavours: 5.1, LuaJIT (5.2+ push the light C function each time).
-- Observed: SIGSEGV inside the interpreter right after `join` (300 results);
--   with 5 results join returns junk from the caller's frame (no `true` at all).
local llthreads = require "llthreads"
llthreads.new("return 0"):start():join()  -- a first join caches the trampoline here
local t = llthreads.new("local t = {} for i = 1, 300 do t[i] = i end return (table.unpack or unpack)(t)"):start()
local reg = debug.getregistry()
for k, v in pairs(reg) do
  if type(k) == "userdata" and type(v) == "function" then reg[k] = function() end end
end
local r = { t:join() }
print("join returned", #r, "values; first:", type(r[1]))
for i = 1, #r do local _ = tostring(r[i]) end
collectgarbage()
print("survived")
