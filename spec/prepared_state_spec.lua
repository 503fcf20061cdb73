-- Prepared states: `new` takes its child state, when it can, from a small stock
-- that parked worker threads of the pool filled ahead of time (once they have had
-- no job for 10 ms), so that creating the Lua state and opening its
-- libraries is off the caller's path. A state from
-- the stock cannot be told from one made on the spot: no code ever ran in it, it
-- has the standard libraries and nothing else, the package paths a fresh state
-- gets, no hook, and exactly the memory limit `new` would give (a state prepared
-- before `set_memory_limit` changed is not used for the new limit).
--
-- Each case runs in a fresh interpreter with LLTHREADS_LOG=trace: the module then
-- logs "new: a prepared state" when `new` took one, right after the script's own
-- "thread <label>" line on the same stderr. So each check also proves which of its
-- threads got a prepared state. The script pauses before each `new`, so that the
-- worker that ran the previous thread has parked and refilled the stock.

local H = require "spec.helper"

local PRELUDE = [[
  local llthreads = require "llthreads"
  local function say(...) io.stderr:write(table.concat({ ... }, " "), "\n") end
  local function run(label, code, ...)
    os.execute("sleep 0.2")
    say("thread " .. label)
    return llthreads.new(code, ...):start():join()
  end
]]

local PREPARED = "\nllthreads: TRACE: new: a prepared state\n"

local function script(body)
  return H.survives(PRELUDE .. body, "LLTHREADS_LOG=trace")
end

-- Whether the thread labelled `label` got its state from the stock.
local function prepared(out, label)
  return out:find("thread " .. label .. PREPARED, 1, true) ~= nil
end

local function assert_prepared(out, label)
  assert(prepared(out, label), "thread " .. label .. " did not get a prepared state:\n" .. out)
end

local function assert_made_on_the_spot(out, label)
  assert(out:find("thread " .. label .. "\n", 1, true), out)
  assert(not prepared(out, label), "thread " .. label .. " got a prepared state:\n" .. out)
end

-- Everything `luaL_openlibs` may put in package.loaded, over all five flavours.
local STANDARD = {}
for name in ("_G package coroutine table io os string math utf8 debug bit32 bit jit jit.opt ffi"):gmatch("%S+") do
  STANDARD[name] = true
end

