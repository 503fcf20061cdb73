-- Thread objects cannot be forged. With `debug` any Lua code can put our metatable
-- on another library's userdata (an open file) and call our methods on it; they must
-- refuse it as a wrong self, never read its memory as one of ours. And the
-- trampoline every protected call runs through refuses any call but its own.
-- Each case runs in a sub-process, so a crash shows as a failed test.

local H = require "spec.helper"

local survives = H.survives

describe("a forged thread object", function()
  after_each(H.cleanup)

  it("(regression: file userdata given the thread metatable) is refused by every method", function()
    local out = survives([[
      local llthreads = require "llthreads"
      local mt = debug.getmetatable(llthreads.new("return 1"))
      local f = io.tmpfile()
      local file_mt = debug.getmetatable(f)
      debug.setmetatable(f, mt)
      for _, name in ipairs({ "start", "join", "alive", "started", "detached", "joinable", "interrupt" }) do
        local ok, err = pcall(mt.__index[name], f)
        assert(not ok and tostring(err):find("LLThread expected", 1, true), name .. ": " .. tostring(err))
      end
      -- __tostring refuses it too; __gc leaves it alone (a finalizer never raises)
      local ok, err = pcall(mt.__tostring, f)
      assert(not ok and tostring(err):find("LLThread expected", 1, true), "__tostring: " .. tostring(err))
      assert(pcall(mt.__gc, f))
      debug.setmetatable(f, file_mt)
      f:close()
      print("refused")
    ]])
    H.assert_contains(out, "refused")
  end)
end)

describe("a table given the thread metatable", function()
  after_each(H.cleanup)

  it("(regression: its finalizer raised, and 5.2/5.3 raised that in unrelated code) is collected quietly", function()
    local out = survives([[
      local llthreads = require "llthreads"
      local mt = debug.getmetatable(llthreads.new("return 1"))
      for _ = 1, 10 do setmetatable({}, mt) end
      collectgarbage()
      collectgarbage()
      local after = {}
      for i = 1, 1000 do after[i] = { i } end
      print("collected quietly")
    ]])
    H.assert_contains(out, "collected quietly")
    H.assert_not_contains(out, "__gc")
  end)
end)

describe("the protected-call trampoline", function()
  after_each(H.cleanup)

  it("(regression: debug.getinfo(2, 'f').func() in a child segfaulted) is not on a chunk's stack", function()
    -- The chunk used to run inside the trampoline, which handed it out to
    -- debug.getinfo; now the chunk is its state's bottom frame.
    local out = survives([[
      local llthreads = require "llthreads"
      local t = llthreads.new("return debug.getinfo(2, 'f') == nil, debug.getinfo(1, 'S').what")
      local ok, bottom, what = t:start():join()
      assert(ok == true and bottom == true and what == "main", ("%s %s %s"):format(tostring(ok), tostring(bottom), tostring(what)))
      print("bottom frame")
    ]])
    H.assert_contains(out, "bottom frame")
  end)

  it("refuses a call made from a hook with the argument of a real call", function()
    -- A call hook sees the trampoline's frame just before it runs, argument 1
    -- included (debug.getlocal): calling it with that argument from the hook must
    -- not run the library's body a second time, or on the hook's stack.
    local out = survives([[
      local llthreads = require "llthreads"
      local t = llthreads.new([=[
        local llthreads = require "llthreads"
        local tried, busy = 0, false
        debug.sethook(function()
          if busy then return end
          busy = true
          local info = debug.getinfo(2, "fS")
          if info and info.what == "C" then
            local _, arg1 = debug.getlocal(2, 1)
            if type(arg1) == "userdata" and not debug.getmetatable(arg1) then
              tried = tried + 1
              pcall(info.func, arg1)
            end
          end
          busy = false
        end, "c")
        local r = { llthreads.new("return 7, 8"):start():join() }
        debug.sethook()
        return tried, r[1], r[2], r[3]
      ]=])
      local ok, tried, jok, a, b = t:start():join()
      assert(ok == true, tostring(tried))
      assert(tried > 0, "the hook never saw the trampoline")
      assert(jok == true and a == 7 and b == 8, ("inner join gave %s %s %s"):format(tostring(jok), tostring(a), tostring(b)))
      print("tried " .. tried)
    ]])
    H.assert_contains(out, "tried ")
  end)

  if H.flavour == "5.1" or H.is_jit then
    it("in the registry (5.1, LuaJIT) refuses calls from the parent", function()
      local out = survives([[
        local llthreads = require "llthreads"
        llthreads.new("return 1"):start():join()
        local found = 0
        for k, v in pairs(debug.getregistry()) do
          if type(v) == "function" and debug.getinfo(v, "S").what == "C" and type(k) == "userdata" then
            for _, args in ipairs({ {}, { k }, { "x", 1 } }) do
              local ok, err = pcall(v, (table.unpack or unpack)(args))
              if not ok and tostring(err):find("not callable from Lua", 1, true) then found = found + 1 end
            end
          end
        end
        assert(found >= 3, "trampoline not found in the registry: " .. found)
        print("found " .. found)
      ]])
      H.assert_contains(out, "found ")
    end)
  end
end)
