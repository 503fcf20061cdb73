local H = require "spec.helper"

local llthreads = require "llthreads"

-- Hooks fire on Lua events. While the child sits in handshake() (one
-- blocking C call) it runs no Lua code, so an interrupt issued then is
-- pending until the call returns: no timing guesses. The loops call
-- os.clock() each turn, a C function, so they keep producing hook events
-- on LuaJIT too, where JIT-compiled code runs no hooks.
local BUSY = "local function busy(n) for i = 1, n do os.clock() end end "

local function start_gated(code, ...)
  local ready, go = H.tmpname(), H.tmpname()
  local t = llthreads.new(H.quiet(H.child(BUSY .. code)), ready, go, ...):start()
  assert.is_true(H.wait_file(ready, 10), "the child did not start")
  return t, go
end

describe("thread:interrupt()", function()
  after_each(H.cleanup)

  it("makes the thread fail with interrupted_error", function()
    local t, go = start_gated("local ready, go = ... handshake(ready, go) busy(1e7) return 'finished'")
    finally(function() H.touch(go) end)
    t:interrupt()
    H.touch(go)
    local ok, err = t:join()
    assert.are.equal(false, ok)
    H.assert_contains(err, llthreads.interrupted_error)
  end)

  it("stops a thread busy in a Lua loop", function()
    local ready = H.tmpname()
    -- Bounded by the clock, not by a count, so a broken interrupt costs 5 s
    -- however fast the machine is.
    local t = llthreads.new(H.quiet(H.child(BUSY .. [[
      local ready = ...
      touch(ready)
      local deadline = os.time() + 5
      while os.time() < deadline do busy(100) end
      return 'not interrupted'
    ]])), ready):start()
    assert.is_true(H.wait_file(ready, 10))
    H.sleep(0.05)
    t:interrupt()
    local ok, err = t:join()
    assert.are.equal(false, ok)
    H.assert_contains(err, llthreads.interrupted_error)
  end)

  it("fires once, so a pcall in the child catches it and the thread goes on", function()
    local t, go = start_gated([[
      local ready, go = ...
      local ok, err = pcall(function() handshake(ready, go) busy(1e7) end)
      local sum = 0
      for i = 1, 100 do sum = sum + i end
      busy(1000)
      return 'continued', ok, err, sum
    ]])
    finally(function() H.touch(go) end)
    t:interrupt()
    H.touch(go)
    local got = H.pack(t:join())
    assert.are.equal(true, got[1])
    assert.are.equal("continued", got[2])
    assert.are.equal(false, got[3])
    H.assert_contains(got[4], llthreads.interrupted_error)
    assert.are.equal(5050, got[5])
  end)

  it("raises the interrupted_error of the module the thread was made by", function()
    local llthreads2 = require "llthreads2"
    local ready, go = H.tmpname(), H.tmpname()
    finally(function() H.touch(go) end)
    local t = llthreads2.new(H.quiet(H.child(BUSY .. "local ready, go = ... handshake(ready, go) busy(1e7)")),
      ready, go):start()
    assert.is_true(H.wait_file(ready, 10))
    t:interrupt()
    H.touch(go)
    local ok, err = t:join()
    assert.are.equal(false, ok)
    H.assert_contains(err, "llthreads2: thread was interrupted")
  end)
end)

describe("thread:interrupt(true)", function()
  after_each(H.cleanup)

  -- The same child survives interrupt() (see the contrast spec below).
  local RETRYING = [[
    local ready, go = ...
    local first, caught = true, 0
    for attempt = 1, 100 do
      local ok = pcall(function()
        if first then first = false handshake(ready, go) end
        busy(1000)
      end)
      if not ok then caught = caught + 1 end
    end
    return 'survived', caught
  ]]

  it("cannot be caught for good: a child that pcalls in a loop still fails", function()
    local t, go = start_gated(RETRYING)
    finally(function() H.touch(go) end)
    t:interrupt(true)
    H.touch(go)
    local ok, err = t:join()
    assert.are.equal(false, ok)
    H.assert_contains(err, llthreads.interrupted_error)
  end)

  it("unlike interrupt(), which that child catches once and survives", function()
    local t, go = start_gated(RETRYING)
    finally(function() H.touch(go) end)
    t:interrupt()
    H.touch(go)
    H.assert_values({ true, "survived", 1, n = 3 }, H.pack(t:join()))
  end)
end)

