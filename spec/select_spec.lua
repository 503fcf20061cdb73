local H = require "spec.helper"

local llthreads = require "llthreads"

describe("llthreads.select(list [, timeout])", function()
  it("returns the first ready channel in list order, with its message", function()
    local a, b, c = llthreads.channel(), llthreads.channel(), llthreads.channel()
    c:send("c1")
    b:send("b1")
    b:send("b2")
    H.assert_values({ b, "b1", n = 2 }, H.pack(llthreads.select({ a, b, c })))
    -- only that one message was taken
    assert.are.equal(1, b:len())
    assert.are.equal(1, c:len())
    H.assert_values({ c, "c1", n = 2 }, H.pack(llthreads.select({ c, b })))
  end)

  it("copies the message by the channel rules (tables, channels, exact numbers)", function()
    local a = llthreads.channel()
    a:send({ a, 1, 2.0 })
    local ch, v = llthreads.select({ a })
    assert.are.equal(a, ch)
    assert.are.equal(a, v[1])
    if H.has_integers then
      assert.are.equal("integer", math.type(v[2]))
      assert.are.equal("float", math.type(v[3]))
    end
  end)

  it("returns ch, nil, 'closed' for a channel closed and drained", function()
    local a, b = llthreads.channel(), llthreads.channel()
    b:send("last")
    b:close()
    H.assert_values({ b, "last", n = 2 }, H.pack(llthreads.select({ a, b })))
    H.assert_values({ b, nil, "closed", n = 3 }, H.pack(llthreads.select({ a, b })))
  end)

  it("returns th, true for a thread that has finished; join then gives its values", function()
    local ch = llthreads.channel()
    local t = llthreads.new("return 'done', 2"):start()
    H.assert_values({ t, true, n = 2 }, H.pack(llthreads.select({ ch, t }, 10000)))
    H.assert_values({ true, "done", 2, n = 3 }, H.pack(t:join()))
  end)

  it("waits for the first thread of several to end (any mode that can be joined)", function()
    local stop = llthreads.channel()
    local slow = llthreads.new("local stop = ... stop:receive()", stop):start()
    local fast = llthreads.new("return 1"):start(false, false)
    local other = llthreads.new("return 1"):start(true, true)
    local got = llthreads.select({ slow, fast }, 10000)
    assert.are.equal(fast, got)
    assert.are.equal(other, (llthreads.select({ slow, other }, 10000)))
    stop:close()
    assert.is_true(slow:join())
  end)

  it("returns nil, 'timeout' when nothing is ready in time (0: at once)", function()
    local a = llthreads.channel()
    local t0 = H.now()
    H.assert_nil_msg(H.pack(llthreads.select({ a }, 0)), "timeout")
    assert.is_true(H.now() - t0 < 0.5)
    t0 = H.now()
    H.assert_nil_msg(H.pack(llthreads.select({ a }, 60)), "timeout")
    assert.is_true(H.now() - t0 >= 0.055)
  end)

  it("wakes when a message is sent later, without polling", function()
    local a, b, ready = llthreads.channel(), llthreads.channel(), llthreads.channel()
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local a, b, ready = ...
      ready:send(true)
      local c0 = os.clock()
      local ch, v = llthreads.select({ a, b })
      return ch == b, v, os.clock() - c0
    ]], a, b, ready):start()
    ready:receive()
    llthreads.sleep(300)
    b:send("woken")
    local ok, which, v, cpu = t:join()
    assert.is_true(ok)
    assert.is_true(which)
    assert.are.equal("woken", v)
    -- os.clock counts every thread of the process: a polling wait would show
    -- most of the 300 ms here
    assert.is_true(cpu < 0.15, ("the process used %.3f s of CPU while the child waited"):format(cpu))
  end)

  it("takes a rendezvous message from a waiting sender", function()
    local r = llthreads.channel(0)
    local t = llthreads.new("local r = ... return r:send('handed')", r):start()
    H.assert_values({ r, "handed", n = 2 }, H.pack(llthreads.select({ llthreads.channel(), r }, 10000)))
    H.assert_values({ true, true, n = 2 }, H.pack(t:join()))
  end)

  it("two selecting threads never get the same message", function()
    local ch = llthreads.channel()
    local code = [[
      local llthreads = require "llthreads"
      local ch, other = ...
      local n, sum = 0, 0
      while true do
        local from, v = llthreads.select({ other, ch })
        if v == nil then return n, sum end
        n, sum = n + 1, sum + v
      end
    ]]
    local t1 = llthreads.new(code, ch, llthreads.channel()):start()
    local t2 = llthreads.new(code, ch, llthreads.channel()):start()
    local N = 2000
    for i = 1, N do ch:send(i) end
    ch:close()
    local ok1, n1, s1 = t1:join()
    local ok2, n2, s2 = t2:join()
    assert.is_true(ok1 and ok2)
    assert.are.equal(N, n1 + n2)
    assert.are.equal(N * (N + 1) / 2, s1 + s2)
  end)

  it("works in a child, over the child's own children", function()
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local g = llthreads.new("return 'grandchild'"):start()
      local ch = llthreads.channel()
      local got = llthreads.select({ ch, g }, 10000)
      assert(got == g, "select gave " .. tostring(got))
      return g:join()
    ]]):start()
    H.assert_values({ true, true, "grandchild", n = 3 }, H.pack(t:join()))
  end)

  describe("bad input", function()
    it("refuses a list that is not a table, or empty", function()
      H.assert_error("bad argument #1 to 'select' (table expected, got no value)", function() llthreads.select() end)
      H.assert_error("table expected, got userdata", llthreads.select, llthreads.channel())
      H.assert_error("empty list: nothing to wait for", llthreads.select, {})
    end)

    it("refuses an item that is neither a channel nor a thread, naming it", function()
      local ch = llthreads.channel()
      H.assert_error("item 2: llthreads.channel, thread or task expected, got number", llthreads.select, { ch, 1 })
      H.assert_error("item 1: llthreads.channel, thread or task expected, got userdata", llthreads.select, { io.stdout })
      H.assert_error("item 3: llthreads.channel, thread or task expected, got table", llthreads.select, { ch, ch, {} })
    end)

    it("refuses a thread that cannot be joined, saying why", function()
      local ch = llthreads.channel()
      H.assert_error("item 2: Can't join a thread that hasn't be started.", llthreads.select,
        { ch, llthreads.new("return") })
      H.assert_error("item 1: Can't join a thread that has been detached.", llthreads.select,
        { llthreads.new("return"):start(true) })
      local joined = llthreads.new("return"):start()
      joined:join()
      H.assert_error("item 1: Can't join a thread that has already been joined.", llthreads.select, { joined })
      local collected = llthreads.new("return")
      debug.getmetatable(collected).__gc(collected)
      H.assert_error("item 1: thread object already collected", llthreads.select, { collected })
    end)

    it("refuses a negative, NaN or non-number timeout and takes nothing", function()
      local ch = llthreads.channel()
      ch:send(1)
      for _, bad in ipairs({ -1, 0 / 0, "soon" }) do
        H.assert_error("bad argument #2 to 'select'", function() llthreads.select({ ch }, bad) end)
      end
      assert.are.equal(1, ch:len())
    end)
  end)
end)

describe("llthreads.select over a thread still running", function()
  it("is woken when the thread ends", function()
    local go = llthreads.channel()
    local t = llthreads.new("local go = ... go:receive() return 'ended'", go):start()
    local helper = llthreads.new([[
      local llthreads = require "llthreads"
      local go = ...
      llthreads.sleep(100)
      go:send(true)
    ]], go):start()
    local t0 = H.now()
    H.assert_values({ t, true, n = 2 }, H.pack(llthreads.select({ llthreads.channel(), t }, 10000)))
    assert.is_true(H.now() - t0 >= 0.09, "select returned before the thread ended")
    H.assert_values({ true, "ended", n = 2 }, H.pack(t:join()))
    assert.is_true(helper:join())
  end)
end)
