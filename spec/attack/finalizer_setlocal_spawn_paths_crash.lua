-- Defect: spawn reads the creator's package.path and package.cpath raw, holding
-- package.loaded and then package in stack slots of its C frame across pushes of
-- their field names. On 5.1 and LuaJIT every push may step the GC (the pause is 0
-- here), a finalizer puts 42 in the slot with debug.setlocal, and spawn called
-- lua_rawget on it. (On 5.2+ pushing those short, interned names allocates nothing,
-- so no finalizer can run there: the script then only shows spawn working.)
-- Flavours: 5.1 LuaJIT.  Expected: never a crash; the threads run.
-- Observed: SIGSEGV in lua_rawget from api_spawn::push_paths.
local llthreads = require "llthreads"
pcall(collectgarbage, "incremental")
-- 5.5 replaced "setpause" and "setstepmul" by "param".
if _VERSION == "Lua 5.5" then
  collectgarbage("param", "pause", 0)
  collectgarbage("param", "stepmul", 1000)
else
  collectgarbage("setpause", 0)
  collectgarbage("setstepmul", 1000)
end
local function tamper()
  for level = 2, 40 do
    local info = debug.getinfo(level, "S")
    if not info then break end
    if info.what == "C" then
      local top = 0
      while debug.getlocal(level, top + 1) do top = top + 1 end
      local v = top >= 1 and select(2, debug.getlocal(level, top))
      if v == package.loaded or v == package then debug.setlocal(level, top, 42) end
    end
  end
end
local arm
if newproxy then
  arm = function() getmetatable(newproxy(true)).__gc = function() tamper(); arm() end end
else
  local mt = {}
  mt.__gc = function() tamper(); setmetatable({}, mt) end
  arm = function() setmetatable({}, mt) end
end
local ran = 0
for _ = 1, 20 do
  for _ = 1, 20 do arm() end   -- twenty chains: one of them fires mid-spawn
  local ok, t = pcall(llthreads.spawn, function() return "ran" end)
  if ok and t then
    local _, r = t:join()
    if r == "ran" then ran = ran + 1 end
  end
end
print("threads that ran: " .. ran)
