local H = require "spec.helper"

local llthreads = require "llthreads"

local UNSUPPORTED_ARG = "(function/userdata/thread types un-supported.)"

-- Lists, for the state it runs in, its global names, package.loaded and
-- package.preload, each sorted.
local LIST_STATE = [[
  local function keys(t)
    local r = {}
    for k in pairs(t) do r[#r + 1] = tostring(k) end
    table.sort(r)
    return table.concat(r, " ")
  end
  return keys(_G), keys(package.loaded), keys(package.preload)
]]

describe("C functions", function()
  after_each(H.cleanup)

  it("without upvalues can be passed to the child and called there", function()
    local got = H.pack(llthreads.new("local version = ... return version()", llthreads.version):start():join())
    local expected = H.pack(true, llthreads.version())
    H.assert_values(expected, got)
  end)

  it("such as llthreads.new itself, which the child calls after require 'llthreads'", function()
    local got = H.pack(llthreads.new([[
      local new = ...
      require "llthreads"
      local grandchild = new("return 'from the grandchild', ...", 1, 2)
      return grandchild:start():join()
    ]], llthreads.new):start():join())
    H.assert_values({ true, true, "from the grandchild", 1, 2, n = 5 }, got)
  end)

  it("such as a module's luaopen_ function, used as package.preload", function()
    local path = assert(H.find_module_file("llthreads"), "llthreads not found on package.cpath")
    local open = assert(package.loadlib(path, "luaopen_llthreads"))
    assert.are.equal("C", debug.getinfo(open, "S").what)
    local got = H.pack(llthreads.new([[
      local open = ...
      package.preload["mythreads"] = open
      local m = require "mythreads"
      assert(package.loaded.mythreads == m)
      return m.new("return 6 * 7"):start():join()
    ]], open):start():join())
    H.assert_values({ true, true, 42, n = 3 }, got)
  end)

  it("come back from the child as C functions the parent can call", function()
    local ok, new = llthreads.new("return require('llthreads').new"):start():join()
    assert.are.equal(true, ok)
    assert.are.equal("function", type(new))
    assert.are.equal("C", debug.getinfo(new, "S").what)
    H.assert_values({ true, 5, n = 2 }, H.pack(new("return 5"):start():join()))
  end)

  -- PUC Lua's library functions are plain C functions. LuaJIT's are not:
  -- string.len has no C pointer, print and tostring carry upvalues.
  if H.is_jit then
    it("refuses LuaJIT built-ins that have no C pointer or carry upvalues", function()
      for _, f in ipairs({ string.len, print, tostring }) do
        local ok, err = H.try_new(llthreads, "return", f)
        assert.is_false(ok)
        H.assert_contains(err, "bad argument #2 to 'new' " .. UNSUPPORTED_ARG)
      end
    end)
  else
    it("include PUC Lua's library functions such as string.len and os.time", function()
      local got = H.pack(llthreads.new([[
        local len, time = ...
        return len("abcd"), type(time())
      ]], string.len, os.time):start():join())
      H.assert_values({ true, 4, "number", n = 3 }, got)
    end)
  end

  describe("with upvalues", function()
    local function c_closure()
      -- coroutine.wrap returns a C function whose upvalue is the coroutine.
      return coroutine.wrap(function() end)
    end

    it("are C functions with upvalues", function()
      local f = c_closure()
      assert.are.equal("C", debug.getinfo(f, "S").what)
      -- 5.1's debug.getupvalue does not show C upvalues.
      if H.flavour ~= "5.1" then assert.is_not_nil(debug.getupvalue(f, 1)) end
    end)

    it("are refused as arguments like other uncopyable values", function()
      local ok, err = H.try_new(llthreads, "return", 1, c_closure())
      assert.is_false(ok)
      H.assert_contains(err, "bad argument #3 to 'new' " .. UNSUPPORTED_ARG)
      ok, err = H.try_new(llthreads, "return", { f = c_closure() })
      assert.is_false(ok)
      H.assert_contains(err, "bad argument #2 to 'new' " .. UNSUPPORTED_ARG)
    end)

    it("come back from the child as 'Un-supported value' strings", function()
      local ok, v = llthreads.new("return coroutine.wrap(function() end)"):start():join()
      assert.are.equal(true, ok)
      assert.matches("^Un%-supported value: function: ", v)
    end)
  end)
end)

describe("the child state", function()
  after_each(H.cleanup)

  it("has the globals, package.loaded and package.preload of a fresh interpreter", function()
    local ok, globals, loaded, preload = llthreads.new(LIST_STATE):start():join()
    assert.are.equal(true, ok)

    local code, out = H.run_lua("io.write(table.concat({ (function() " .. LIST_STATE .. " end)() }, '\\n'), '\\n')")
    assert.are.equal(0, code, out)
    local fresh = {}
    for line in out:gmatch("([^\n]*)\n") do fresh[#fresh + 1] = line end
    -- lua.c adds the script's `arg` table; luaL_openlibs does not.
    local fresh_globals = (" " .. fresh[1] .. " "):gsub(" arg ", " "):match("^%s*(.-)%s*$")

    assert.are.equal(fresh_globals, globals)
    assert.are.equal(fresh[2], loaded)
    assert.are.equal(fresh[3], preload)
  end)

  it("has the debug library", function()
    local got = H.pack(llthreads.new("return type(debug), type(debug.traceback), type(debug.sethook)"):start():join())
    H.assert_values({ true, "table", "function", "function", n = 4 }, got)
  end)

  if H.is_jit then
    it("has LuaJIT's jit and bit libraries and ffi in package.preload", function()
      local got = H.pack(llthreads.new([[
        return type(jit), type(bit), type(package.preload.ffi), type(require("ffi").cast), bit.band(6, 3)
      ]]):start():join())
      H.assert_values({ true, "table", "table", "function", "function", 2, n = 6 }, got)
    end)
  else
    it("has no LuaJIT libraries under PUC Lua", function()
      local got = H.pack(llthreads.new("return jit == nil, package.preload.ffi == nil"):start():join())
      H.assert_values({ true, true, true, n = 3 }, got)
    end)
  end

  it("does not have the llthreads module loaded or preloaded", function()
    local got = H.pack(llthreads.new(
      "return package.loaded.llthreads == nil, package.preload.llthreads == nil, llthreads == nil"):start():join())
    H.assert_values({ true, true, true, true, n = 4 }, got)
  end)

  it("can require llthreads and start its own threads", function()
    local got = H.pack(llthreads.new([[
      local llthreads = require "llthreads"
      local t = llthreads.new("return ...", "nested")
      return t:start():join()
    ]]):start():join())
    H.assert_values({ true, true, "nested", n = 3 }, got)
  end)
end)
