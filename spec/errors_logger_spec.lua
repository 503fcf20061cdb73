local H = require "spec.helper"

local llthreads = require "llthreads"

local PREFIX = "Error from child thread: "

-- Child code that installs a logger writing each message to the file named
-- by its first argument, then runs `body`.
local function logging(body)
  return "local log_path = ... "
    .. "require('llthreads').set_logger(function(msg) "
    .. "local f = assert(io.open(log_path .. '.part', 'wb')) f:write(msg) f:close() "
    .. "assert(os.rename(log_path .. '.part', log_path)) end) "
    .. body
end

describe("an error in the thread's chunk", function()
  after_each(H.cleanup)

  it("makes join() return false, 'Error from child thread: ' .. message", function()
    local ok, err = llthreads.new(H.quiet("error('boom')")):start():join()
    assert.are.equal(false, ok)
    assert.are.equal(PREFIX, err:sub(1, #PREFIX))
    H.assert_contains(err, "]:1: boom")
  end)

  it("carries a stack traceback in the message", function()
    local ok, err = llthreads.new(H.quiet("local function inner() error('deep') end inner()")):start():join()
    assert.are.equal(false, ok)
    H.assert_contains(err, "deep")
    H.assert_contains(err, "stack traceback:")
  end)

  it("gives join() false and a string for a table error", function()
    local got = H.pack(llthreads.new(H.quiet("error({ code = 1 })")):start():join())
    assert.are.equal(2, got.n)
    assert.are.equal(false, got[1])
    assert.are.equal("string", type(got[2]))
  end)

  it("gives join() false and a string for a nil error", function()
    local got = H.pack(llthreads.new(H.quiet("error()")):start():join())
    assert.are.equal(false, got[1])
    assert.are.equal("string", type(got[2]))
  end)

  it("leaves the thread joinable only once", function()
    local t = llthreads.new(H.quiet("error('x')")):start()
    assert.are.equal(false, (t:join()))
    H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, H.pack(t:join()))
  end)

  it("still gives join() true first in the modes where the child closes its own state", function()
    assert.are.equal(true, (llthreads.new(H.quiet("error('x')")):start(false, false):join()))
    assert.are.equal(true, (llthreads.new(H.quiet("error('x')")):start(true, true):join()))
  end)
end)

describe("llthreads.set_logger(fn)", function()
  after_each(H.cleanup)

  it("passes 'Error from thread: ' .. message to the child's logger", function()
    local log = H.tmpname()
    local ok = llthreads.new(logging("error('logged failure')"), log):start():join()
    assert.are.equal(false, ok)
    local msg = H.read_file(log)
    assert.are.equal("Error from thread: ", msg:sub(1, #"Error from thread: "))
    H.assert_contains(msg, "logged failure")
    H.assert_contains(msg, "stack traceback:")
  end)

  it("passes 'Error from thread: (no error message)' for a non-string error", function()
    local log = H.tmpname()
    llthreads.new(logging("error({})"), log):start():join()
    assert.are.equal("Error from thread: (no error message)", H.read_file(log))
  end)

  it("is not called when the chunk succeeds", function()
    local log = H.tmpname()
    H.assert_values({ true, "fine", n = 2 }, H.pack(llthreads.new(logging("return 'fine'"), log):start():join()))
    assert.is_false(H.exists(log))
  end)

  for _, mode in ipairs({ { false, false }, { true, false }, { true, true } }) do
    it(("reports errors of a thread started with start(%s, %s)"):format(tostring(mode[1]), tostring(mode[2])), function()
      local log = H.tmpname()
      local t = llthreads.new(logging("error('mode failure')"), log):start(mode[1], mode[2])
      if mode[2] then t:join() end
      assert.is_true(H.wait_file(log, 10))
      H.assert_contains(H.read_file(log), "mode failure")
    end)
  end

  it("swallows an error raised by the logger itself", function()
    local code = H.child("local done = ... "
      .. "require('llthreads').set_logger(function(msg) touch(done) error('logger broke') end) "
      .. "error('original failure')")
    local done = H.tmpname()
    local ok, err = llthreads.new(code, done):start():join()
    assert.are.equal(false, ok)
    H.assert_contains(err, "original failure")
    H.assert_not_contains(err, "logger broke")
    assert.is_true(H.exists(done))

    -- A thread whose state the child closes must end normally too.
    local done2 = H.tmpname()
    assert.are.equal(true, (llthreads.new(code, done2):start(true, true):join()))
    assert.is_true(H.exists(done2))
  end)

  it("raises 'function expected' for a non-function", function()
    for _, bad in ipairs({ 42, "print", {}, true }) do
      local ok, err = pcall(llthreads.set_logger, bad)
      assert.is_false(ok)
      H.assert_contains(err, "function expected")
    end
    local ok, err = pcall(llthreads.set_logger)
    assert.is_false(ok)
    H.assert_contains(err, "function expected")
  end)
end)

describe("without a logger", function()
  after_each(H.cleanup)

  it("writes 'Error from thread: ' .. message to stderr", function()
    local code, out = H.run_lua([[
      local llthreads = require "llthreads"
      local ok = llthreads.new("error('to stderr')"):start():join()
      io.stdout:write("joined ", tostring(ok), "\n")
    ]])
    assert.are.equal(0, code, out)
    H.assert_contains(out, "Error from thread: ")
    H.assert_contains(out, "to stderr")
    H.assert_contains(out, "joined false")
  end)

  it("does not use a logger set in the parent state", function()
    local code, out = H.run_lua([[
      local llthreads = require "llthreads"
      llthreads.set_logger(function(msg) io.stdout:write("PARENT LOGGER: ", msg, "\n") end)
      local ok = llthreads.new("error('child only')"):start():join()
      io.stdout:write("joined ", tostring(ok), "\n")
    ]])
    assert.are.equal(0, code, out)
    H.assert_contains(out, "Error from thread: ")
    H.assert_contains(out, "child only")
    H.assert_not_contains(out, "PARENT LOGGER")
  end)
end)
