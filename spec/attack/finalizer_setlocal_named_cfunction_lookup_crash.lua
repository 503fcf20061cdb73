-- Defect: a C function that travels by name (a C closure, here coroutine.wrap's) is
-- looked up in the receiving state's package.loaded with the loaded table held in a
-- stack slot of the library's C frame. Pushing the module's name allocates (a long
-- string on 5.2+, any push on 5.1/LuaJIT may step the GC), a finalizer runs and puts
-- 42 in that slot with debug.setlocal; the copier then called lua_rawget on it.
-- Flavours: 5.1 5.2 5.3 5.4 LuaJIT (all).  Expected: never a crash; join reports an
-- error ("a copy in progress was changed by Lua code", or the name not loaded).
-- Observed: SIGSEGV in lua_rawget from copy::push_named (and, on 5.1/LuaJIT, from
--   copy::c_function_names).
local llthreads = require "llthreads"
local LONG = string.rep("m", 60)   -- longer than 40 bytes: never interned on 5.2+
pcall(collectgarbage, "incremental")
-- Every allocation check may run a whole GC step (5.5 replaced "setpause" and
-- "setstepmul" by "param"); stepmul 0: a whole cycle per step (5.1, LuaJIT).
if _VERSION == "Lua 5.5" then
  collectgarbage("param", "pause", 0)
  collectgarbage("param", "stepmul", 1000)
else
  collectgarbage("setpause", 0)
  collectgarbage("setstepmul", newproxy and 0 or 1000)
end
local fired = 0
local function tamper()
  for level = 2, 40 do
    local info = debug.getinfo(level, "S")
    if not info then break end
    if info.what == "C" then
      local top = 0
      while debug.getlocal(level, top + 1) do top = top + 1 end
      local v = top >= 1 and select(2, debug.getlocal(level, top))
      if v == package.loaded then
        debug.setlocal(level, top, 42)
        fired = fired + 1
      elseif v == LONG and select(2, debug.getlocal(level, top - 1)) == package.loaded then
        debug.setlocal(level, top - 1, 42)
        fired = fired + 1
      end
    end
  end
end
local arm   -- one pending finalizer at all times: each one arms the next
if newproxy then
  arm = function() getmetatable(newproxy(true)).__gc = function() tamper(); arm() end end
else
  local mt = {}
  mt.__gc = function() tamper(); setmetatable({}, mt) end
  arm = function() setmetatable({}, mt) end
end
local seen = {}
for _ = 1, 20 do
  local t = llthreads.spawn({ paths = false }, function(name)
    package.loaded[name] = { w = coroutine.wrap(function() end) }
    local w = package.loaded[name].w
    return function() return w end
  end, LONG)
  arm()
  local ok, a, b = pcall(t.join, t)
  seen[tostring(ok) .. " " .. tostring(a) .. " " .. tostring(b)] = true
end
for k in pairs(seen) do print(k) end
print("finalizer fired: " .. (fired > 0 and "yes" or "no"))
