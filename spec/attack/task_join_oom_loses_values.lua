-- Defect: `task:join()` in a memory-limited state took the task's values off the
-- task before copying them in; when the copy ran out of memory they were dropped,
-- and the next join said "Can't join a task that has already been joined." (a
-- channel's receive keeps a message its receiver cannot hold; a task now does the
-- same with its values).
--
-- How: a limited child holds 3.2 MB of live strings under a 4 MB limit and joins a
-- task that returned a 900 kB string: the copy cannot fit, whatever the collector
-- does. Then it lets the strings go and joins again.
--
-- Flavours: PUC Lua. LuaJIT has no memory limit.
local llthreads = require "llthreads"
if jit then print("not applicable on LuaJIT") return end
llthreads.set_memory_limit(4000000)
local t = llthreads.new([[
  local llthreads = require "llthreads"
  local pool = llthreads.pool{ size = 1 }
  local task = pool:submit(function() return ("x"):rep(900000), "second" end)
  while task:alive() do llthreads.sleep(1) end
  local hog = {}
  for i = 1, 32 do hog[i] = ("y"):rep(100000 + i) end
  local ok, err = pcall(task.join, task)
  local first = tostring(ok) .. " " .. tostring(err)
  hog = nil
  collectgarbage(); collectgarbage()
  local a, b, c = task:join()
  pool:close()
  return first, tostring(a) .. " " .. (type(b) == "string" and #b or tostring(b)) .. " " .. tostring(c)
]])
t:start()
local ok, first, second = t:join()
print("child:", ok)
print("first join:", first)
print("second join:", second)
