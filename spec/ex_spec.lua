local H = require "spec.helper"

local ex = require "llthreads.ex"

-- The variable the child's default lua_init comes from.
local INIT_VAR = (H.flavour == "5.1" or H.is_jit) and "LUA_INIT" or ("LUA_INIT_" .. H.flavour:gsub("%.", "_"))

local function join_all(t)
  return H.pack(t:join())
end

describe("llthreads.ex", function()
  after_each(H.cleanup)

  it('is loaded by require "llthreads.ex" and require "llthreads2.ex"', function()
    for _, name in ipairs({ "llthreads.ex", "llthreads2.ex" }) do
      local m = require(name)
      assert.are.equal("table", type(m))
      assert.are.equal("function", type(m.new))
      H.assert_values({ true, name, n = 2 }, join_all(m.new("return ...", name):start()))
    end
  end)

  describe("ex.new(code, ...)", function()
    it("runs a Lua function, sent as its bytecode", function()
      local t = ex.new(function(a, b) return a + b, select("#", a, b) end, 2, 3)
      H.assert_values({ true, 5, 2, n = 3 }, join_all(t:start()))
    end)

    it("runs a string of Lua source", function()
      H.assert_values({ true, 2, "x", nil, n = 4 }, join_all(ex.new("return select('#', ...), ...", "x", nil):start()))
    end)

    it("loads '@path' from the file", function()
      local path = H.tmpname()
      H.write_file(path, "return 'from file', ...")
      H.assert_values({ true, "from file", 7, n = 3 }, join_all(ex.new("@" .. path, 7):start()))
    end)

    it("takes a table with the code at [1]", function()
      H.assert_values({ true, "one", n = 2 }, join_all(ex.new({ "return ..." }, "one"):start()))
    end)

    it("takes a table with the code as source", function()
      H.assert_values({ true, "src", n = 2 }, join_all(ex.new({ source = "return ..." }, "src"):start()))
    end)

    it("reports a failing chunk through join like new() does", function()
      local ok, err = ex.new(function() require("llthreads").set_logger(function() end) error("ex failure") end)
        :start():join()
      assert.are.equal(false, ok)
      assert.are.equal("Error from child thread: ", err:sub(1, #"Error from child thread: "))
      H.assert_contains(err, "ex failure")
    end)
  end)

  describe("the arg global in the child", function()
    -- Not a vararg function: in one of those, Lua 5.1 makes `arg` a local.
    it("holds the arguments and their count", function()
      local t = ex.new(function(a) return arg.n, arg[1], arg[2], arg[3], a end, "a", nil, "c")
      H.assert_values({ true, 3, "a", nil, "c", "a", n = 6 }, join_all(t:start()))
    end)

    it("holds the chunk name at [0]", function()
      local t = ex.new(function() return type(arg[0]) end)
      H.assert_values({ true, "string", n = 2 }, join_all(t:start()))
    end)

    it("holds the file's path at [0] for '@path'", function()
      local path = H.tmpname()
      H.write_file(path, "return arg[0]")
      H.assert_values({ true, path, n = 2 }, join_all(ex.new("@" .. path):start()))
    end)
  end)

  describe("the prelude option", function()
    it("is called with the arguments; its results replace them", function()
      local t = ex.new({
        function(...) return select("#", ...), ... end,
        prelude = function(...) return "p", ... end,
      }, 1, 2)
      H.assert_values({ true, 3, "p", 1, 2, n = 5 }, join_all(t:start()))
    end)

    it("may be Lua source", function()
      local t = ex.new({ "return ...", prelude = "local a, b = ... return b, a" }, 1, 2)
      H.assert_values({ true, 2, 1, n = 3 }, join_all(t:start()))
    end)

    it("loads '@path' from the file", function()
      local path = H.tmpname()
      H.write_file(path, "local a, b = ... return b, a, 'prelude file'")
      local t = ex.new({ "return ...", prelude = "@" .. path }, 1, 2)
      H.assert_values({ true, 2, 1, "prelude file", n = 4 }, join_all(t:start()))
    end)

    it("sets arg to its results", function()
      local t = ex.new({
        function() return arg.n, arg[1] end,
        prelude = function() return "only" end,
      }, 1, 2, 3)
      H.assert_values({ true, 1, "only", n = 3 }, join_all(t:start()))
    end)
  end)

  describe("the lua_init option", function()
    it("runs Lua source in the child before the code", function()
      local t = ex.new({ function() return INIT_VALUE end, lua_init = "INIT_VALUE = 'from lua_init'" })
      H.assert_values({ true, "from lua_init", n = 2 }, join_all(t:start()))
    end)

    it("runs before the prelude", function()
      local t = ex.new({
        function(...) return ... end,
        lua_init = "INIT_VALUE = 'seen by prelude'",
        prelude = function() return INIT_VALUE end,
      })
      H.assert_values({ true, "seen by prelude", n = 2 }, join_all(t:start()))
    end)

    it("may be a function, sent as its bytecode", function()
      local t = ex.new({ function() return INIT_VALUE end, lua_init = function() INIT_VALUE = "from a function" end })
      H.assert_values({ true, "from a function", n = 2 }, join_all(t:start()))
    end)

    it("refuses anything but a string, a function or false", function()
      H.assert_error("bad lua_init option (function or string expected, got number)",
        ex.new, { "return 1", lua_init = 42 })
    end)

    it("loads '@path' from the file", function()
      local path = H.tmpname()
      H.write_file(path, "INIT_VALUE = 'from init file'")
      local t = ex.new({ function() return INIT_VALUE end, lua_init = "@" .. path })
      H.assert_values({ true, "from init file", n = 2 }, join_all(t:start()))
    end)

    it("defaults to the " .. INIT_VAR .. " environment variable", function()
      local code, out = H.run_lua([[
        local ex = require "llthreads.ex"
        local ok, v = ex.new(function() return INIT_VALUE end):start():join()
        io.write("child saw: ", tostring(ok), " ", tostring(v), "\n")
      ]], INIT_VAR .. "=" .. H.shq("INIT_VALUE = 'from the environment'"))
      assert.are.equal(0, code, out)
      H.assert_contains(out, "child saw: true from the environment")
    end)

    it("is disabled by false, even with " .. INIT_VAR .. " set", function()
      local code, out = H.run_lua([[
        local ex = require "llthreads.ex"
        local ok, v = ex.new({ function() return INIT_VALUE end, lua_init = false }):start():join()
        io.write("child saw: ", tostring(ok), " ", tostring(v), "\n")
      ]], INIT_VAR .. "=" .. H.shq("INIT_VALUE = 'from the environment'"))
      assert.are.equal(0, code, out)
      H.assert_contains(out, "child saw: true nil")
    end)
  end)

  describe("the thread wrapper", function()
    it("start() returns the wrapper itself", function()
      local t = ex.new("return 1")
      assert.is_true(rawequal(t, t:start()))
      t:join()
    end)

    it("start() twice returns nil, 'Thread already started.'", function()
      local t = ex.new("return 1"):start()
      H.assert_values({ nil, "Thread already started.", n = 2 }, H.pack(t:start()))
      t:join()
    end)

    it("reports started(), detached() and joinable()", function()
      local t = ex.new("return 1")
      assert.are.equal(false, t:started())
      assert.are.equal(false, t:detached())
      assert.are.equal(false, t:joinable())
      t:start(true, true)
      assert.are.equal(true, t:started())
      assert.are.equal(true, t:detached())
      assert.are.equal(true, t:joinable())
      t:join()
    end)

    it("passes join's preconditions through", function()
      local t = ex.new("return 1")
      H.assert_values({ nil, "Can't join a thread that hasn't be started.", n = 2 }, H.pack(t:join()))
      H.assert_values({ nil, "Can't join a thread that hasn't be started.", n = 2 }, H.pack(t:alive()))
      local d = ex.new("return 1"):start(true)
      H.assert_values({ nil, "Can't join a thread that has been detached.", n = 2 }, H.pack(d:join()))
    end)

    it("alive() and join(timeout) follow the thread", function()
      local ready, go = H.tmpname(), H.tmpname()
      finally(function() H.touch(go) end)
      local t = ex.new({ H.child("local ready, go = ... handshake(ready, go) return 'after go'"), lua_init = false },
        ready, go):start()
      assert.is_true(H.wait_file(ready, 10))
      assert.are.equal(true, t:alive())
      H.assert_values({ nil, "timeout", n = 2 }, H.pack(t:join(20)))
      H.touch(go)
      assert.is_true(H.wait_until(function() return t:alive() == false end, 10))
      H.assert_values({ true, "after go", n = 2 }, H.pack(t:join()))
    end)

    it("interrupt() stops the thread", function()
      local ready, go = H.tmpname(), H.tmpname()
      finally(function() H.touch(go) end)
      local t = ex.new(H.child([[
        local ready, go = ...
        require("llthreads").set_logger(function() end)
        handshake(ready, go)
        for i = 1, 1e7 do os.clock() end
        return 'not interrupted'
      ]]), ready, go):start()
      assert.is_true(H.wait_file(ready, 10))
      t:interrupt()
      H.touch(go)
      local ok, err = t:join()
      assert.are.equal(false, ok)
      H.assert_contains(err, "thread was interrupted")
    end)
  end)
end)
