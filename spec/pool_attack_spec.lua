-- Regressions found by attacking llthreads.pool from Lua code: what one task does to
-- its worker's state must not reach the next task beyond the documented warm rule
-- (globals stay), and select treats tasks as it treats threads. Then interrupts
-- against the waits of a pool's creation and close (and of nested pools), and process
-- exit during them: nothing hangs, no worker is left behind, values stay right.

local H = require "spec.helper"

local llthreads = require "llthreads"

describe("llthreads.pool under attack", function()
  after_each(H.cleanup)

  it("a kept task function gets the globals again after a task changed its environment", function()
    -- The function is loaded once per worker and kept; a task that gives its own
    -- function another environment must not leave it to the next task that submits
    -- the same function: a fresh load would see the globals.
    local pool = llthreads.pool{ size = 1 }
    local function task(poison)
      local seen = type(print)
      if poison then
        if setfenv then
          setfenv(1, {})
        else
          local debug = debug
          local self = debug.getinfo(1, "f").func
          for i = 1, math.huge do
            local name = debug.getupvalue(self, i)
            if name == nil then break end
            if name == "_ENV" then debug.setupvalue(self, i, {}) end
          end
        end
      end
      return seen
    end
    H.assert_values({ true, "function", n = 2 }, H.pack(pool:submit(task, true):join()))
    H.assert_values({ true, "function", n = 2 }, H.pack(pool:submit(task, false):join()))
    assert.is_true(pool:close())
  end)

  it("a hook set by an error value's __tostring does not reach the next task", function()
    -- The error value is described (5.2+: its __tostring runs) after the task's own
    -- hook was removed; a hook set there would fire in the next task on the worker.
    local pool = llthreads.pool{ size = 1 }
    local failed = H.pack(pool:submit(function()
      error(setmetatable({}, { __tostring = function()
        debug.sethook(function() error("hook left by the previous task") end, "c")
        return "described"
      end }))
    end):join())
    assert.is_false(failed[1])
    if H.flavour == "5.1" or H.is_jit then
      -- 5.1 and LuaJIT do not describe a table error with __tostring.
      assert.are.equal("Error from child thread: (null)", failed[2])
    else
      assert.are.equal("Error from child thread: described", failed[2])
    end
    H.assert_values({ true, "1", n = 2 }, H.pack(pool:submit(function() return tostring(1) end):join()))
    assert.is_true(pool:close())
  end)

  -- submit notes its function in a protected call (the bytecode cache), where a
  -- call hook runs Lua code after the argument check; that code may put another value
  -- in the function's place with debug.setlocal. Without a second look, a table was
  -- queued as the task and its join failed with "attempt to call a table value".
  it("a hook that replaces the function with a table during submit gets submit's argument error", function()
    local pool = llthreads.pool{ size = 1 }
    local function task() return "ran" end
    local replaced = 0
    -- The protected call that notes the function, called by submit, gets it as its
    -- one argument (after the library's own pointer).
    debug.sethook(function()
      local caller = debug.getinfo(3, "f")
      if caller and caller.func == pool.submit and select(2, debug.getlocal(2, 2)) == task then
        debug.setlocal(3, 2, {})
        replaced = replaced + 1
      end
    end, "c")
    local ok, err = pcall(pool.submit, pool, task)
    debug.sethook()
    assert.are.equal(1, replaced)
    assert.is_false(ok)
    assert.matches("bad argument #2 to '.-' %(function or source expected, got table%)", err)
    H.assert_values({ true, "ran", n = 2 }, H.pack(pool:submit(task):join()))
    pool:close()
  end)

  it("select refuses a joined task or a collected task object, as it does threads", function()
    -- A joined task used to be ready for ever: a gathering loop that kept it in its
    -- list spun instead of waiting.
    local pool = llthreads.pool{ size = 1 }
    local task = pool:submit(function() return 5 end)
    assert.are.equal(task, (llthreads.select({ task }, 5000)))
    H.assert_values({ true, 5, n = 2 }, H.pack(task:join()))
    local ok, err = pcall(llthreads.select, { task }, 0)
    assert.is_false(ok)
    H.assert_contains(err, "item 1: Can't join a task that has already been joined.")
    local gone = pool:submit(function() return 1 end)
    getmetatable(gone).__gc(gone)
    ok, err = pcall(llthreads.select, { gone }, 0)
    assert.is_false(ok)
    H.assert_contains(err, "item 1: task object already collected")
    assert.is_true(pool:close())
  end)

  -- The waits of a pool's creation and close are the library's: an interrupt may land
  -- before, during or after either, and whatever it ends, the workers still end by
  -- themselves and every value stays right.
  describe("with interrupts landing at any moment of a pool's creation or close", function()
    local CHILD = H.quiet([[
      local llthreads = require "llthreads"
      local ready, init_ms, task_ms, timeout, cancel = ...
      ready:send(true)
      local p = llthreads.pool{ size = 2, init = "require('llthreads').sleep(" .. init_ms .. ")" }
      local tasks = {}
      for i = 1, 3 do
        tasks[i] = p:submit(function(ms, i) require("llthreads").sleep(ms) return i * 2 end, task_ms, i)
      end
      local how = "closed"
      local ok, closed, why = pcall(p.close, p, timeout, cancel)
      if not ok then
        assert(closed:find(llthreads.interrupted_error, 1, true), closed)
        how = "close interrupted"
      elseif not closed then
        assert(why == "timeout", why)
        how = "close timed out"
      end
      -- A later close waits for the workers again, and the tasks tell what became of them.
      assert(p:close(10000) == true)
      local got = {}
      for i, task in ipairs(tasks) do
        local ok, value = task:join(10000)
        assert(ok ~= nil, "task " .. i .. " never ended")
        if ok then
          got[i] = tostring(value)
        else
          assert(cancel and value:find("Task cancelled", 1, true), value)
          got[i] = "cancelled"
        end
      end
      return how, table.concat(got, " ")
    ]])

    for _, case in ipairs({
      { "close() waiting", nil, false },
      { "close(timeout)", 3, false },
      { "close(timeout, cancel)", 3, true },
    }) do
      it(case[1] .. ": the child ends, its pool's workers end, the tasks ran or were cancelled", function()
        llthreads.new("return 1"):start():join()
        local base = H.os_threads()
        for round = 1, 25 do
          local ready = llthreads.channel()
          local t = llthreads.new(CHILD, ready, round % 4 * 3, (round * 7) % 5 * 3, case[2], case[3]):start()
          assert.is_true(ready:receive(10000))
          -- From before the pool's creation to after its close.
          llthreads.sleep(round * 5 % 16)
          t:interrupt()
          local got = H.pack(t:join(20000))
          assert.are_not.equal("timeout", got[2], "a child never ended")
          if got[1] then
            -- Interrupted in close, or not at all: every task ran, or was cancelled
            -- (only with cancel).
            local i = 0
            for value in got[3]:gmatch("%S+") do
              i = i + 1
              if value == "cancelled" then
                assert.is_true(case[3], got[3])
              else
                assert.are.equal(tostring(i * 2), value, got[3])
              end
            end
            assert.are.equal(3, i, got[3])
          else
            H.assert_contains(got[2], llthreads.interrupted_error)
          end
        end
        assert.is_true(H.wait_until(function() return H.os_threads() <= base end, 10),
          ("%d OS threads, %d before"):format(H.os_threads(), base))
      end)
    end

    it("interrupt(true) on the creator: the pools it could not close end by themselves", function()
      llthreads.new("return 1"):start():join()
      local base = H.os_threads()
      for round = 1, 10 do
        local ready = llthreads.channel()
        local t = llthreads.new(H.quiet([[
          local llthreads = require "llthreads"
          local ready, ms = ...
          ready:send(true)
          local p = llthreads.pool{ size = 2, init = "require('llthreads').sleep(" .. ms .. ")" }
          p:submit(function(ms) require("llthreads").sleep(ms) end, ms)
          local ok, err = pcall(p.close, p)
          local again, err2 = pcall(p.close, p)
          return ok, again, err2
        ]]), ready, round % 3 * 5):start()
        assert.is_true(ready:receive(10000))
        llthreads.sleep(round % 4 * 3)
        t:interrupt(true)
        local ok, err = t:join(20000)
        assert.are_not.equal("timeout", err, "a child never ended")
        if not ok then H.assert_contains(err, llthreads.interrupted_error) end
      end
      assert.is_true(H.wait_until(function() return H.os_threads() <= base end, 10),
        ("%d OS threads, %d before"):format(H.os_threads(), base))
    end)
  end)

  it("task:interrupt() reaches a task creating or closing a pool of its own", function()
    llthreads.new("return 1"):start():join()
    local base = H.os_threads()
    local outer = llthreads.pool{ size = 2 }
    local hold_init, hold_task, started = llthreads.channel(), llthreads.channel(), llthreads.channel()
    local creating = outer:submit(function(hold, started)
      local llthreads = require "llthreads"
      started:send(true)
      local ok, err = pcall(llthreads.pool, { size = 2, init = function() hold:receive() end })
      return ok, err
    end, hold_init, started)
    local closing = outer:submit(function(hold, started)
      local llthreads = require "llthreads"
      local p = llthreads.pool{ size = 1 }
      local inner = p:submit(function(h) return h:receive() end, hold)
      started:send(true)
      local ok, err = pcall(p.close, p)
      hold:send("for the inner task")
      local iok, value = inner:join(10000)
      return ok, err, iok, value, p:close(10000)
    end, hold_task, started)
    assert.is_true(started:receive(10000))
    assert.is_true(started:receive(10000))
    llthreads.sleep(30)
    creating:interrupt()
    closing:interrupt()
    local got = H.pack(creating:join(10000))
    assert.are.equal(true, got[1])
    assert.are.equal(false, got[2])
    H.assert_contains(got[3], llthreads.interrupted_error)
    got = H.pack(closing:join(10000))
    assert.are.equal(true, got[1])
    assert.are.equal(false, got[2])
    H.assert_contains(got[3], llthreads.interrupted_error)
    H.assert_values({ true, "for the inner task", true }, { got[4], got[5], got[6], n = 3 })
    -- The nested workers whose creation was given up finish init, then end.
    hold_init:send(1)
    hold_init:send(2)
    assert.is_true(outer:close(10000))
    assert.is_true(H.wait_until(function() return H.os_threads() <= base end, 10),
      ("%d OS threads, %d before"):format(H.os_threads(), base))
  end)

  it("the process exits with the script's code while children wait in a pool's creation or close", function()
    for _, ending in ipairs({ "", "os.exit(7)", "os.exit(7, true)" }) do
      local code, out = H.run_lua([[
        local llthreads = require "llthreads"
        local hold, ready = llthreads.channel(), llthreads.channel()
        llthreads.new([=[
          local llthreads = require "llthreads"
          local hold, ready = ...
          ready:send(1)
          llthreads.pool{ size = 3, init = function() hold:receive() end }
        ]=], hold, ready):start(true)
        llthreads.new([=[
          local llthreads = require "llthreads"
          local hold, ready = ...
          local p = llthreads.pool{ size = 2 }
          p:submit(function(h) h:receive() end, hold)
          p:submit(function() require("llthreads").sleep(1e9) end)
          ready:send(2)
          p:close()
        ]=], hold, ready):start(true)
        local p = llthreads.pool{ size = 1 }
        p:submit(function() require("llthreads").sleep(1e9) end)
        assert(ready:receive(10000)) assert(ready:receive(10000))
        llthreads.sleep(30)
        print("script done")
      ]] .. ending, nil, 30)
      assert.is_falsy(H.crashed(code, out), out)
      assert.are.equal(ending == "" and 0 or 7, code, out)
      H.assert_contains(out, "script done")
    end
  end)
end)
