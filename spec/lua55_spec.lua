-- What Lua 5.5 changed that a program using llthreads on 5.5 can see: memory-limited
-- states (5.5's lua_newstate takes a seed; the allocator contract), interrupts in
-- coroutines that close themselves (5.5's coroutine.close() of the running coroutine),
-- to-be-closed variables closed by lua_closethread, the collector's modes and
-- parameters (5.5's collectgarbage("param", ...)), read-only loop variables and
-- `global` declarations in the code `new` compiles, number-to-text conversion (5.5
-- writes floats with the digits that read back exactly), and integers in copies.
-- `warn` (on from the start in 5.5's states, limited ones too) is in messages_spec.
--
-- These are Lua 5.5's own features: the cases run on 5.5 only. On the other flavours
-- one case checks that the interpreter is not 5.5, so a misconfigured run shows.

local H = require "spec.helper"
local llthreads = require "llthreads"

if H.flavour ~= "5.5" then
  describe("Lua 5.5 changes", function()
    it("(Lua 5.5 only: this flavour is " .. H.flavour .. ")", function()
      assert.are_not.equal("Lua 5.5", _VERSION)
    end)
  end)
  return
end

local BUSY = "local function busy(n) for i = 1, n do os.clock() end end "
local SPIN = "local function spin(s) local deadline = os.time() + s while os.time() < deadline do busy(100) end end "

local function run(code, ...)
  return H.pack(llthreads.new(code, ...):start():join())
end

-- Starts `code`, which touches its first argument once it is where the spec wants
-- it, waits for that, and a little longer so that it is well inside.
local function start_and_wait(code)
  local ready = H.tmpname()
  local t = llthreads.new(H.quiet(H.child(BUSY .. SPIN .. code)), ready):start()
  assert.is_true(H.wait_file(ready, 10), "the child did not get ready")
  H.sleep(0.1)
  return t
end

describe("Lua 5.5: a memory-limited state", function()
  after_each(function()
    llthreads.set_memory_limit(nil)
    H.cleanup()
  end)

  -- lua_newstate(alloc, ud, seed): the limited state is made with the library's
  -- allocator and the seed the host's luaL_makeseed gives, as luaL_newstate does.
  it("runs code, refuses growth past the limit with 'not enough memory', and goes on", function()
    llthreads.set_memory_limit(4 * 1024 * 1024)
    local got = run([[
      local t = {}
      for i = 1, 1000 do t["key" .. i] = i end
      local ok, err = pcall(string.rep, "x", 8 * 1024 * 1024)
      local n = 0
      for _ in pairs(t) do n = n + 1 end
      return n, ok, err
    ]])
    H.assert_values({ true, 1000, false, "not enough memory", n = 4 }, got)
  end)

  -- The allocator contract: a refused allocation returns NULL and changes nothing,
  -- so Lua can run an emergency collection and try again. With the collector
  -- stopped, only that retry lets the child reuse the memory of its garbage.
  it("collects its garbage when an allocation is refused, even with the collector stopped", function()
    llthreads.set_memory_limit(8 * 1024 * 1024)
    local got = run([[
      collectgarbage("stop")
      for i = 1, 64 do
        local s = string.rep(string.char(65 + i % 26), 1024 * 1024)
        if #s ~= 1024 * 1024 then return "short" end
      end
      return collectgarbage("isrunning"), collectgarbage("count") < 8 * 1024
    ]])
    H.assert_values({ true, false, true, n = 3 }, got)
  end)

  it("in generational mode still refuses growth cleanly", function()
    llthreads.set_memory_limit(4 * 1024 * 1024)
    local got = run([[
      local previous = collectgarbage("generational")
      local keep = {}
      local ok, err = pcall(function()
        for i = 1, 1e6 do keep[i] = { i } end
      end)
      keep = nil
      collectgarbage()
      return previous, ok, err, #string.rep("y", 1024)
    ]])
    H.assert_values({ true, "incremental", false, "not enough memory", 1024, n = 5 }, got)
  end)
end)

describe("Lua 5.5: interrupts and closing coroutines", function()
  after_each(H.cleanup)

  -- New in 5.5: coroutine.close() with no argument closes the running coroutine,
  -- running its pending __close handlers in it before it ends.
  it("reach a __close handler run by coroutine.close() of the running coroutine", function()
    local t = start_and_wait([[
      local ready = ...
      local co = coroutine.wrap(function()
        local guard <close> = setmetatable({}, { __close = function() touch(ready) spin(10) end })
        coroutine.close()
        return "after close"
      end)
      return pcall(co)
    ]])
    t:interrupt()
    -- The error ends the closing coroutine and comes out of the wrapped function.
    local got = H.pack(t:join(4000))
    H.assert_values({ true, false, n = 2 }, { n = 2, got[1], got[2] })
    H.assert_contains(got[3], llthreads.interrupted_error)
  end)

  it("leave coroutine.close() of the running coroutine as the stock one: handlers run, it ends", function()
    local code = [[
      local log = {}
      local co = coroutine.wrap(function()
        local guard <close> = setmetatable({}, { __close = function() log[#log + 1] = "closed" end })
        coroutine.close()
        log[#log + 1] = "not reached"
      end)
      local r = { pcall(co) }
      return #r, r[1], table.concat(log, ",")
    ]]
    H.assert_values({ 1, true, "closed", n = 3 }, H.pack(assert(load(code))()))
    H.assert_values({ true, 1, true, "closed", n = 4 }, run(code))
  end)

  -- A wrapped coroutine that fails is closed with lua_closethread (5.5 has no
  -- lua_resetthread): its __close handlers run and may replace the error, exactly
  -- as with the stock coroutine.wrap.
  it("leave coroutine.wrap's closing of a failed coroutine as the stock one does", function()
    local code = [[
      local f = coroutine.wrap(function()
        local guard <close> = setmetatable({}, { __close = function(_, e) error("closed after " .. tostring(e), 0) end })
        error("body failed", 0)
      end)
      return pcall(f)
    ]]
    local stock = H.pack(assert(load(code))())
    H.assert_values({ false, "closed after body failed", n = 2 }, stock)
    H.assert_values({ true, false, "closed after body failed", n = 3 }, run(code))
  end)

  it("reach a __close handler that coroutine.wrap runs for a failed coroutine", function()
    local t = start_and_wait([[
      local ready = ...
      local f = coroutine.wrap(function()
        local guard <close> = setmetatable({}, { __close = function() touch(ready) spin(10) end })
        error("body failed", 0)
      end)
      return pcall(f)
    ]])
    t:interrupt()
    local got = H.pack(t:join(4000))
    H.assert_values({ true, false, n = 2 }, { n = 2, got[1], got[2] })
    H.assert_contains(got[3], llthreads.interrupted_error)
  end)
end)

describe("Lua 5.5: the collector of a child", function()
  after_each(function()
    collectgarbage("incremental")
    H.cleanup()
  end)

  -- Each state has its own collector: a child starts in the library's default
  -- (incremental, 5.5's default parameters) whatever the parent set for itself.
  it("starts incremental with 5.5's defaults, whatever the parent uses", function()
    local fresh = run([[
      return collectgarbage("param", "pause"), collectgarbage("param", "stepmul"),
        collectgarbage("param", "stepsize")
    ]])
    collectgarbage("generational")
    collectgarbage("param", "pause", 100)
    finally(function() collectgarbage("param", "pause", fresh[2]) end)
    local got = run([[
      return collectgarbage("incremental"), collectgarbage("param", "pause"),
        collectgarbage("param", "stepmul"), collectgarbage("param", "stepsize")
    ]])
    H.assert_values({ true, "incremental", fresh[2], fresh[3], fresh[4], n = 5 }, got)
    assert.are.equal(250, fresh[2]) -- LUAI_GCPAUSE
  end)

  it("refuses the options 5.5 removed, with Lua's own error", function()
    local got = run("return pcall(collectgarbage, 'setpause', 100)")
    assert.are.equal(true, got[1])
    assert.are.equal(false, got[2])
    H.assert_contains(got[3], "invalid option 'setpause'")
  end)
end)

describe("Lua 5.5: the code new compiles", function()
  after_each(H.cleanup)

  it("refuses an assignment to a for loop's variable, with the compiler's message", function()
    H.assert_error("attempt to assign to const variable 'i'", llthreads.new,
      "for i = 1, 3 do i = i + 1 end")
  end)

  it("refuses a name not declared after a global declaration", function()
    H.assert_error("variable 'y' not declared", llthreads.new, "global x; y = 1")
  end)

  it("runs global declarations, and sees the child's own globals only", function()
    x = "parent's"
    finally(function() x = nil end)
    H.assert_values({ true, 6, "nil", n = 3 }, run([[
      global print, type, x
      global counter = 0
      for i = 1, 3 do counter = counter + i end
      return counter, type(x)
    ]]))
  end)

  -- An integer bound stays an integer in the copy: a loop up to math.maxinteger
  -- counts exactly (a float bound would round to 2^63 and the loop run never).
  it("counts an integer loop up to math.maxinteger with a copied bound", function()
    local from = math.maxinteger - 2
    H.assert_values({ true, 3, "integer", n = 3 }, run([[
      local from = ...
      local n = 0
      for i = from, math.maxinteger do n = n + 1 end
      return n, math.type(from)
    ]], from))
  end)
end)

describe("Lua 5.5: numbers and text across states", function()
  after_each(H.cleanup)

  -- 5.5 writes a float with the digits that read back to the same number (5.4:
  -- 14 significant digits). Copies move numbers, never text: the child prints
  -- exactly what the parent prints.
  it("a float arrives exactly, and converts to the same text in the child", function()
    local x = 1 / 3
    assert.are.equal("0.33333333333333331", tostring(x))
    local got = run("local x = ... return x, tostring(x), math.type(x), tostring(2^53), math.type(2^53)", x)
    H.assert_values({ true, x, "0.33333333333333331", "float", "9007199254740992.0", "float", n = 6 }, got)
    assert.is_true(rawequal(x, got[2]))
  end)

  it("a number raised as the error reaches join as 5.5 writes it", function()
    local got = run(H.quiet("error(1 / 3, 0)"))
    assert.are.equal(false, got[1])
    local text = "Error from child thread: 0.33333333333333331\n"
    assert.are.equal(text, got[2]:sub(1, #text))
  end)

  it("a numeric string stays a string; arithmetic in the child converts it as 5.5 does", function()
    local got = run("local s = ... return type(s), s + 1, math.type(s + 1), s * 1.5", "10")
    H.assert_values({ true, "string", 11, "integer", 15.0, n = 5 }, got)
  end)
end)

-- The 5.5 interpreter the tests run on is the project's own (tools/lua55/host.c: Debian
-- has no lua5.5 and lua-src ships no lua.c). It does what the stock one (5.5.0's lua.c)
-- does for what programs and the tests use.
describe("Lua 5.5: the project's interpreter behaves as the stock one", function()
  local function lua(args, env)
    return H.run(H.lua_env() .. " " .. (env or "") .. " " .. H.shq(H.lua) .. " " .. args)
  end

  it("gives a script its arguments in arg and as ...", function()
    local script = H.tmpname() .. ".lua"
    H.write_file(script, "io.write(#arg, ' ', arg[0], ' ', arg[1], ' ', select('#', ...), ' ', (...))")
    finally(function() os.remove(script) end)
    local code, out = lua(H.shq(script) .. " a b")
    assert.are.equal(0, code, out)
    assert.are.equal("2 " .. script .. " a 2 a", out)
  end)

  it("runs -e and -l in order, after LUA_INIT_5_5, which wins over LUA_INIT", function()
    local code, out = lua("-l string -e \"io.write(string.upper('e'), X)\"",
      "LUA_INIT='X = 1' LUA_INIT_5_5='io.write(\"init \") X = 2'")
    assert.are.equal(0, code, out)
    assert.are.equal("init E2", out)
  end)

  it("ignores the LUA_ variables with -E", function()
    local code, out = lua("-E -e \"io.write(tostring(X))\"", "LUA_INIT_5_5='X = 2'")
    assert.are.equal(0, code, out)
    assert.are.equal("nil", out)
  end)

  it("reports an error with the program's name and a traceback, and exits 1", function()
    local code, out = lua("-e \"error('boom')\"")
    assert.are.equal(1, code)
    H.assert_contains(out, ": (command line):1: boom")
    H.assert_contains(out, "stack traceback:")
  end)

  it("keeps warnings off unless -W, as lua.c; LUA_INIT runs before they go off", function()
    local _, off = lua("-e \"warn('hidden')\"")
    assert.are.equal("", off)
    local _, on = lua("-W -e \"warn('shown')\"")
    assert.are.equal("Lua warning: shown\n", on)
    local _, init = lua("-e \"warn('hidden')\"", "LUA_INIT_5_5=\"warn('from init')\"")
    assert.are.equal("Lua warning: from init\n", init)
  end)

  it("runs the collector in generational mode, as lua.c", function()
    local code, out = lua("-e \"io.write(collectgarbage('incremental'))\"")
    assert.are.equal(0, code, out)
    assert.are.equal("generational", out)
  end)
end)
