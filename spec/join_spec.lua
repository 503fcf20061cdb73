local H = require "spec.helper"

local llthreads = require "llthreads"

-- A child that runs until the parent creates `go` (at most 10 s), then
-- returns `...` after the two file names.
local GATED = H.child("local ready, go = ... handshake(ready, go, 10) return select(3, ...)")

local function gated(...)
  local ready, go = H.tmpname(), H.tmpname()
  local t = llthreads.new(GATED, ready, go, ...)
  return t, ready, go
end

describe("thread:join()", function()
  after_each(H.cleanup)

  describe("before it can join", function()
    it("returns nil, \"Can't join a thread that hasn't be started.\" before start", function()
      local t = llthreads.new("return 1")
      H.assert_values({ nil, "Can't join a thread that hasn't be started.", n = 2 }, H.pack(t:join()))
      H.assert_values({ nil, "Can't join a thread that hasn't be started.", n = 2 }, H.pack(t:join(0)))
    end)

    it("returns nil, \"Can't join a thread that has been detached.\" for start(true)", function()
      local t = llthreads.new("return 1"):start(true)
      H.assert_values({ nil, "Can't join a thread that has been detached.", n = 2 }, H.pack(t:join()))
    end)

    it("returns nil, \"Can't join a thread that has already been joined.\" the second time", function()
      local t = llthreads.new("return 1"):start()
      t:join()
      H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:join()))
      H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:join(0)))
    end)
  end)

  it("returns true and every value the chunk returned, nils included", function()
    local got = H.pack(llthreads.new("return nil, 1, 'two', nil, false, nil"):start():join())
    H.assert_values({ true, nil, 1, "two", nil, false, nil, n = 7 }, got)
  end)

  it("returns only true when the chunk returns nothing", function()
    H.assert_values({ true, n = 1 }, H.pack(llthreads.new("local x = 1"):start():join()))
  end)

  it("returns false, 'Error from child thread: ' .. message when the chunk raised", function()
    local ok, err = llthreads.new(H.quiet("error('it broke')")):start():join()
    assert.are.equal(false, ok)
    assert.are.equal("Error from child thread: ", err:sub(1, #"Error from child thread: "))
    H.assert_contains(err, "it broke")
  end)

  it("waits for the thread to finish", function()
    local done = H.tmpname()
    local t = llthreads.new(H.child("local done = ... sleep(0.2) touch(done) return 'late'"), done):start()
    H.assert_values({ true, "late", n = 2 }, H.pack(t:join()))
    assert.is_true(H.exists(done))
  end)

  it("in the modes where the child closes its own state, returns true first", function()
    assert.are.equal(true, (llthreads.new("return 1, 2"):start(false, false):join()))
    assert.are.equal(true, (llthreads.new("return 1, 2"):start(true, true):join()))
  end)
end)

describe("thread:join(timeout)", function()
  after_each(H.cleanup)

  it("join(0) returns nil, 'timeout' at once while the thread runs", function()
    local t, ready, go = gated("v")
    finally(function() H.touch(go) end)
    t:start()
    assert.is_true(H.wait_file(ready, 10))
    local t0 = H.now()
    H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(0)))
    assert.is_true(H.now() - t0 < 2, "join(0) blocked")
    H.touch(go)
    H.assert_values({ true, "v", n = 2 }, H.pack(t:join()))
  end)

  -- The C original asks pthread_kill whether the thread exists, which on
  -- glibc >= 2.34 says "yes" until it is joined: join(0) never succeeded.
  it("join(0) returns the results of a thread that has finished", function()
    local t = llthreads.new("return 'done', 7"):start()
    local got
    assert.is_true(H.wait_until(function()
      got = H.pack(t:join(0))
      return got[1] ~= nil or got[2] ~= "timeout"
    end, 10), "join(0) kept reporting timeout for a finished thread")
    H.assert_values({ true, "done", 7, n = 3 }, got)
    H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:join(0)))
  end)

  it("join(50) returns nil, 'timeout' after about 50 ms while the thread runs", function()
    local t, ready, go = gated("v")
    finally(function() H.touch(go) end)
    t:start()
    assert.is_true(H.wait_file(ready, 10))
    local t0 = H.now()
    local got = H.pack(t:join(50))
    local elapsed = H.now() - t0
    H.assert_values({ nil, "timeout", n = 2 }, got)
    assert.is_true(elapsed >= 0.04, ("returned after %.3f s"):format(elapsed))
    -- The thread cannot end before `go`; anything near 10 s means join
    -- waited for the thread instead of honouring the timeout.
    assert.is_true(elapsed < 5, ("returned after %.3f s"):format(elapsed))
    H.touch(go)
    H.assert_values({ true, "v", n = 2 }, H.pack(t:join()))
  end)

  it("lets a later join() collect the values after a timeout", function()
    local t, ready, go = gated("a", nil, "c")
    finally(function() H.touch(go) end)
    t:start()
    assert.is_true(H.wait_file(ready, 10))
    H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(30)))
    H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(1)))
    H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(0)))
    H.touch(go)
    H.assert_values({ true, "a", nil, "c", n = 4 }, H.pack(t:join()))
  end)

  it("join(ms) returns as soon as the thread finishes, not when the timeout expires", function()
    local t = llthreads.new(H.child("sleep(0.1) return 'quick'")):start()
    local t0 = H.now()
    H.assert_values({ true, "quick", n = 2 }, H.pack(t:join(60000)))
    assert.is_true(H.now() - t0 < 30)
  end)

  it("join(ms) returns the results when the thread ends within the timeout", function()
    local t = llthreads.new(H.child("sleep(0.1) return 'in time'")):start()
    H.assert_values({ true, "in time", n = 2 }, H.pack(t:join(20000)))
  end)

  it("times out the same way on a detached joinable thread", function()
    local t, ready, go = gated()
    finally(function() H.touch(go) end)
    t:start(true, true)
    assert.is_true(H.wait_file(ready, 10))
    H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(0)))
    H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(20)))
    H.touch(go)
    assert.are.equal(true, (t:join()))
  end)

  it("times out the same way on an attached non-joinable thread", function()
    local t, ready, go = gated()
    finally(function() H.touch(go) end)
    t:start(false, false)
    assert.is_true(H.wait_file(ready, 10))
    H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(20)))
    H.touch(go)
    assert.are.equal(true, (t:join()))
  end)
end)
