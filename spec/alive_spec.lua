local H = require "spec.helper"

local llthreads = require "llthreads"

local GATED = H.child("local ready, go = ... handshake(ready, go, 10) return 'result'")

describe("thread:alive()", function()
  after_each(H.cleanup)

  it("returns nil, \"Can't join a thread that hasn't be started.\" before start", function()
    local t = llthreads.new("return")
    H.assert_values({ nil, "Can't join a thread that hasn't be started.", n = 2 }, H.pack(t:alive()))
  end)

  it("returns nil, \"Can't join a thread that has been detached.\" for start(true)", function()
    local t = llthreads.new("return"):start(true)
    H.assert_values({ nil, "Can't join a thread that has been detached.", n = 2 }, H.pack(t:alive()))
  end)

  it("returns nil, \"Can't join a thread that has already been joined.\" after join", function()
    local t = llthreads.new("return"):start()
    t:join()
    H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:alive()))
  end)

  for _, mode in ipairs({
    { label = "attached joinable", args = { false, true } },
    { label = "attached non-joinable", args = { false, false } },
    { label = "detached joinable", args = { true, true } },
  }) do
    describe("on an " .. mode.label .. " thread", function()
      it("returns true while the thread runs", function()
        local ready, go = H.tmpname(), H.tmpname()
        finally(function() H.touch(go) end)
        local t = llthreads.new(GATED, ready, go):start(mode.args[1], mode.args[2])
        assert.is_true(H.wait_file(ready, 10))
        H.assert_values({ true, n = 1 }, H.pack(t:alive()))
        H.assert_values({ true, n = 1 }, H.pack(t:alive()))
        H.touch(go)
        t:join()
      end)

      -- The C original probes with pthread_kill(t, 0), which on glibc >= 2.34
      -- says "running" until the thread is joined.
      it("returns false once the thread has finished, before it is joined", function()
        local ready, go = H.tmpname(), H.tmpname()
        finally(function() H.touch(go) end)
        local t = llthreads.new(GATED, ready, go):start(mode.args[1], mode.args[2])
        assert.is_true(H.wait_file(ready, 10))
        assert.are.equal(true, t:alive())
        H.touch(go)
        assert.is_true(H.wait_until(function() return t:alive() == false end, 10),
          "alive() kept reporting true for a finished thread")
        H.assert_values({ false, n = 1 }, H.pack(t:alive()))
        -- alive() does not join: the thread can still be joined.
        assert.are.equal(true, (t:join()))
      end)
    end)
  end

  it("leaves the results of a finished thread to join()", function()
    local t = llthreads.new("return 'kept', 2"):start()
    assert.is_true(H.wait_until(function() return t:alive() == false end, 10))
    H.assert_values({ true, "kept", 2, n = 3 }, H.pack(t:join()))
  end)

  it("returns false for a thread that finished with an error", function()
    local t = llthreads.new(H.quiet("error('x')")):start()
    assert.is_true(H.wait_until(function() return t:alive() == false end, 10))
    assert.are.equal(false, (t:join()))
  end)
end)