describe("thread:interrupt(false)", function()
  after_each(H.cleanup)

  it("removes a pending interrupt()", function()
    local t, go = start_gated("local ready, go = ... handshake(ready, go) busy(1000) return 'finished'")
    finally(function() H.touch(go) end)
    t:interrupt()
    t:interrupt(false)
    H.touch(go)
    H.assert_values({ true, "finished", n = 2 }, H.pack(t:join()))
  end)

  it("removes a pending interrupt(true)", function()
    local t, go = start_gated("local ready, go = ... handshake(ready, go) busy(1000) return 'finished'")
    finally(function() H.touch(go) end)
    t:interrupt(true)
    t:interrupt(false)
    H.touch(go)
    H.assert_values({ true, "finished", n = 2 }, H.pack(t:join()))
  end)
end)

-- The C original touches the freed child state here and can crash.
describe("thread:interrupt() after the child state is gone", function()
  after_each(H.cleanup)

  local function interrupt_all_ways(t)
    for _ = 1, 3 do
      t:interrupt()
      t:interrupt(true)
      t:interrupt(false)
    end
  end

  it("does nothing once an attached non-joinable thread has ended", function()
    local t = llthreads.new("return 1"):start(false, false)
    assert.is_true(H.wait_until(function() return t:alive() == false end, 10))
    interrupt_all_ways(t)
    assert.are.equal(true, (t:join()))
    interrupt_all_ways(t)
  end)

  it("does nothing once a detached joinable thread has ended", function()
    local t = llthreads.new("return 1"):start(true, true)
    assert.is_true(H.wait_until(function() return t:alive() == false end, 10))
    interrupt_all_ways(t)
    assert.are.equal(true, (t:join()))
    interrupt_all_ways(t)
  end)

  it("does nothing once a detached thread has ended", function()
    local done = H.tmpname()
    local t = llthreads.new(H.child("touch(...)"), done):start(true)
    assert.is_true(H.wait_file(done, 10))
    -- The child closes its state just after touching the file: keep
    -- interrupting across that moment and after it.
    for _ = 1, 20 do
      interrupt_all_ways(t)
      H.sleep(0.01)
    end
    assert.are.equal(true, t:detached())
  end)

  it("does nothing after join() closed the state of a joinable thread", function()
    local t = llthreads.new("return 1"):start()
    t:join()
    interrupt_all_ways(t)
    H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:join()))
  end)
end)

if H.is_jit then
  describe("thread:interrupt() on LuaJIT", function()
    after_each(H.cleanup)

    -- LuaJIT runs no hooks inside compiled traces; a loop that calls a C
    -- function such as os.clock() leaves the trace on every turn.
    it("stops a hot, JIT-compiled loop that calls os.clock() each turn", function()
      local ready = H.tmpname()
      local t = llthreads.new(H.quiet(H.child([[
        local ready = ...
        assert(jit.status(), "the JIT is off in the child")
        local n, deadline = 0, os.time() + 5
        touch(ready)
        while os.time() < deadline do
          for i = 1, 1000 do n = n + os.clock() * 0 + 1 end
        end
        return 'not interrupted', n
      ]])), ready):start()
      assert.is_true(H.wait_file(ready, 10))
      -- Let the loop get hot and compiled first.
      H.sleep(0.2)
      t:interrupt()
      local ok, err = t:join()
      assert.are.equal(false, ok)
      H.assert_contains(err, llthreads.interrupted_error)
    end)

    -- A pure arithmetic loop never leaves its trace once compiled, so the
    -- documented way to keep a worker interruptible is to switch the JIT off
    -- for it: for the whole chunk, or for one function.
    for _, case in ipairs({
      -- (Bounded, so that a failure ends the thread instead of hanging the suite.)
      { "jit.off() for the whole chunk",
        "jit.off() local n = 0 for i = 1, 3e9 do n = n + 1 end return 'not interrupted'" },
      { "jit.off(fn, true) for one function",
        "local function work() local n = 0 for i = 1, 3e9 do n = n + 1 end end jit.off(work, true) work() "
          .. "return 'not interrupted'" },
    }) do
      it("stops a pure Lua loop after " .. case[1], function()
        local ready = H.tmpname()
        local t = llthreads.new(H.quiet(H.child("local ready = ... touch(ready) " .. case[2])), ready):start()
        assert.is_true(H.wait_file(ready, 10))
        H.sleep(0.2)
        t:interrupt()
        local ok, err = t:join()
        assert.are.equal(false, ok, "the loop was not interrupted")
        H.assert_contains(err, llthreads.interrupted_error)
      end)
    end
  end)
end
