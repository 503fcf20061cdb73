-- How a send or a receive tells a channel from any other value. The block of a
-- channel's userdata carries a tag that only this library writes, and the tag alone
-- decides (comparing the metatable too took a registry lookup on every call, a
-- quarter of the time of a one-number message): a channel stays a channel whatever
-- metatable Lua code gives it, and no other userdata passes for one, even one of the
-- same size carrying the channel metatable. Forged cases run in a sub-process, so a
-- crash shows as a failed test.

local H = require "spec.helper"

local llthreads = require "llthreads"

local survives = H.survives

describe("a channel", function()
  after_each(H.cleanup)

  it("(regression: refused as 'llthreads.channel expected') is still one after Lua code replaced its metatable", function()
    local ch = llthreads.channel()
    local mt = debug.getmetatable(ch)
    local methods = mt.__index
    debug.setmetatable(ch, {})
    local ok, err = pcall(methods.send, ch, 42)
    local got = ok and methods.receive(ch, 0)
    local len = methods.len(ch)
    debug.setmetatable(ch, mt)
    assert(ok, tostring(err))
    assert.are.equal(42, got)
    assert.are.equal(0, len)
    -- still the same channel: its copy in another state comes back as this value
    local done, back = llthreads.new("return ...", ch):start():join()
    assert.is_true(done)
    assert.are.equal(ch, back)
  end)

  it("is never an open file given the channel metatable, though its block has the same size", function()
    local out = survives([[
      local llthreads = require "llthreads"
      local mt = debug.getmetatable(llthreads.channel())
      local f = io.tmpfile()
      local file_mt = debug.getmetatable(f)
      debug.setmetatable(f, mt)
      for _, name in ipairs({ "send", "receive", "close", "len", "capacity", "closed" }) do
        local ok, err = pcall(mt.__index[name], f, 1)
        assert(not ok and tostring(err):find("llthreads.channel expected", 1, true), name .. ": " .. tostring(err))
      end
      local ok, err = pcall(llthreads.select, { f }, 0)
      assert(not ok and tostring(err):find("llthreads.channel, thread or task expected", 1, true), "select: " .. tostring(err))
      -- its finalizer leaves it alone (a finalizer never raises)
      assert(pcall(mt.__gc, f))
      debug.setmetatable(f, file_mt)
      f:write("still a file")
      f:seek("set")
      assert(f:read("*a") == "still a file")
      f:close()
      print("refused")
    ]])
    H.assert_contains(out, "refused")
  end)
end)
