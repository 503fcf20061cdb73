-- Regressions found by attacking llthreads.pool from Lua code: what one task does to
-- its worker's state must not reach the next task beyond the documented warm rule
-- (globals stay), and select treats tasks as it treats threads.

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
end)
