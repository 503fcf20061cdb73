local H = require "spec.helper"

local llthreads = require "llthreads"

-- Sends the values to a child as arguments and gets them back as results:
-- one copy in each direction.
local function echo(...)
  return H.pack(llthreads.new("return ...", ...):start():join())
end

-- Runs `code` with the arguments and returns what join() returns.
local function run(code, ...)
  return H.pack(llthreads.new(code, ...):start():join())
end

-- n nested tables, the innermost holding `inner` (nil: an empty table).
local function chain(n, inner)
  local t = { inner }
  for _ = 2, n do t = { t } end
  return t
end

-- Same nesting, but each table is a key of the next one out.
local function key_chain(n, inner)
  local t = { [inner] = true }
  for _ = 2, n do t = { [t] = true } end
  return t
end

local UNSUPPORTED_ARG = "(function/userdata/thread types un-supported.)"

describe("copying values between states", function()
  after_each(H.cleanup)

  describe("nil, booleans and strings", function()
    it("arrive unchanged, trailing nils counted", function()
      H.assert_values({ true, nil, true, false, "", "text", nil, n = 7 }, echo(nil, true, false, "", "text", nil))
    end)

    it("arrive with their types in the child", function()
      local got = run("local a, b, c, d = ... return type(a), type(b), type(c), type(d)", nil, true, "s", false)
      H.assert_values({ true, "nil", "boolean", "string", "boolean", n = 5 }, got)
    end)

    it("copies strings byte for byte, zero bytes included", function()
      local bytes = {}
      for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
      local all = table.concat(bytes)
      local s = all .. "\0\0" .. all:reverse() .. "\0"
      local got = run("local s = ... return #s, s", s)
      H.assert_values({ true, #s, s, n = 3 }, got)
    end)

    it("copies long strings whole", function()
      local s = string.rep("0123456789abcdef", 2 ^ 18) .. "end"
      local got = run("local s = ... return #s, s:sub(-3), s", s)
      assert.are.equal(true, got[1])
      assert.are.equal(#s, got[2])
      assert.are.equal("end", got[3])
      assert.is_true(got[4] == s)
    end)
  end)

  describe("numbers", function()
    it("arrive as the same numbers", function()
      local negzero = 1 / -math.huge
      local values = { 0, -1, 42, 2 ^ 53, -(2 ^ 53), 1.5, -0.25, 1e308, 5e-324, math.huge, -math.huge, math.pi }
      local got = echo(H.unpack(values))
      assert.are.equal(true, got[1])
      assert.are.equal(#values + 1, got.n)
      for i, v in ipairs(values) do assert.are.equal(v, got[i + 1]) end

      local z = echo(negzero)[2]
      assert.are.equal(-math.huge, 1 / z)
    end)

    it("keep NaN a NaN", function()
      local nan = 0 / 0
      local got = run("local x = ... return x ~= x, x", nan)
      assert.are.equal(true, got[2])
      assert.is_true(got[3] ~= got[3])
    end)

    if H.has_integers then
      it("keep integers integers and floats floats (Lua 5.3+)", function()
        local values = { 3, 3.0, math.maxinteger, math.mininteger, 2 ^ 63, -0, 0.0, math.maxinteger - 2 }
        local got = run([[
          local out = {}
          for i = 1, select('#', ...) do out[i] = math.type((select(i, ...))) end
          return table.concat(out, ","), ...
        ]], H.unpack(values))
        assert.are.equal("integer,float,integer,integer,float,integer,float,integer", got[2])
        for i, v in ipairs(values) do
          assert.are.equal(math.type(v), math.type(got[i + 2]))
          assert.are.equal(v, got[i + 2])
        end
      end)
    else
      it("have a single number type before Lua 5.3, in the child as in the parent", function()
        local got = run("local a, b = ... return math.type == nil, a == b, a, b", 3, 3.0)
        H.assert_values({ true, true, true, 3, 3, n = 5 }, got)
        assert.is_nil(math.type)
      end)
    end
  end)

  describe("light userdata", function()
    -- Plain Lua can make no light userdata. On 5.2+ package keeps each loaded
    -- C library's handle in the registry's CLIBS table as light userdata
    -- (pushed by lua_pushlightuserdata in loadlib.c); 5.1 and LuaJIT keep
    -- full userdata there and have no other source, so no spec there.
    -- The handle is the value of the library's path (a string key); before 5.5 it
    -- also sits at integer keys, on 5.5 those hold something else.
    local function loaded_library_handle()
      for _, v in pairs(debug.getregistry()) do
        if type(v) == "table" then
          for k, handle in pairs(v) do
            if type(k) == "string" and k:find("%.so$") and type(handle) == "userdata" then
              return handle
            end
          end
        end
      end
    end

    if H.flavour == "5.2" or H.flavour == "5.3" or H.is_54_or_later then
      it("passes through as the same pointer", function()
        local handle = assert(loaded_library_handle(), "no C library handle in the registry")
        local got = run("local p = ... return type(p), p", handle)
        assert.are.equal(true, got[1])
        assert.are.equal("userdata", got[2])
        assert.is_true(rawequal(handle, got[3]))
        local nested = echo({ p = handle })
        assert.is_true(rawequal(handle, nested[2].p))
      end)
    end
  end)

  describe("tables", function()
    it("arrive as new tables with every key and value", function()
      local tkey = { "key" }
      local t = {
        1, 2, 3, [10] = "ten", name = "n", [1.5] = "float key", [true] = "yes", [false] = "no",
        nested = { deep = { deeper = "x" } }, [tkey] = "table key",
      }
      local got = echo(t)
      local c = got[2]
      assert.is_false(rawequal(t, c))
      assert.are.same({ 1, 2, 3 }, { c[1], c[2], c[3] })
      assert.are.equal("ten", c[10])
      assert.are.equal("n", c.name)
      assert.are.equal("float key", c[1.5])
      assert.are.equal("yes", c[true])
      assert.are.equal("no", c[false])
      assert.are.equal("x", c.nested.deep.deeper)
      local copied_key, count = nil, 0
      for k, v in pairs(c) do
        count = count + 1
        if type(k) == "table" then copied_key = k; assert.are.equal("table key", v) end
      end
      assert.are.equal(10, count)
      assert.are.same({ "key" }, copied_key)
      assert.is_false(rawequal(tkey, copied_key))
    end)

    it("copies the arguments when new() is called", function()
      local t = { x = "at new()" }
      local thread = llthreads.new("local t = ... return t.x", t)
      t.x = "changed before start()"
      H.assert_values({ true, "at new()", n = 2 }, H.pack(thread:start():join()))
    end)

    it("gives the child its own copy", function()
      local t = { x = "original" }
      local got = run("local t = ... t.x = 'changed' t.y = 1 return t.x", t)
      H.assert_values({ true, "changed", n = 2 }, got)
      assert.are.equal("original", t.x)
      assert.is_nil(t.y)
    end)

    it("keeps a table met twice in one value as one table", function()
      local shared = { v = 1 }
      local got = run("local t = ... return rawequal(t.a, t.b), t", { a = shared, b = shared })
      assert.are.equal(true, got[2])
      assert.is_true(rawequal(got[3].a, got[3].b))
    end)

    it("keeps a table passed as two arguments as one table", function()
      local shared = { v = 1 }
      local got = run("local a, b = ... return rawequal(a, b), a, b", shared, shared)
      assert.are.equal(true, got[2])
      assert.is_true(rawequal(got[3], got[4]))
      assert.is_false(rawequal(shared, got[3]))
    end)

    it("keeps a table returned twice as one table", function()
      local got = run("local s = { 1 } return s, { s = s }")
      assert.is_true(rawequal(got[2], got[3].s))
    end)

    it("keeps cycles", function()
      local t = { name = "t" }
      t.self = t
      local a, b = { name = "a" }, { name = "b" }
      a.b, b.a = b, a
      t[t] = t
      local got = run("local t, a = ... return rawequal(t.self, t) and rawequal(a.b.a, a), t, a", t, a)
      assert.are.equal(true, got[2])
      local ct, ca = got[3], got[4]
      assert.is_true(rawequal(ct.self, ct))
      assert.is_true(rawequal(ct[ct], ct))
      assert.is_true(rawequal(ca.b.a, ca))
      assert.are.equal("b", ca.b.name)
    end)

    it("does not copy metatables", function()
      local t = setmetatable({ v = 1 }, { __index = function() return "meta" end })
      local got = run("local t = ... return getmetatable(t) == nil, t.missing, setmetatable({}, {})", t)
      assert.are.equal(4, got.n)
      assert.are.equal(true, got[1])
      assert.are.equal(true, got[2])
      assert.is_nil(got[3])
      assert.are.equal("table", type(got[4]))
      assert.is_nil(getmetatable(got[4]))
    end)

    describe("depth", function()
      local COUNT_DEPTH = "local t, n = ..., 0 while type(t) == 'table' do n = n + 1 t = t[1] end return n, t"

      it("copies 29 nested tables with a value in the innermost", function()
        H.assert_values({ true, 29, 42, n = 3 }, run(COUNT_DEPTH, chain(29, 42)))
      end)

      it("copies 30 nested empty tables", function()
        H.assert_values({ true, 30, nil, n = 3 }, run(COUNT_DEPTH, chain(30)))
      end)

      it("refuses a value 31 levels deep with 'Hit maximum copy depth (31 > 30).'", function()
        local ok, err = pcall(llthreads.new, "return", chain(30, 42))
        assert.is_false(ok)
        assert.are.equal("Hit maximum copy depth (31 > 30).", err)
      end)

      it("counts each argument from depth 1", function()
        local got = run([[
          local function depth(t) local n = 0 while type(t) == 'table' do n = n + 1 t = t[1] end return n, t end
          local a, b = ...
          local da, va = depth(a)
          local db, vb = depth(b)
          return da, va, db, vb
        ]], chain(29, 1), chain(29, 2))
        H.assert_values({ true, 29, 1, 29, 2, n = 5 }, got)
      end)

      it("counts keys one level deeper than their table, like values", function()
        local ok = pcall(llthreads.new, "return", key_chain(29, 42))
        assert.is_true(ok)
        local ok2, err = pcall(llthreads.new, "return", key_chain(30, 42))
        assert.is_false(ok2)
        assert.are.equal("Hit maximum copy depth (31 > 30).", err)
      end)

      it("returns 29 nested tables with a value in the innermost", function()
        local got = run("local t = { 42 } for _ = 2, 29 do t = { t } end return t")
        local t, n = got[2], 0
        while type(t) == "table" do n = n + 1; t = t[1] end
        assert.are.equal(29, n)
        assert.are.equal(42, t)
      end)

      it("makes join() raise 'Hit maximum copy depth (31 > 30).' for a result too deep", function()
        local thread = llthreads.new("local t = { 42 } for _ = 2, 30 do t = { t } end return t"):start()
        local ok, err = pcall(thread.join, thread)
        assert.is_false(ok)
        H.assert_contains(err, "Hit maximum copy depth (31 > 30).")
      end)
    end)
  end)

  describe("values that cannot be copied", function()
    describe("as arguments", function()
      local cases = {
        { "a Lua function", function() end },
        { "a full userdata", io.stdout },
        { "a coroutine", coroutine.create(function() end) },
        { "a function inside a table", { ok = 1, f = function() end } },
        { "a function as a table key", { [function() end] = 1 } },
        { "a userdata deep in a table", { { { io.stderr } } } },
      }
      for _, case in ipairs(cases) do
        it("raise \"bad argument #N to 'new' " .. UNSUPPORTED_ARG .. "\" for " .. case[1], function()
          local ok, err = H.try_new(llthreads, "return", case[2])
          assert.is_false(ok)
          H.assert_contains(err, "bad argument #2 to 'new' " .. UNSUPPORTED_ARG)
        end)
      end

      it("name the argument's position as the caller counts it", function()
        local ok, err = H.try_new(llthreads, "return", 1, function() end)
        assert.is_false(ok)
        H.assert_contains(err, "bad argument #3 to 'new' " .. UNSUPPORTED_ARG)

        ok, err = H.try_new(llthreads, "return", { 1 }, 2, "three", { { f = io.stdout } })
        assert.is_false(ok)
        H.assert_contains(err, "bad argument #5 to 'new' " .. UNSUPPORTED_ARG)
      end)
    end)

    describe("as results", function()
      it("become 'Un-supported value: <type>: <pointer>' strings", function()
        local got = run("return 1, function() end, io.stdout, coroutine.create(function() end), 5")
        assert.are.equal(true, got[1])
        assert.are.equal(6, got.n)
        assert.are.equal(1, got[2])
        assert.matches("^Un%-supported value: function: ", got[3])
        assert.matches("^Un%-supported value: userdata: ", got[4])
        assert.matches("^Un%-supported value: thread: ", got[5])
        assert.are.equal(5, got[6])
      end)

      it("become such strings inside tables too", function()
        local got = run("return { f = function() end, n = 1, [function() end] = 'key' }")
        local t = got[2]
        assert.matches("^Un%-supported value: function: ", t.f)
        assert.are.equal(1, t.n)
        local key
        for k, v in pairs(t) do if v == "key" then key = k end end
        assert.matches("^Un%-supported value: function: ", key)
      end)
    end)
  end)

  it("copies many arguments and results", function()
    local args = {}
    for i = 1, 250 do args[i] = i % 3 == 0 and tostring(i) or i end
    local got = run("return select('#', ...), ...", H.unpack(args, 1, 250))
    assert.are.equal(252, got.n)
    assert.are.equal(250, got[2])
    for i = 1, 250 do assert.are.equal(args[i], got[i + 2]) end
  end)
end)
