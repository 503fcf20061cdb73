-- The options of llthreads.spawn(options, fn, ...) and llthreads.new{code, ...}: a
-- table where every key is optional and an unknown key is an error.
--   name          the OS thread's name (15 bytes kept), in join's and the logger's errors
--   detached, joinable   as start's
--   stack_size    the OS thread's stack, in bytes, within [minimum, 1 GiB]
--   memory_limit  this thread's limit, in bytes (never looser than its creator's)
--   paths         true by default: the child starts with the creator's package.path
--                 and package.cpath; false keeps the environment's
--   preload       module name -> function (Lua or C) in the child's package.preload

local H = require "spec.helper"

local llthreads = require "llthreads"

local function run(options, fn, ...)
  return H.pack(llthreads.spawn(options, fn, ...):join())
end

local function refused(options, text)
  local ok, err = pcall(llthreads.spawn, options, function() end)
  assert.is_false(ok, "spawn accepted " .. H.show(text))
  H.assert_contains(err, "bad argument #1")
  H.assert_contains(err, text)
  local ok2, err2 = pcall(llthreads.new, (function() options[1] = "return 1" return options end)())
  assert.is_false(ok2)
  H.assert_contains(err2, text)
end

describe("spawn and new{...} options", function()
  after_each(H.cleanup)

  describe("name", function()
    it("names the OS thread while it runs (/proc/thread-self/comm)", function()
      local got = run({ name = "llt-worker" }, function()
        local f = assert(io.open("/proc/thread-self/comm"))
        local comm = f:read("*l")
        f:close()
        return comm
      end)
      H.assert_values({ true, "llt-worker" }, got)
    end)

    it("cuts a longer name to the 15 bytes the OS keeps, never refuses it", function()
      local got = run({ name = "a-name-longer-than-fifteen" }, function()
        local f = assert(io.open("/proc/thread-self/comm"))
        local comm = f:read("*l")
        f:close()
        return comm
      end)
      H.assert_values({ true, "a-name-longer-t" }, got)
    end)

    it("gives a pooled worker its old name back for the next thread", function()
      llthreads.spawn({ name = "first-one" }, function() end):join()
      local got = run({}, function()
        local f = assert(io.open("/proc/thread-self/comm"))
        local comm = f:read("*l")
        f:close()
        return comm
      end)
      assert.are_not.equal("first-one", got[2])
    end)

    it("appears in join's error and in the logger's message", function()
      local got = run({ name = "parser" }, function() error("bad input") end)
      assert.is_false(got[1])
      H.assert_contains(got[2], "Error from child thread 'parser': ")
      H.assert_contains(got[2], "bad input")
      local log = H.tmpname()
      local t = llthreads.spawn({ name = "logged" }, function(path)
        require("llthreads").set_logger(function(msg)
          local f = io.open(path, "w") f:write(msg) f:close()
        end)
        error("into the log")
      end, log)
      t:join()
      H.assert_contains(H.read_file(log), "Error from thread 'logged': ")
    end)

    it("refuses a non-string and a zero byte", function()
      refused({ name = 5 }, "option 'name': a string expected, got number")
      refused({ name = "a\0b" }, "name must not hold a zero byte")
    end)
  end)

  describe("detached and joinable", function()
    it("start the thread as start(detached, joinable) would", function()
      local t = llthreads.spawn({ detached = true }, function() end)
      assert.is_true(t:detached())
      assert.is_false(t:joinable())
      H.assert_values({ nil, "Can't join a thread that has been detached.", n = 2 }, H.pack(t:join()))
      local u = llthreads.spawn({ joinable = false }, function() return 1 end)
      assert.is_false(u:joinable())
      H.assert_values({ true }, H.pack(u:join()))
    end)

    it("must be booleans", function()
      refused({ detached = 1 }, "option 'detached': a boolean expected, got number")
      refused({ joinable = "yes" }, "option 'joinable': a boolean expected, got string")
    end)
  end)

  describe("stack_size", function()
    local MIN = ({ ["5.1"] = 4, ["5.2"] = 4, ["5.3"] = 4, ["5.4"] = 1, ["5.5"] = 1, jit = 8 })[H.flavour] * 1024 * 1024

    it("refuses a stack too small for Lua's own recursion limit, or over 1 GiB, or not whole", function()
      refused({ stack_size = 64 * 1024 }, "stack_size must be between " .. MIN .. " and 1073741824 bytes")
      refused({ stack_size = MIN - 1 }, "stack_size must be between")
      refused({ stack_size = 2 ^ 31 }, "stack_size must be between")
      refused({ stack_size = 1.5e6 + 0.5 }, "option 'stack_size': a whole number of bytes expected")
      refused({ stack_size = "big" }, "option 'stack_size': a number of bytes expected, got string")
    end)

    it("on the smallest stack, C recursion up to Lua's limit ends in Lua's error, never a crash", function()
      local out = H.survives(([[
        local llthreads = require "llthreads"
        for _, kind in ipairs { "pcall", "format", "sort" %s } do
          local t = llthreads.spawn({ stack_size = %d }, function(kind)
            local deep
            if kind == "gsub" then
              deep = function(n) return (("x"):gsub("x", function() return deep(n + 1) end)) end
            elseif kind == "pcall" then
              deep = function(n) local ok, e = pcall(deep, n + 1) if not ok then error(e, 0) end end
            elseif kind == "format" then
              local mt = {}
              mt.__tostring = function(o) return string.format("%%s", setmetatable({}, mt)) end
              deep = function() return string.format("%%s", setmetatable({}, mt)) end
            elseif kind == "sort" then
              deep = function() table.sort({ 2, 1, 3 }, function(a, b) deep() return a < b end) end
            end
            return pcall(deep, 0)
          end, kind)
          local ok, done, err = t:join()
          assert(ok, kind .. ": " .. tostring(done))
          assert(not done, kind .. ": the recursion was expected to meet Lua's limit")
          print(kind, err)
        end
        print("survived")
      ]]):format(H.is_jit and "" or ', "gsub"', MIN))
      H.assert_contains(out, "survived")
    end)

    if H.is_jit then
      -- LuaJIT does not bound string.gsub's C recursion: 2000 levels crash the default
    -- 8 MiB stack (the interpreter's own main thread too); 512 MiB takes 5000.
    it("lets LuaJIT's unbounded string.gsub recursion go deeper on a bigger stack", function()
        local got = run({ stack_size = 512 * 1024 * 1024 }, function()
          local function deep(n)
            if n == 0 then return "" end
            return (("x"):gsub("x", function() return deep(n - 1) end))
          end
          return deep(5000)
        end)
        H.assert_values({ true, "" }, got)
      end)
    end
  end)

  describe("memory_limit", function()
    if H.is_jit then
      it("is refused on LuaJIT, as set_memory_limit is", function()
        refused({ memory_limit = 1e6 }, "memory_limit is not supported on LuaJIT")
      end)
    else
      it("limits this thread's state", function()
        local got = run({ memory_limit = 2 * 1024 * 1024 }, function()
          return pcall(string.rep, "x", 8 * 1024 * 1024)
        end)
        assert.is_true(got[1])
        assert.is_false(got[2])
        H.assert_contains(got[3], "not enough memory")
        -- an unlimited sibling is not limited
        local free = run({}, function() return #string.rep("x", 8 * 1024 * 1024) end)
        H.assert_values({ true, 8 * 1024 * 1024 }, free)
      end)

      it("binds grandchildren: a child cannot give its own thread more", function()
        local got = run({ memory_limit = 2 * 1024 * 1024 }, function()
          local llt = require "llthreads"
          local t = llt.spawn({ memory_limit = 512 * 1024 * 1024 }, function()
            return pcall(string.rep, "x", 8 * 1024 * 1024)
          end)
          return t:join()
        end)
        H.assert_values({ true, true, false }, H.pack(got[1], got[2], got[3]))
        H.assert_contains(got[4], "not enough memory")
      end)

      it("is the tighter of itself and set_memory_limit", function()
        llthreads.set_memory_limit(2 * 1024 * 1024)
        local ok, got = pcall(run, { memory_limit = 512 * 1024 * 1024 }, function()
          return pcall(string.rep, "x", 8 * 1024 * 1024)
        end)
        llthreads.set_memory_limit(0)
        assert(ok, got)
        assert.is_false(got[2])
      end)

      it("must be a positive whole number of bytes", function()
        refused({ memory_limit = 0 }, "memory_limit must be a positive number of bytes")
        refused({ memory_limit = -1 }, "option 'memory_limit': a whole number of bytes expected")
        refused({ memory_limit = {} }, "option 'memory_limit': a number of bytes expected, got table")
      end)
    end
  end)

  describe("paths", function()
    it("gives the child the creator's package.path and cpath by default", function()
      local saved_path, saved_cpath = package.path, package.cpath
      package.path = "/nowhere/?.lua;" .. saved_path
      package.cpath = "/nowhere/?.so;" .. saved_cpath
      local ok, got = pcall(run, {}, function() return package.path, package.cpath end)
      local new_got = ok and H.pack(llthreads.new{ "return package.path" }:start():join())
      package.path, package.cpath = saved_path, saved_cpath
      assert(ok, got)
      H.assert_values({ true, "/nowhere/?.lua;" .. saved_path, "/nowhere/?.so;" .. saved_cpath }, got)
      H.assert_values({ true, "/nowhere/?.lua;" .. saved_path }, new_got)
    end)

    it("keeps the environment's paths with paths = false, as new(code) does", function()
      local saved = package.path
      package.path = "/nowhere/?.lua;" .. saved
      local ok, got = pcall(run, { paths = false }, function() return package.path end)
      local plain = ok and H.pack(llthreads.new("return package.path"):start():join())
      package.path = saved
      assert(ok, got)
      assert.are.equal(plain[2], got[2])
      assert.is_nil(got[2]:find("/nowhere/", 1, true))
    end)

    it("must be a boolean", function()
      refused({ paths = "yes" }, "option 'paths': a boolean expected, got string")
    end)
  end)

  describe("preload", function()
    it("puts Lua functions (with upvalues) and C functions in the child's package.preload", function()
      local version = "1.2"
      local got = run({
        preload = {
          mymod = function(name) return { name = name, version = version } end,
          shout = string.upper, -- require("shout") calls it with "shout"
        },
      }, function()
        local m = require "mymod"
        return m.name, m.version, (require "shout")
      end)
      H.assert_values({ true, "mymod", "1.2", "SHOUT" }, got)
    end)

    it("must map module names to functions", function()
      refused({ preload = 5 }, "option 'preload': a table expected, got number")
      refused({ preload = { x = 1 } }, "module names (strings) to functions expected, got string to number")
      refused({ preload = { print } }, "got number to function")
    end)
  end)

  it("refuses an unknown option and a non-string key", function()
    refused({ bogus = true }, "unknown option 'bogus'")
    local ok, err = pcall(llthreads.spawn, { [true] = 1 }, function() end)
    assert.is_false(ok)
    H.assert_contains(err, "option names are strings, got boolean")
  end)
end)
