local H = require "spec.helper"

local llthreads = require "llthreads"

-- Lets a child that has just said it is about to wait get into the wait.
local function settle() llthreads.sleep(30) end

describe("llthreads.sleep(ms)", function()
  it("sleeps at least that long", function()
    local t0 = H.now()
    llthreads.sleep(60)
    local dt = H.now() - t0
    assert.is_true(dt >= 0.055, ("slept %.3f s"):format(dt))
    assert.is_true(dt < 5)
  end)

  it("returns at once for 0 and returns nothing", function()
    local t0 = H.now()
    assert.are.equal(0, select("#", llthreads.sleep(0)))
    assert.is_true(H.now() - t0 < 0.5)
  end)

  it("refuses a negative, NaN or non-number duration", function()
    for _, bad in ipairs({ -1, -math.huge, 0 / 0, "soon", {} }) do
      H.assert_error("bad argument #1 to 'sleep'", function() llthreads.sleep(bad) end)
    end
    H.assert_error("bad argument #1 to 'sleep'", function() llthreads.sleep() end)
  end)

  it("works in a child", function()
    H.assert_values({ true, n = 1 }, H.pack(llthreads.new([[
      local llthreads = require "llthreads"
      llthreads.sleep(20)
    ]]):start():join()))
  end)
end)

-- Child code for each kind of wait. Each gets `ready` (a channel) and `hold`
-- (a channel nobody sends to), says it is ready, then blocks for good.
local WAITS = {
  { "receive", "hold:receive()" },
  { "send on a full bounded channel", "local ch = llthreads.channel(1) ch:send(1) ready:send(true) ch:send(2)" },
  { "send on a rendezvous channel", "llthreads.channel(0):send('never taken')" },
  { "select", "llthreads.select({ hold, llthreads.channel() })" },
  { "sleep", "llthreads.sleep(1e9)" },
  { "pool:close() while a task runs",
    "local p = llthreads.pool{ size = 1 } p:submit(function(h) h:receive() end, hold) ready:send(true) p:close()" },
  { "llthreads.pool{} while init runs", "llthreads.pool{ size = 1, init = function() hold:receive() end }" },
}

local function waiting_child(body)
  local ready, hold = llthreads.channel(), llthreads.channel()
  local code = "local llthreads = require 'llthreads' local ready, hold = ... "
    .. (body:find("ready:send", 1, true) and "" or "ready:send(true) ") .. body
    .. " return 'the wait ended by itself'"
  local t = llthreads.new(H.quiet(code), ready, hold):start()
  assert.is_true(ready:receive(10000))
  settle()
  return t, hold
end

describe("interrupt() on a child blocked in a wait", function()
  for _, w in ipairs(WAITS) do
    it("wakes it in " .. w[1] .. ", which raises interrupted_error", function()
      local t, hold = waiting_child(w[2])
      -- Lets a pool's task or init blocked on `hold` end, so its worker ends.
      finally(function() hold:close() end)
      local t0 = H.now()
      t:interrupt()
      local ok, err = t:join(10000)
      local dt = H.now() - t0
      assert.are.equal(false, ok)
      H.assert_contains(err, llthreads.interrupted_error)
      -- the mechanism takes well under 10 ms; this bound only catches a wait
      -- that is not woken at all (or polls slowly)
      assert.is_true(dt < 1, ("join returned %.3f s after interrupt()"):format(dt))
    end)
  end

  it("wakes it in join on its own child, and leaves that child joinable with its values", function()
    local ready, res, release = llthreads.channel(), llthreads.channel(), llthreads.channel()
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local ready, res, release = ...
      local g = llthreads.new("local release = ... release:receive() return 'grandchild', 42", release):start()
      ready:send(true)
      local ok, err = pcall(g.join, g)
      res:send({ ok, err })
      return g:join()
    ]], ready, res, release):start()
    assert.is_true(ready:receive(10000))
    settle()
    local t0 = H.now()
    t:interrupt()
    local caught = res:receive(10000)
    local dt = H.now() - t0
    assert.are.equal(false, caught[1])
    H.assert_contains(caught[2], llthreads.interrupted_error)
    assert.is_true(dt < 1, ("the join raised %.3f s after interrupt()"):format(dt))
    release:send(true)
    H.assert_values({ true, true, "grandchild", 42, n = 4 }, H.pack(t:join()))
  end)

  it("leaves a pool whose close() it interrupted closed, and a later close() waits for its workers", function()
    local ready, hold, res = llthreads.channel(), llthreads.channel(), llthreads.channel()
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local ready, hold, res = ...
      local p = llthreads.pool{ size = 1 }
      local task = p:submit(function(h) return h:receive() end, hold)
      ready:send(true)
      local ok, err = pcall(p.close, p)
      res:send({ ok, err })
      res:send({ p:submit(function() end) })
      return p:close(), task:join()
    ]], ready, hold, res):start()
    assert.is_true(ready:receive(10000))
    settle()
    t:interrupt()
    local caught = res:receive(10000)
    assert.are.equal(false, caught[1])
    H.assert_contains(caught[2], llthreads.interrupted_error)
    assert.are.same({ nil, "closed" }, res:receive(10000))
    hold:send("done")
    H.assert_values({ true, true, true, "done", n = 4 }, H.pack(t:join()))
  end)

  it("a plain interrupt() is used up by the wait it ended: the next wait waits", function()
    local ready, res = llthreads.channel(), llthreads.channel()
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local ready, res = ...
      local hold = llthreads.channel()
      ready:send(true)
      local ok, err = pcall(hold.receive, hold)
      res:send(err)
      return hold:receive(50)
    ]], ready, res):start()
    assert.is_true(ready:receive(10000))
    settle()
    t:interrupt()
    H.assert_contains(res:receive(10000), llthreads.interrupted_error)
    H.assert_values({ true, nil, "timeout", n = 3 }, H.pack(t:join()))
  end)

  it("interrupt(true) makes every later wait raise at once", function()
    local ready = llthreads.channel()
    local t = llthreads.new(H.quiet([[
      local llthreads = require "llthreads"
      local ready = ...
      local hold = llthreads.channel()
      ready:send(true)
      local raised = 0
      for _ = 1, 1000 do
        if not pcall(hold.receive, hold) then raised = raised + 1 end
      end
      return raised
    ]]), ready):start()
    assert.is_true(ready:receive(10000))
    settle()
    t:interrupt(true)
    local got = H.pack(t:join(5000))
    -- The debug hook may stop the loop first (false, interrupted_error); if it
    -- does not fire in time, all 1000 waits must have raised without waiting.
    if got[1] == false then
      H.assert_contains(got[2], llthreads.interrupted_error)
    else
      H.assert_values({ true, 1000, n = 2 }, got)
    end
  end)

  it("reaches a wait in a grandchild when the child interrupts it", function()
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local ready = llthreads.channel()
      local g = llthreads.new([=[
        local ready = ...
        local llthreads = require "llthreads"
        llthreads.set_logger(function() end)
        ready:send(true)
        llthreads.sleep(1e9)
      ]=], ready):start()
      ready:receive()
      llthreads.sleep(30)
      g:interrupt()
      return g:join()
    ]]):start()
    local ok, gok, gerr = t:join()
    assert.is_true(ok)
    assert.are.equal(false, gok)
    H.assert_contains(gerr, llthreads.interrupted_error)
  end)

  it("leaves the parent's own waits alone: the host thread has nothing to interrupt", function()
    local t = llthreads.new("return 1"):start()
    t:join()
    t:interrupt()
    H.assert_nil_msg(H.pack(llthreads.channel():receive(20)), "timeout")
  end)
end)
