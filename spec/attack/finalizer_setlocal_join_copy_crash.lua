-- Defect: a finalizer that runs in the parent while `join` copies a child's results
-- into it (a GC step triggered by the copy's own allocations in the parent) can
-- rewrite slots of the library's own C frame with debug.setlocal; the copier then
-- calls lua_rawget/lua_rawset on a non-table and the process dies.
-- Flavours: 5.1 5.2 5.3 5.4 LuaJIT (all).  Expected per README: never a crash.
-- Observed: SIGSEGV (5.2: SIGBUS) in lua_rawget / lua_rawset called from
--   copy::Copier::table (src/copy.rs:309 rawget of the cache, :319 rawset).
-- Slot 1 of the trampoline's frame (level 2 seen from the finalizer) is the copy's
-- cache table (copy_values' placeholder); replacing it with 42 is enough.
local llthreads = require "llthreads"
local t = llthreads.new([[
  local r = {}
  for i = 1, 20000 do r[i] = { i, tostring(i) } end
  return r
]]):start()
local join = getmetatable(t).__index.join
local hit
local newproxy = newproxy
local function mk()   -- an endless chain of finalizers, so some GC step calls one
  local fin = function()
    if hit then return end
    local f3 = debug.getinfo(3, "f")       -- 1: this finalizer, 2: our trampoline, 3: join
    if f3 and f3.func == join then
      hit = { debug.setlocal(2, 1, 42) }
      return
    end
    mk()
  end
  if newproxy then
    getmetatable(newproxy(true)).__gc = fin  -- 5.1 / LuaJIT: only userdata finalizers
  else
    setmetatable({}, { __gc = fin })
  end
end
mk()
-- 5.5 replaced "setpause" by "param", "pause".
if _VERSION == "Lua 5.5" then collectgarbage("param", "pause", 10) else collectgarbage("setpause", 10) end
local ok, r = t:join()
print("survived:", ok, type(r), hit and hit[1])
