-- OS threads of the module's pool: a finished thread's OS thread waits, parked,
-- for the next start while some Lua state that loaded the module is open. When
-- the last such state closes, the parked OS threads end and are joined, so that
-- nothing of the module is left at process exit (a user's own
-- `valgrind --leak-check=full` run reports no thread-local storage of ours).
-- Threads still running then (detached ones) go on, and end when done. Child
-- states that load the module count too: the pool stays while any is open.

local H = require "spec.helper"
local llthreads = require "llthreads"

-- An object whose finalizer runs when the state closes, after the module's own
-- (Lua runs finalizers in reverse order of creation, so it is made before the
-- module is loaded): it writes how many OS threads the process still has.
local WATCH = [[
  local function on_close()
    local f = io.open("/proc/self/status")
    local n = f and tonumber(f:read("*a"):match("Threads:%s*(%d+)"))
    if f then f:close() end
    io.stdout:write("threads at close: ", tostring(n), "\n")
  end
  if newproxy then
    watcher = newproxy(true)
    getmetatable(watcher).__gc = on_close
  else
    watcher = setmetatable({}, { __gc = on_close })
  end
]]

describe("the thread pool", function()
  after_each(H.cleanup)

  it("leaves no OS thread behind when the last state that loaded the module closes", function()
    local code, out = H.run_lua(WATCH .. [[
      local llthreads = require "llthreads"
      -- every start mode, some children loading the module themselves
      local modes = { { false, false }, { false, true }, { true, true } }
      for _, m in ipairs(modes) do
        for i = 1, 3 do
          local t = llthreads.new("local llthreads = require 'llthreads' return ...", i)
          assert(t:start(m[1], m[2]))
          assert(t:join())
        end
      end
      io.stdout:write("threads before close: ",
        io.open("/proc/self/status"):read("*a"):match("Threads:%s*(%d+)"), "\n")
    ]])
    assert.is_falsy(H.crashed(code, out), out)
    assert.are.equal(0, code, out)
    -- the finished threads' OS threads were parked, ready for reuse
    local before = tonumber(out:match("threads before close: (%d+)"))
    assert(before and before > 1, out)
    H.assert_contains(out, "threads at close: 1\n")
  end)

  it("keeps its parked OS threads while the parent runs, after a child that loaded the module closed", function()
    -- A child that loads the module closes its state on its own OS thread
    -- (attached, not joinable): that state leaving must not end the pool,
    -- which the parent still uses. The next thread then runs on the same OS
    -- thread, parked in between.
    local first, second = H.tmpname(), H.tmpname()
    local code = H.CHILD_TID .. [[
      local out = ...
      local llthreads = require "llthreads"
      local f = assert(io.open(out, "w")) f:write(tid()) f:close()
    ]]
    assert(llthreads.new(code, first):start(false, false):join())
    assert(llthreads.new(code, second):start(false, false):join())
    local a, b = H.read_file(first), H.read_file(second)
    assert(a and a:match("^%d+$"), "first child wrote " .. tostring(a))
    assert.are.equal(a, b)
  end)
end)
