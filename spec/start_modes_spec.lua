local H = require "spec.helper"

local llthreads = require "llthreads"

-- A child that takes ~0.2 s and then records that it finished, so a caller
-- can tell whether it waited for the thread.
local SLOW = H.child("local done = ... sleep(0.2) touch(done, 'finished') return 'value'")

describe("thread:start(detached, joinable)", function()
  after_each(H.cleanup)

  it("returns the thread object itself", function()
    local t = llthreads.new("return")
    assert.is_true(rawequal(t, t:start()))
    t:join()
  end)

  it("lets new(code):start():join() be chained", function()
    H.assert_values({ true, 42, n = 2 }, H.pack(llthreads.new("return 42"):start():join()))
  end)

  it("returns nil, 'Thread already started.' when called twice", function()
    local t = llthreads.new("return")
    t:start()
    H.assert_values({ nil, "Thread already started.", n = 2 }, H.pack(t:start()))
    H.assert_values({ nil, "Thread already started.", n = 2 }, H.pack(t:start(true, true)))
    t:join()
  end)

  it("still refuses a second start after the thread was joined", function()
    local t = llthreads.new("return")
    t:start()
    t:join()
    H.assert_values({ nil, "Thread already started.", n = 2 }, H.pack(t:start()))
  end)

  describe("started(), detached(), joinable()", function()
    it("are all false before start", function()
      local t = llthreads.new("return")
      assert.are.equal(false, t:started())
      assert.are.equal(false, t:detached())
      assert.are.equal(false, t:joinable())
    end)

    -- args: what start() is given; n counts explicitly given arguments,
    -- because an explicit nil joinable is read as false, not as absent.
    local cases = {
      { label = "start()",             n = 0, args = {},              detached = false, joinable = true },
      { label = "start(false)",        n = 1, args = { false },       detached = false, joinable = true },
      { label = "start(false, false)", n = 2, args = { false, false }, detached = false, joinable = false },
      { label = "start(true)",         n = 1, args = { true },        detached = true,  joinable = false },
      { label = "start(true, true)",   n = 2, args = { true, true },  detached = true,  joinable = true },
      { label = "start(1) (any value reads as a boolean)", n = 1, args = { 1 }, detached = true, joinable = false },
      { label = "start(nil, 0)",       n = 2, args = { nil, 0 },      detached = false, joinable = true },
      { label = "start(false, nil) (a given nil reads as false)", n = 2, args = { false, nil },
        detached = false, joinable = false },
    }
    for _, case in ipairs(cases) do
      it("report detached=" .. tostring(case.detached) .. ", joinable=" .. tostring(case.joinable)
         .. " after " .. case.label, function()
        local t = llthreads.new("return")
        t:start(H.unpack(case.args, 1, case.n))
        assert.are.equal(true, t:started())
        assert.are.equal(case.detached, t:detached())
        assert.are.equal(case.joinable, t:joinable())
        if case.joinable then t:join() end
      end)
    end
  end)
end)

describe("start modes", function()
  after_each(H.cleanup)

  describe("attached and joinable: start() or start(false, true)", function()
    it("join waits and returns true and the chunk's values", function()
      local done = H.tmpname()
      local t = llthreads.new(SLOW, done):start(false, true)
      H.assert_values({ true, "value", n = 2 }, H.pack(t:join()))
      assert.are.equal("finished", H.read_file(done))
    end)
  end)

  describe("attached and not joinable: start(false, false)", function()
    it("join waits for the thread and returns true", function()
      local done = H.tmpname()
      local t = llthreads.new(SLOW, done):start(false, false)
      assert.are.equal(true, (t:join()))
      assert.are.equal("finished", H.read_file(done))
    end)

    it("join a second time returns nil, 'Can't join a thread that has already been joined.'", function()
      local t = llthreads.new("return"):start(false, false)
      t:join()
      H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:join()))
    end)
  end)

  describe("detached and not joinable: start(true) or start(true, false)", function()
    it("runs the thread", function()
      local done = H.tmpname()
      llthreads.new(SLOW, done):start(true)
      assert.is_true(H.wait_file(done, 10))
      assert.are.equal("finished", H.read_file(done))
    end)

    it("join returns nil, 'Can't join a thread that has been detached.'", function()
      local done = H.tmpname()
      local t = llthreads.new(SLOW, done):start(true, false)
      H.assert_values({ nil, "Can't join a thread that has been detached.", n = 2 }, H.pack(t:join()))
      H.assert_values({ nil, "Can't join a thread that has been detached.", n = 2 }, H.pack(t:join(0)))
      assert.is_true(H.wait_file(done, 10))
    end)
  end)

  describe("detached and joinable: start(true, true)", function()
    it("join waits for the thread and returns true", function()
      local done = H.tmpname()
      local t = llthreads.new(SLOW, done):start(true, true)
      assert.are.equal(true, (t:join()))
      assert.are.equal("finished", H.read_file(done))
    end)

    it("join a second time returns nil, 'Can't join a thread that has already been joined.'", function()
      local t = llthreads.new("return"):start(true, true)
      t:join()
      H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:join()))
    end)
  end)

  it("runs many threads of every mode at once", function()
    local threads, files = {}, {}
    local modes = { { false, true }, { false, false }, { true, false }, { true, true } }
    for i = 1, 16 do
      local mode = modes[(i - 1) % 4 + 1]
      files[i] = H.tmpname()
      threads[i] = llthreads.new(H.child("local done, i = ... touch(done, tostring(i)) return i"), files[i], i)
        :start(mode[1], mode[2])
    end
    for i = 1, 16 do
      local mode = modes[(i - 1) % 4 + 1]
      if mode[2] then
        local ok, v = threads[i]:join()
        assert.are.equal(true, ok)
        if not mode[1] and mode[2] then assert.are.equal(i, v) end
      end
      assert.is_true(H.wait_file(files[i], 10))
      assert.are.equal(tostring(i), H.read_file(files[i]))
    end
  end)
end)
