local H = require "spec.helper"

local llthreads = require "llthreads"

-- The crate's version is the module's version: read it from Cargo.toml so
-- a version bump needs no spec change.
local function cargo_version()
  local toml = assert(H.read_file("Cargo.toml"), "run the specs from the repository root")
  local package_section = toml:match("%[package%](.-)\n%[") or toml
  local v = assert(package_section:match('\nversion%s*=%s*"([^"]+)"'), "no version in Cargo.toml")
  local major, minor, patch, tag = v:match("^(%d+)%.(%d+)%.(%d+)%-?(.*)$")
  return tonumber(major), tonumber(minor), tonumber(patch), tag ~= "" and tag or nil
end

describe("the module table", function()
  after_each(H.cleanup)

  for _, name in ipairs({ "llthreads", "llthreads2" }) do
    describe('from require "' .. name .. '"', function()
      local m = require(name)

      it("has the functions new, set_logger and version", function()
        assert.are.equal("function", type(m.new))
        assert.are.equal("function", type(m.set_logger))
        assert.are.equal("function", type(m.version))
      end)

      it("has the strings _VERSION and interrupted_error", function()
        assert.are.equal("string", type(m._VERSION))
        assert.are.equal("string", type(m.interrupted_error))
      end)

      it("names the module in interrupted_error", function()
        assert.are.equal(name .. ": thread was interrupted", m.interrupted_error)
      end)

      it("creates threads that run", function()
        local ok, v = m.new("return 'ran as " .. name .. "'"):start():join()
        assert.are.equal(true, ok)
        assert.are.equal("ran as " .. name, v)
      end)
    end)
  end

  describe("version()", function()
    it("returns major, minor and patch as integers, equal to the crate's version", function()
      local major, minor, patch = llthreads.version()
      local c_major, c_minor, c_patch = cargo_version()
      assert.is_true(H.is_integer(major) and H.is_integer(minor) and H.is_integer(patch))
      assert.are.equal(c_major, major)
      assert.are.equal(c_minor, minor)
      assert.are.equal(c_patch, patch)
    end)

    it("returns at most one more value, a string tag", function()
      local v = H.pack(llthreads.version())
      assert.is_true(v.n == 3 or v.n == 4)
      if v.n == 4 then
        assert.are.equal("string", type(v[4]))
        assert.are.equal(select(4, cargo_version()), v[4])
      end
    end)

    it("agrees with _VERSION", function()
      local v = H.pack(llthreads.version())
      local expected = table.concat({ v[1], v[2], v[3] }, ".")
      if v.n == 4 then expected = expected .. "-" .. v[4] end
      assert.are.equal(expected, llthreads._VERSION)
      assert.are.equal(llthreads._VERSION, require("llthreads2")._VERSION)
    end)
  end)

  -- Programs copy these functions into other Lua states as bare C
  -- functions; a closure's upvalues would not follow it there.
  describe("entry points", function()
    local thread = llthreads.new("return")
    local functions = {
      new = llthreads.new,
      set_logger = llthreads.set_logger,
      version = llthreads.version,
    }
    for _, method in ipairs({ "start", "join", "alive", "started", "detached", "joinable", "interrupt" }) do
      functions[method] = thread[method]
    end

    for _, name in ipairs({ "new", "set_logger", "version", "start", "join", "alive",
                            "started", "detached", "joinable", "interrupt" }) do
      it(name .. " is a C function without upvalues", function()
        local f = functions[name]
        assert.are.equal("function", type(f))
        assert.are.equal("C", debug.getinfo(f, "S").what)
        assert.is_nil(debug.getupvalue(f, 1))
      end)
    end
  end)
end)

describe("llthreads.new(code, ...)", function()
  after_each(H.cleanup)

  it("returns a userdata thread object", function()
    assert.are.equal("userdata", type(llthreads.new("return")))
  end)

  it("does not run the code before start()", function()
    local flag = H.tmpname()
    local thread = llthreads.new(H.child("touch(...)"), flag)
    H.sleep(0.1)
    assert.is_false(H.exists(flag))
    thread:start()
    assert.are.equal(true, (thread:join()))
    assert.is_true(H.exists(flag))
  end)

  it("passes the extra arguments as the chunk's ..., nils included", function()
    local got = H.pack(llthreads.new("return select('#', ...), ...", 1, nil, "x", nil):start():join())
    H.assert_values({ true, 4, 1, nil, "x", nil, n = 6 }, got)
  end)

  it("accepts a precompiled chunk made by string.dump", function()
    local code = string.dump(function(...) return select("#", ...), ... end)
    local got = H.pack(llthreads.new(code, "a", nil):start():join())
    H.assert_values({ true, 2, "a", nil, n = 4 }, got)
  end)

  it("raises the compiler's message in the caller, the code being its chunk name", function()
    local ok, err = pcall(llthreads.new, "x = = 1")
    assert.is_false(ok)
    H.assert_contains(err, '[string "x = = 1"]:1:')
  end)

  it("takes a number as code the way Lua converts it, to a string", function()
    -- "42" is no valid chunk: the compiler's message proves the conversion.
    local ok, err = pcall(llthreads.new, 42)
    assert.is_false(ok)
    H.assert_contains(err, '[string "42"]:1:')
  end)

  it("raises an argument error for code that is not a string", function()
    for _, bad in ipairs({ {}, true, function() end }) do
      local ok, err = H.try_new(llthreads, bad)
      assert.is_false(ok)
      H.assert_contains(err, "bad argument #1 to 'new'")
    end
  end)

  it("uses the code as the chunk name at run time too", function()
    local ok, err = llthreads.new(H.quiet("error('boom')")):start():join()
    assert.is_false(ok)
    H.assert_contains(err, "]:1: boom")
    H.assert_contains(err, "[string \"require('llthreads')")
  end)
end)

describe("loading both llthreads and llthreads2 in one program", function()
  it("gives thread objects that work side by side", function()
    local one = require("llthreads").new("return 'one', ...", 1)
    local two = require("llthreads2").new("return 'two', ...", 2)
    assert.is_true(rawequal(one, one:start()))
    assert.is_true(rawequal(two, two:start()))
    H.assert_values({ true, "two", 2, n = 3 }, H.pack(two:join()))
    H.assert_values({ true, "one", 1, n = 3 }, H.pack(one:join()))
    assert.are.equal("Can't join a thread that has already been joined.", select(2, one:join()))
    assert.are.equal("Can't join a thread that has already been joined.", select(2, two:join()))
  end)

  it("keeps every method working on objects of each", function()
    for _, name in ipairs({ "llthreads", "llthreads2" }) do
      local t = require(name).new("return 1")
      assert.is_false(t:started())
      t:start(true, true)
      assert.is_true(t:started())
      assert.is_true(t:detached())
      assert.is_true(t:joinable())
      assert.is_true(H.wait_until(function() return t:alive() == false end, 5))
      t:interrupt()
      assert.are.equal(true, (t:join()))
    end
  end)
end)
