-- llthreads.spawn([options,] fn, ...): a thread that runs a Lua function, copied with
-- its upvalues. Copying follows the rules of new's arguments (tables shared within
-- one copy stay shared, cycles survive, at most 30 levels), plus functions: each is
-- its bytecode (debug information kept) and its upvalues, copied by value; a function
-- met twice is one function in the copy; upvalues shared by closures stay shared
-- where the flavour can join them (5.2+ and LuaJIT); the global table becomes the
-- other state's. The same holds for join's results and for channel messages.

local H = require "spec.helper"

local llthreads = require "llthreads"

local function run(...)
  return H.pack(llthreads.spawn(...):join())
end

describe("llthreads.spawn", function()
  after_each(H.cleanup)

  it("runs fn(...) on a new thread and returns the thread object, started", function()
    local t = llthreads.spawn(function(a, b) return a + b, "done" end, 40, 2)
    assert.are.equal("userdata", type(t))
    assert.is_true(t:started())
    assert.is_false(t:detached())
    assert.is_true(t:joinable())
    H.assert_values({ true, 42, "done" }, H.pack(t:join()))
    local again = H.pack(t:join())
    H.assert_values({ nil, "Can't join a thread that has already been joined.", n = 2 }, again)
  end)

  it("copies upvalues of every copyable type by value", function()
    local none, yes, int, float, str = nil, true, 7, 2.5, "text\0bytes"
    local tbl = { 1, 2, { deep = "x" } }
    local ch = llthreads.channel()
    local cfn = string.rep
    local got = run(function()
      return none, yes, int, float, str, tbl[3].deep, #tbl, cfn("ab", 2), ch
    end)
    H.assert_values({ true, nil, true, 7, 2.5, "text\0bytes", "x", 3, "abab", ch, n = 10 }, got)
    if H.has_integers then
      assert.are.equal("integer", math.type(got[4]))
      assert.are.equal("float", math.type(got[5]))
    end
  end)

  it("copies by value: the child's changes do not reach the parent's upvalues", function()
    local t = { n = 1 }
    local count = 10
    H.assert_values({ true, 2, 11 }, run(function() t.n = t.n + 1; count = count + 1; return t.n, count end))
    assert.are.equal(1, t.n)
    assert.are.equal(10, count)
  end)

  it("keeps a table shared between upvalues and arguments one table, cycles included", function()
    local shared = { name = "s" }
    shared.self = shared
    local other = { link = shared }
    local got = run(function(arg)
      return arg == shared, other.link == shared, shared.self == shared
    end, shared)
    H.assert_values({ true, true, true, true }, got)
  end)

  it("runs a recursive local function (its own upvalue)", function()
    local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
    H.assert_values({ true, 55 }, run(function() return fib(10) end))
  end)

  it("copies nested functions with their own upvalues", function()
    local base = 100
    local function make(k) return function(x) return base + k * x end end
    local add3 = make(3)
    H.assert_values({ true, 112 }, run(function() return add3(4) end))
  end)

  if H.flavour == "5.1" then
    it("gives each closure its own copy of a shared upvalue on Lua 5.1, which cannot join them", function()
      local function counter()
        local c = 0
        return function() c = c + 1 end, function() return c end
      end
      local inc, get = counter()
      H.assert_values({ true, 0 }, run(function() inc(); inc(); return get() end))
    end)
  else
    it("keeps an upvalue shared by two closures shared in the copy", function()
      local function counter()
        local c = 0
        return function() c = c + 1 end, function() return c end
      end
      local inc, get = counter()
      H.assert_values({ true, 2 }, run(function() inc(); inc(); return get() end))
      -- and across a function reached only through a table
      local funcs = { inc = inc, get = get }
      H.assert_values({ true, 3 }, run(function() funcs.inc(); funcs.inc(); funcs.inc(); return funcs.get() end))
    end)
  end

  it("gives the function the child's globals, not a copy of the parent's", function()
    PARENT_ONLY_GLOBAL = "parent"
    local got = run(function()
      CHILD_GLOBAL = 1
      return PARENT_ONLY_GLOBAL, _G == _G._G, type(string.format), CHILD_GLOBAL
    end)
    PARENT_ONLY_GLOBAL = nil
    H.assert_values({ true, nil, true, "function", 1, n = 5 }, got)
    assert.is_nil(CHILD_GLOBAL)
  end)

  it("maps the global table met as an upvalue or inside a value to the child's", function()
    local G = _G
    local holder = { g = _G }
    H.assert_values({ true, true, true }, run(function() return G == _G, holder.g == _G end))
  end)

  it("gives the child's globals to a function whose _ENV (5.1: environment) is a sandbox", function()
    local sandbox = { x = 5 }
    local f
    if setfenv then
      f = setfenv(function() return x, print ~= nil end, sandbox)
    else
      f = load("return function() return x, print ~= nil end", "=sandboxed", "t", sandbox)()
    end
    H.assert_values({ 5, false }, H.pack(f()))
    H.assert_values({ true, nil, true, n = 3 }, run(function() return f() end))
  end)

  it("carries C functions by name where no plain pointer can travel (math.floor, require)", function()
    local floor, insert, req, rep = math.floor, table.insert, require, string.rep
    local got = run(function()
      local t = {}
      insert(t, floor(3.7))
      return t[1], req("string") == string, rep("x", 3)
    end)
    H.assert_values({ true, 3, true, "xxx" }, got)
  end)

  it("refuses an uncopyable upvalue, naming the function and the upvalue", function()
    local handle = io.stdout
    local line = debug.getinfo(1, "l").currentline + 1
    local function uses_handle() return handle end
    local ok, err = pcall(llthreads.spawn, uses_handle)
    assert.is_false(ok)
    H.assert_contains(err, "bad argument #1")
    H.assert_contains(err, ("upvalue 'handle' of function %s:%d: a userdata cannot be copied")
      :format(debug.getinfo(1, "S").short_src, line))
  end)

  it("refuses a coroutine, also nested in an upvalue's table", function()
    local co = coroutine.create(function() end)
    local cfg = { inner = { co } }
    local ok, err = pcall(llthreads.spawn, function() return cfg end)
    assert.is_false(ok)
    H.assert_contains(err, "upvalue 'cfg' of function ")
    H.assert_contains(err, "a coroutine cannot be copied")
    local ok2, err2 = pcall(llthreads.spawn, function(...) return ... end, co)
    assert.is_false(ok2)
    H.assert_contains(err2, "bad argument #2")
    H.assert_contains(err2, "a coroutine cannot be copied")
  end)

  it("refuses a thread object (a userdata) as an argument", function()
    local t = llthreads.new("return 1")
    local ok, err = pcall(llthreads.spawn, function() end, t)
    assert.is_false(ok)
    H.assert_contains(err, "a userdata cannot be copied")
  end)

  it("reports an error as join does for a chunk, with the function's own source and line", function()
    local line = debug.getinfo(1, "l").currentline + 1
    local t = llthreads.spawn(function() error("boom") end)
    local got = H.pack(t:join())
    assert.is_false(got[1])
    local where = ("%s:%d: boom"):format(debug.getinfo(1, "S").short_src, line)
    assert.are.equal(1, select(2, got[2]:gsub("^Error from child thread: ", "")))
    H.assert_contains(got[2], where)
    H.assert_contains(got[2], "stack traceback:")
  end)

  it("keeps the function's own line numbers in its errors: the copy is never stripped", function()
    -- The copy keeps debug information even when the parent never asked for it.
    local f = loadstring and loadstring("return function()\n\n error('third') end", "=strip")
      or load("return function()\n\n error('third') end", "=strip")
    local got = H.pack(llthreads.spawn(f()):join())
    H.assert_contains(got[2], "strip:3: third")
  end)

  it("returns functions from join, which can be called, sent through a channel and called there", function()
    local ok, f = llthreads.spawn(function()
      local secret = 6
      return function(x) return x * secret end
    end):join()
    assert.is_true(ok)
    assert.are.equal(42, f(7))
    local ch = llthreads.channel()
    ch:send(f)
    local got = run(function() return ch:receive(5000)(10) end)
    H.assert_values({ true, 60 }, got)
  end)

  it("copies functions in channel messages, with upvalues, in any direction", function()
    local up, down = llthreads.channel(), llthreads.channel()
    local t = llthreads.spawn(function()
      local n = 0
      up:send(function() n = n + 1; return n end)
      local back = down:receive(5000)
      return back()
    end)
    local f = up:receive(5000)
    assert.are.equal(1, f())
    assert.are.equal(2, f())
    local k = 40
    down:send(function() return k + 2 end)
    H.assert_values({ true, 42 }, H.pack(t:join()))
  end)

  it("refuses a non-function with the argument error", function()
    H.assert_contains(select(2, pcall(llthreads.spawn)), "function expected, got no value")
    H.assert_contains(select(2, pcall(llthreads.spawn, "return 1")), "function expected, got string")
    H.assert_contains(select(2, pcall(llthreads.spawn, {}, 5)), "function expected, got number")
  end)

  it("leaves new's argument rules as the contract says: functions refused", function()
    local ok, err = pcall(llthreads.new, "return ...", function() end)
    assert.is_false(ok)
    H.assert_contains(err, "function/userdata/thread types un-supported.")
    -- and join of a new thread still describes a function instead of copying it
    local done, v = llthreads.new("return function() end"):start():join()
    assert.is_true(done)
    H.assert_contains(v, "Un-supported value: function: ")
  end)

  it("survives the debug library changing upvalues and a collection in the middle", function()
    H.survives([[
      local llthreads = require "llthreads"
      local t = { 1, 2, 3 }
      local function f() return t end
      setmetatable(t, { __gc = function() collectgarbage() end })
      for i = 1, 50 do
        debug.setupvalue(f, 1, i % 2 == 0 and { i } or io.stdout)
        local ok, th = pcall(llthreads.spawn, f)
        if ok then assert(th:join()) end
        collectgarbage()
      end
      print("ok")
    ]])
  end)
end)

describe("llthreads.new{code, options...}", function()
  after_each(H.cleanup)

  it("takes source or a function at [1], the values after the table", function()
    H.assert_values({ true, 3 }, H.pack(llthreads.new({ "local a, b = ... return a + b" }, 1, 2):start():join()))
  end)

  it("runs a function at [1] with its upvalues", function()
    local k = 5
    local t = llthreads.new({ function(x) return x * k end }, 3)
    assert.is_false(t:started())
    H.assert_values({ true, 15 }, H.pack(t:start():join()))
  end)

  it("starts with the options' modes when start() gets no arguments", function()
    local t = llthreads.new{ "return 1", detached = true }:start()
    assert.is_true(t:detached())
    assert.is_false(t:joinable())
    local u = llthreads.new{ "return 1", detached = true }:start(false, true)
    assert.is_false(u:detached())
    H.assert_values({ true, 1 }, H.pack(u:join()))
  end)

  it("refuses a table without code at [1]", function()
    local ok, err = pcall(llthreads.new, { name = "x" })
    assert.is_false(ok)
    H.assert_contains(err, "code (a string or a function) expected at [1], got nil")
  end)
end)
