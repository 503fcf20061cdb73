-- Defect: the pcall trampoline runs an armed body for a call that Lua code made.
-- A child's error object with __tostring (5.2+) runs Lua code after the chunk, in
-- describe_error; it sets a call hook on the child's main state. report_error then
-- arms its body with caller = null (no function running) and lua_pcalls the
-- trampoline: the hook fires first, fetches the trampoline (debug.getinfo) and the
-- armed body (debug.getlocal), and calls the trampoline from a new coroutine, where
-- the trampoline's caller is also null: the check in raw::trampoline passes and the
-- library's body runs on the coroutine's stack, from Lua. The real report is then
-- refused ("internal function, not callable from Lua") and the error never reaches
-- stderr / the logger.
-- Flavours: 5.2 5.3 5.4. README: "the pcall trampoline refuses calls not armed by
-- the library". Observed output (stderr):
--   hook ran the library's body: true  Error from thread: (no error message)
-- and no "Error from thread: boom" line.
local llthreads = require "llthreads"
local t = llthreads.new([[
  local done = false
  local function h()
    if done then return end
    local info = debug.getinfo(2, "fS")
    if info and info.what == "C" then
      local _, body = debug.getlocal(2, 1)
      if type(body) == "userdata" then
        done = true
        local ok, r = pcall(coroutine.wrap(info.func), body)
        io.stderr:write("hook ran the library's body: ", tostring(ok), "  ", tostring(r), "\n")
      end
    end
  end
  error(setmetatable({}, { __tostring = function()
    debug.sethook(h, "c")
    return "boom"
  end }))
]])
print(t:start():join())
