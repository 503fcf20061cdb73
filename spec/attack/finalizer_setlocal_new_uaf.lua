-- Defect: llthreads.new keeps a raw pointer to the thread object's userdata block
-- (api.rs `ud`, `slot`) across a Lua allocation in the caller's state
-- (lua_newuserdata's own GC step, 5.3/5.4). A finalizer run by that step replaces
-- the userdata in new's frame with a number (debug.setlocal on the C frame):
--  * 5.3: the finalizer then collects, the userdata is freed and its block reused,
--    and `new` writes the Slot and the Thread pointer into freed memory
--    (api.rs:342 `ud.write`, api.rs:355 `slot.write`; valgrind: "Invalid write of
--    size 8 ... llthreads::api::new (api.rs:342)"). Observed: SIGSEGV later
--    (here in lua_pushlstring via luaL_pushresult).
--  * 5.4 (collectgarbage is a no-op inside a finalizer): `new` returns the number
--    42, lua_setmetatable(l, -2) has given ALL NUMBERS the thread metatable (so
--    tostring(1) raises "bad argument #1 to '?' (LLThread expected, got number)"),
--    and the built Thread, with its child state, leaks.
-- 5.1/5.2/LuaJIT: the GC step runs before the userdata is pushed: not reachable.
local llthreads = require "llthreads"
local new = llthreads.new
local hit, grab
local function mk()   -- an endless chain of finalizers
  local fin = function()
    if hit then return end
    local f2 = debug.getinfo(2, "f")
    if f2 and f2.func == new then
      hit = debug.setlocal(2, 2, 42)        -- new's userdata slot (after arg 1) := 42
      collectgarbage()                      -- 5.3: the userdata is freed...
      grab = {}
      for i = 1, 64 do grab[i] = {} end     -- ...and its block reused by a table
      return
    end
    mk()
  end
  if newproxy then getmetatable(newproxy(true)).__gc = fin
  else setmetatable({}, { __gc = fin }) end
end
mk()
-- 5.5 replaced "setpause" by "param", "pause".
if _VERSION == "Lua 5.5" then collectgarbage("param", "pause", 10) else collectgarbage("setpause", 10) end
local keep = {}
for i = 1, 20000 do
  local r = new("return 1")
  if hit then
    io.stderr:write(("finalizer ran inside new at call %d; new returned a %s; numbers have a metatable: %s\n")
      :format(i, type(r), tostring(getmetatable(0) ~= nil)))
    break
  end
  keep[#keep + 1] = {}
  if i % 100 == 0 then keep = {} end
end
-- Where the finalizer never got inside new (5.1, 5.2, LuaJIT: the GC step comes
-- before the object exists), there is nothing to overwrite.
if grab then
  for i = 1, 64 do for j = 1, 100 do grab[i][j] = j; grab[i]["k" .. j] = j end end
end
collectgarbage()
io.stderr:write("survived\n")