describe("a prepared state", function()
  after_each(H.cleanup)

  it("has not seen the globals a previous thread set", function()
    local out = script [[
      run("1", "leaked = 'from thread 1'; rawset(_G, 'raw', 1); string.leak = 1; return leaked")
      local ok, a, b, c = run("2", "return tostring(leaked), tostring(raw), tostring(string.leak)")
      say("thread 2 saw", tostring(ok), a, b, c)
    ]]
    assert_prepared(out, "2")
    H.assert_contains(out, "thread 2 saw true nil nil nil\n")
  end)

  it("has the standard libraries only, the same globals, registry and paths as a state made on the spot", function()
    local out = script [[
      local LIST = "local function keys(t, show) local ks = {} " ..
        "for k, v in pairs(t) do ks[#ks + 1] = show(k, v) end table.sort(ks) return table.concat(ks, ',') end " ..
        "local function name(k) return tostring(k) end " ..
        "local function entry(k, v) return type(k) == 'string' and k or (type(k) .. ':' .. type(v)) end " ..
        "return keys(package.loaded, name), keys(_G, name), keys(debug.getregistry(), entry), " ..
        "package.path, package.cpath, collectgarbage('count') > 0"
      -- The stock is empty when the process starts: the first state is made on the spot.
      local fresh = { run("1", LIST) }
      local ready = { run("2", LIST) }
      for i = 1, 7 do say("value " .. i, tostring(fresh[i] == ready[i])) end
      say("loaded:", tostring(ready[2]))
      say("parent paths", tostring(ready[5] == package.path), tostring(ready[6] == package.cpath))
    ]]
    assert_made_on_the_spot(out, "1")
    assert_prepared(out, "2")
    for i = 1, 7 do H.assert_contains(out, "value " .. i .. " true\n") end
    H.assert_contains(out, "parent paths true true\n")
    local loaded = assert(out:match("loaded: ([^\n]*)\n"), out)
    for name in loaded:gmatch("[^,]+") do
      assert(STANDARD[name], "package.loaded of a prepared state holds " .. name .. ": " .. loaded)
    end
    assert(loaded:find("string", 1, true) and loaded:find("package", 1, true), loaded)
  end)

  it("has no hook, whatever hook the previous thread set", function()
    local out = script [[
      local HOOKS = "local f, mask, count = debug.gethook() " ..
        "return tostring(f), tostring(mask), tostring(count)"
      local _, f1, m1, c1 = run("1", HOOKS .. " , debug.sethook(function() end, 'crl', 1)")
      local _, f2, m2, c2 = run("2", HOOKS)
      say("fresh hook", f1, m1, c1)
      say("prepared hook", f2, m2, c2)
    ]]
    assert_prepared(out, "2")
    local fresh = assert(out:match("fresh hook ([^\n]*)\n"), out)
    H.assert_contains(out, "prepared hook " .. fresh .. "\n")
    assert(fresh:match("^nil "), out)
  end)

  if H.is_jit then
    it("on LuaJIT: there is no memory limit to match, every state may come from the stock", function()
      local out = script [[
        say("limit", select(2, pcall(llthreads.set_memory_limit, 200 * 1024)))
        run("1", "return 1")
        say("thread 2 gave", tostring(select(2, run("2", "return #string.rep('x', 64 * 1024 * 1024)"))))
      ]]
      H.assert_contains(out, "limit memory limit is not supported on LuaJIT\n")
      assert_prepared(out, "2")
      H.assert_contains(out, "thread 2 gave " .. (64 * 1024 * 1024) .. "\n")
    end)
  else
    it("has the memory limit new gives now: one prepared for an earlier limit is not used", function()
      local out = script [[
        llthreads.set_logger(function() end)
        -- about 220 KiB of strings: fits in 400 KiB, not in 150 KiB
        local BIG = "local t = {} for i = 1, 200 do t[i] = string.rep('x', 1000) .. i end return #t"
        local function report(label, ok, v) say("thread " .. label .. " gave", tostring(ok), tostring(v)) end
        llthreads.set_memory_limit(400 * 1024)
        run("1", "return 1")
        report("2", run("2", BIG))
        llthreads.set_memory_limit(150 * 1024)
        report("3", run("3", BIG))
        report("4", run("4", BIG))
        report("5", run("5", "return #string.rep('x', 1000)"))
        llthreads.set_memory_limit(nil)
        run("6", "return 1")
        report("7", run("7", "return #string.rep('x', 4 * 1024 * 1024)"))
      ]]
      assert_prepared(out, "2")
      H.assert_contains(out, "thread 2 gave true 200\n")
      -- the stock held states for 400 KiB only: none of them may serve 150 KiB
      assert_made_on_the_spot(out, "3")
      assert(out:match("thread 3 gave false [^\n]*not enough memory"), out)
      assert_prepared(out, "4")
      assert(out:match("thread 4 gave false [^\n]*not enough memory"), out)
      assert_prepared(out, "5")
      H.assert_contains(out, "thread 5 gave true 1000\n")
      -- without a limit again: a state with none
      assert_prepared(out, "7")
      H.assert_contains(out, "thread 7 gave true " .. (4 * 1024 * 1024) .. "\n")
    end)
  end

  it("regression: kept the package paths of the environment it was made in", function()
    -- `luaL_openlibs` takes package.path and package.cpath from LUA_PATH and
    -- LUA_CPATH (or their _5_x forms). Lua code can change the process environment
    -- through a C function (luaposix's setenv, LuaJIT's ffi, or libc's clearenv,
    -- which takes no argument and returns 0, so it can be called as a Lua C
    -- function): a state made on the spot afterwards sees the change, and so must
    -- a state taken from the stock.
    local mark = "/from-the-environment/"
    local vars = {}
    for _, suffix in ipairs { "", "_5_2", "_5_3", "_5_4", "_5_5" } do
      vars[#vars + 1] = "LUA_PATH" .. suffix .. "=" .. H.shq(mark .. "?.lua;;")
      vars[#vars + 1] = "LUA_CPATH" .. suffix .. "=" .. H.shq(mark .. "?.so;" .. package.cpath)
    end
    local out = H.survives(PRELUDE .. [[
      local MARK = ...
      local PATHS = "return tostring(package.path:find('/from-the-environment/', 1, true) ~= nil) .. ' ' .. " ..
        "tostring(package.cpath:find('/from-the-environment/', 1, true) ~= nil)"
      say("thread 1 saw the variables:", select(2, run("1", PATHS)))
      -- the worker that ran thread 1 fills the stock meanwhile
      os.execute("sleep 0.2")
      local clearenv = assert(package.loadlib("libc.so.6", "clearenv"))
      clearenv()
      say("LUA_PATH now", tostring(os.getenv("LUA_PATH")))
      say("thread 2 saw the variables:", select(2, run("2", PATHS)))
      say("thread 3 saw the variables:", select(2, run("3", PATHS)))
    ]], "LLTHREADS_LOG=trace " .. table.concat(vars, " "))
    H.assert_contains(out, "thread 1 saw the variables: true true\n")
    H.assert_contains(out, "LUA_PATH now nil\n")
    H.assert_contains(out, "thread 2 saw the variables: false false\n")
    H.assert_contains(out, "thread 3 saw the variables: false false\n")
    -- the stock still serves once it holds states made in the new environment
    assert_prepared(out, "3")
  end)

  it("regression: had the package path of a moment when another thread changed the variable and changed it back", function()
    -- A C module (luaposix's setenv, or LuaJIT's ffi) may change LUA_PATH while a
    -- worker opens a prepared state's libraries, and change it back before the
    -- worker reads the environment again: equal readings before and after do not
    -- prove the library read that value. Once the changes are over, every new child
    -- must have the path of the environment as it is, as a state made on the spot
    -- would. The helper flips the variable for a few milliseconds, ending on the
    -- value it started with; children started during the flips are not checked
    -- (any value of that moment is right), the two started after them are.
    local c, so = H.tmpname(), H.tmpname()
    H.write_file(c, [[
      #include <stdlib.h>
      #include <time.h>
      typedef struct lua_State lua_State;
      const char *lua_tolstring(lua_State *L, int idx, size_t *len);
      /* flip(name, other, value, ms): sets name to other, then value, for ms */
      int flip(lua_State *L) {
        const char *name = lua_tolstring(L, 1, NULL), *other = lua_tolstring(L, 2, NULL);
        const char *value = lua_tolstring(L, 3, NULL);
        long ms = atol(lua_tolstring(L, 4, NULL));
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
          setenv(name, other, 1);
          setenv(name, value, 1);
          clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
        return 0;
      }
    ]])
    local code, cc_out = H.run("cc -x c -shared -fPIC -o " .. H.shq(so) .. " " .. H.shq(c))
    assert(code == 0, "this case needs a C compiler to build its helper:\n" .. cc_out)
    -- the variable this version reads first
    local name = (H.flavour == "5.1" or H.is_jit) and "LUA_PATH" or ("LUA_PATH_" .. H.flavour:gsub("%.", "_"))
    local out = H.survives(("local SO, NAME = %q, %q\n"):format(so, name) .. [[
      local llthreads = require "llthreads"
      local P = "return package.path:match('^[^;]*')"
      local wrong = 0
      for round = 1, 50 do
        local flipper = llthreads.new("local f = assert(package.loadlib(...)) f(select(3, ...))",
          SO, "flip", NAME, "/b/?.lua;;", "/a/?.lua;;", "80"):start()
        -- pauses over 10 ms: the worker refills the stock while the variable flips
        for _ = 1, 4 do
          os.execute("sleep 0.015")
          llthreads.new(P):start():join()
        end
        assert(flipper:join())
        for _ = 1, 2 do
          local _, path = llthreads.new(P):start():join()
          if path ~= "/a/?.lua" then wrong = wrong + 1 end
        end
      end
      print("children with another path: " .. wrong)
    ]], ("LUA_PATH=%s %s=%s"):format(H.shq("/a/?.lua;;"), name, H.shq("/a/?.lua;;")), 120)
    H.assert_contains(out, "children with another path: 0\n")
  end)

  it("is closed when the last state that loaded the module closes", function()
    local code, out = H.run_lua(PRELUDE .. [[
      run("1", "return 1")
      run("2", "return 1")
      os.execute("sleep 0.2")
    ]], "LLTHREADS_LOG=debug")
    assert.is_falsy(H.crashed(code, out), out)
    assert.are.equal(0, code, out)
    local n = tonumber(out:match("no parked worker left: (%d+) prepared state%(s%) closed"))
    assert(n and n >= 1, "no prepared state was closed at exit:\n" .. out)
  end)

  it("is closed when the parked threads time out, and the next new makes its own", function()
    -- Parked threads exit after two idle seconds; the stock goes with the last one.
    local out = script [[
      run("1", "return 1")
      run("2", "return 1")
      os.execute("sleep 3")
      say("thread 3 gave", tostring(select(2, llthreads.new("return 3"):start():join())))
      say("done")
    ]]
    assert_prepared(out, "2")
    local closed = out:find("no parked worker left: %d+ prepared state%(s%) closed")
    local third = out:find("thread 3 gave 3\n", 1, true)
    assert(closed and third and closed < third, "the stock was not closed before thread 3:\n" .. out)
    local n = tonumber(out:match("no parked worker left: (%d+) prepared state%(s%) closed"))
    assert(n >= 1, out)
    -- a prepared state taken by thread 3 would be traced between the two
    assert(not out:sub(closed, third):find("new: a prepared state", 1, true),
      "thread 3 got a prepared state after the stock was closed:\n" .. out)
    H.assert_contains(out, "done\n")
  end)
end)
