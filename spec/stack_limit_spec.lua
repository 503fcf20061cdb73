-- How many values cross between states: as many as the Lua stacks hold. The
-- library takes no stack room of its own beyond a slot, so `new` takes every
-- argument its caller can pass and `join` gives every value the chunk can return,
-- as in the C original (which takes one more of the child's slots for arguments,
-- and one more of the parent's for results).

local H = require "spec.helper"
local llthreads = require "llthreads"

local unpack = H.unpack

-- 1..n
local function range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

if H.flavour == "5.1" or H.is_jit then
  -- Here a C function's stack holds 8,000 values (LUAI_MAXCSTACK), counted per
  -- call: `unpack(t)` gives at most 7,999, and the child's base level holds the
  -- message handler, the results and two slots for the copy (as many results as
  -- the C original hands over: 7,997).
  describe("values crossing at the stack's limit (5.1, LuaJIT: 8,000 slots)", function()
    it("new() takes 7,999 arguments, all that unpack(t) can give its caller", function()
      local t = llthreads.new("return select('#', ...), select(7999, ...)", unpack(range(7999)))
      H.assert_values({ true, 7999, 7999, n = 3 }, H.pack(t:start():join()))
    end)

    it("join() gives all 7,997 values a chunk returns", function()
      local t = llthreads.new("local t = {} for i = 1, 7997 do t[i] = i end return unpack(t)")
      local r = H.pack(t:start():join())
      assert.are.equal(7998, r.n)
      assert.are.equal(true, r[1])
      for i = 1, 7997 do H.expect(r[i + 1] == i, "value %d is %s", i, r[i + 1]) end
    end)

    it("one value more than the stack holds is an error, not a crash", function()
      local t = llthreads.new(H.quiet("local t = {} for i = 1, 7998 do t[i] = i end return unpack(t)"))
      H.assert_values({ false, "Error from child thread: stack overflow (no room for results)", n = 2 },
        H.pack(t:start():join()))
    end)
  end)
else
  -- Here a stack holds 1,000,000 values in all (LUAI_MAXSTACK), counted over every
  -- call on it, so the figures depend on how deep the caller is: a fresh
  -- interpreter runs them. The C original reaches 999,961 arguments (where the
  -- caller's own `unpack` stops) and 999,958 results (where the caller's `select`
  -- stops), both at a shallow level like this script's.
  describe("values crossing near the stack's limit (5.2+: 1,000,000 slots)", function()
    local N = 999950

    it(("new() takes %d arguments"):format(N), function()
      -- The child looks at its arguments with debug.getlocal, which does not copy
      -- them (`...` would: twice as many do not fit).
      local code, out = H.run_lua(([[
        local llthreads = require "llthreads"
        local t = {}
        for i = 1, %d do t[i] = i end
        local th = llthreads.new(
          "local _, last = debug.getlocal(1, -%d) return last, debug.getlocal(1, -%d) == nil",
          table.unpack(t))
        t = nil
        local ok, last, no_more = th:start():join()
        io.write("joined ", tostring(ok), ", the last ", tostring(last), ", no more ", tostring(no_more), "\n")
      ]]):format(N, N, N + 1))
      assert.are.equal(0, code, out)
      H.assert_contains(out, ("joined true, the last %d, no more true"):format(N))
    end)

    it(("join() gives all %d values a chunk returns"):format(N), function()
      local code, out = H.run_lua(([[
        local llthreads = require "llthreads"
        local src = "local t = {} for i = 1, %d do t[i] = i end return table.unpack(t)"
        local n = select("#", llthreads.new(src):start():join())
        local last = select(-1, llthreads.new(src):start():join())
        io.write("got ", n, " values, the last ", tostring(last), "\n")
      ]]):format(N))
      assert.are.equal(0, code, out)
      H.assert_contains(out, ("got %d values, the last %d"):format(N + 1, N))
    end)
  end)
end
