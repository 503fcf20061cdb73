-- Defect: `thread:join()` in a memory-limited state marked the thread joined and
-- closed its state whatever became of the copy of the results; when the copy ran
-- out of memory they were gone, and the next join said "Can't join a thread that
-- has already been joined." (as with a task's values and a channel's message, the
-- thread now keeps them for a later join).
--
-- How: a limited child holds 3.2 MB of live strings under a 4 MB limit and joins a
-- grandchild that returned a 900 kB string: the copy cannot fit, whatever the
-- collector does. Then it lets the strings go and joins again.
--
-- Flavours: PUC Lua. LuaJIT has no memory limit.
local llthreads = require "llthreads"
if jit then print("not applicable on LuaJIT") return end
llthreads.set_memory_limit(4000000)
local t = llthreads.new([[
  local llthreads = require "llthreads"
  local g = llthreads.new("return ('x'):rep(900000), 'second'")
  g:start()
  while g:alive() do llthreads.sleep(1) end
  local hog = {}
  for i = 1, 32 do hog[i] = ("y"):rep(100000 + i) end
  local ok, err = pcall(g.join, g)
  local first = tostring(ok) .. " " .. tostring(err)
  hog = nil
  collectgarbage(); collectgarbage()
  local a, b, c = g:join()
  return first, tostring(a) .. " " .. (type(b) == "string" and #b or tostring(b)) .. " " .. tostring(c)
]])
t:start()
local ok, first, second = t:join()
print("child:", ok)
print("first join:", first)
print("second join:", second)
