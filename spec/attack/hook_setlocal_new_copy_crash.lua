-- Defect: on 5.1 and LuaJIT the argument copier makes stack room on the *source*
-- (the caller of `new`) with lua_cpcall (copy::reserve), which fires the caller's
-- call hook in the middle of the copy. The hook swaps the table being walked for a
-- number in new's own frame (debug.setlocal on a C frame), and the copier calls
-- lua_next on it.
-- Flavours: 5.1, LuaJIT (5.2+ grow the stack with lua_checkstack: no hook runs).
-- Observed: SIGSEGV in lua_next <- copy::Copier::table (src/copy.rs:326)
--   <- copy::transfer <- raw::trampoline.
local llthreads = require "llthreads"
local new = llthreads.new
local T = { {}, {}, {} }
local calls = 0
debug.sethook(function()
  local f2, f3 = debug.getinfo(2, "f"), debug.getinfo(3, "f")
  -- a C function called from inside `new`: copy::reserve's lua_cpcall
  if f2 and f3 and f3.func == new and f2.func ~= new then
    calls = calls + 1
    if calls == 2 then                         -- the reserve for T[1], mid-walk of T
      debug.setlocal(3, 2, 12345)              -- new's argument 2 (T) becomes a number
    end
  end
end, "c")
local ok, e = pcall(new, "return ...", T)
debug.sethook()
print("survived", ok, e)
