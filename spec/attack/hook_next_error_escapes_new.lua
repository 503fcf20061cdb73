-- Defect: on 5.1 and LuaJIT a call hook that fires inside the argument copy
-- (copy::reserve's lua_cpcall on the caller's state) can change the table being
-- walked; the copier's next lua_next on the caller's state then raises
-- "invalid key to 'next'" OUTSIDE any protected call on that state:
--  * 5.1: the longjmp crosses the child's lua_pcall and the Rust frames of
--    api::build/copy::transfer (which own the ChildState): the whole child state
--    leaks, ~33 KB per call (RSS below grows without bound), and the child state
--    is left with a dangling errorJmp. The error reaches the caller as if `new`
--    had raised it.
--  * LuaJIT: the C++-style unwind is caught by the CHILD state's lua_pcall (the
--    nearest LuaJIT frame), so `new` raises "(null)", an error of the wrong state.
-- README promise broken: "a Lua error never crosses Rust frames that own
-- resources" / "leaks nothing".
local llthreads = require "llthreads"
local new = llthreads.new
local function rss()
  local f = io.open("/proc/self/status"); local s = f:read("*a"); f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end
local first, msg
for iter = 1, 2000 do
  local T = {}
  for i = 1, 10 do T["k" .. i] = {} end
  local calls = 0
  debug.sethook(function()
    local f2, f3 = debug.getinfo(2, "f"), debug.getinfo(3, "f")
    if f2 and f3 and f3.func == new and f2.func ~= new then
      calls = calls + 1
      if calls == 2 then                   -- inside the walk of T
        for k in pairs(T) do T[k] = nil end
        for i = 1, 200 do T["n" .. i] = i end -- rehash: the current key is gone
      end
    end
  end, "c")
  local ok, e = pcall(new, "return ...", T)
  debug.sethook()
  msg = e
  collectgarbage()
  if iter == 100 then first = rss() end
end
print("new raised:", msg)
print(("RSS growth over 1900 calls: %d KB"):format(rss() - first))
