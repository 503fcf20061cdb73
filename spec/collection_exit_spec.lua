local H = require "spec.helper"

local llthreads = require "llthreads"

-- Creating the object inside a function keeps no stray reference to it in
-- the caller's stack frame, so collectgarbage() really can collect it.
-- The weak table tells whether it was collected.
local function spawn_and_forget(code, detached, joinable, ...)
  local weak = setmetatable({}, { __mode = "k" })
  local function spawn(...)
    local t = llthreads.new(code, ...)
    t:start(detached, joinable)
    weak[t] = true
  end
  spawn(...)
  return weak
end

local function collect()
  for _ = 1, 3 do collectgarbage() end
end

describe("a thread object collected by the GC", function()
  after_each(H.cleanup)

  for _, mode in ipairs({ { false, true, "attached joinable" }, { false, false, "attached non-joinable" } }) do
    it("waits for its thread when " .. mode[3], function()
      local done = H.tmpname()
      local weak = spawn_and_forget(H.child("local done = ... sleep(0.2) touch(done)"), mode[1], mode[2], done)
      collect()
      assert.is_nil(next(weak), "the thread object was not collected")
      assert.is_true(H.exists(done), "collection returned before the thread finished")
    end)
  end

  it("lets its thread go on when detached and joinable", function()
    local ready, go, done = H.tmpname(), H.tmpname(), H.tmpname()
    finally(function() H.touch(go) end)
    local weak = spawn_and_forget(H.child("local ready, go, done = ... handshake(ready, go, 10) touch(done)"),
      true, true, ready, go, done)
    assert.is_true(H.wait_file(ready, 10))
    local t0 = H.now()
    collect()
    assert.is_nil(next(weak), "the thread object was not collected")
    -- The thread cannot finish before `go`: had the GC waited for it, it
    -- would have waited for the child's 10 s limit.
    assert.is_true(H.now() - t0 < 5, "collection waited for the thread")
    assert.is_false(H.exists(done))
    H.touch(go)
    assert.is_true(H.wait_file(done, 10), "the thread did not finish after its object was collected")
  end)

  it("changes nothing for a detached, non-joinable thread", function()
    local ready, go, done = H.tmpname(), H.tmpname(), H.tmpname()
    finally(function() H.touch(go) end)
    local weak = spawn_and_forget(H.child("local ready, go, done = ... handshake(ready, go, 10) touch(done)"),
      true, false, ready, go, done)
    assert.is_true(H.wait_file(ready, 10))
    local t0 = H.now()
    collect()
    assert.is_nil(next(weak), "the thread object was not collected")
    assert.is_true(H.now() - t0 < 5, "collection waited for the thread")
    assert.is_false(H.exists(done))
    H.touch(go)
    assert.is_true(H.wait_file(done, 10))
  end)

  it("never runs a thread that was not started", function()
    local done = H.tmpname()
    local weak = setmetatable({}, { __mode = "k" })
    local function make() weak[llthreads.new(H.child("touch(...)"), done)] = true end
    make()
    collect()
    assert.is_nil(next(weak))
    H.sleep(0.1)
    assert.is_false(H.exists(done))
  end)

  it("is harmless after join", function()
    local weak = setmetatable({}, { __mode = "k" })
    local function run()
      local t = llthreads.new("return 1"):start()
      assert.are.equal(true, (t:join()))
      weak[t] = true
    end
    run()
    collect()
    assert.is_nil(next(weak))
  end)

  it("is harmless for finished threads in every mode", function()
    local weak = setmetatable({}, { __mode = "k" })
    local function run()
      for _, mode in ipairs({ { false, true }, { false, false }, { true, false }, { true, true } }) do
        for _ = 1, 5 do weak[llthreads.new("return 1"):start(mode[1], mode[2])] = true end
      end
    end
    run()
    H.sleep(0.1)
    collect()
    assert.is_nil(next(weak))
  end)
end)

describe("process exit", function()
  after_each(H.cleanup)

  -- Detached children that announce themselves and then stay busy for a
  -- while calling llthreads.version, a C function of the module. They get
  -- it as an argument and never require the module themselves, so the
  -- parent's package library holds the only reference that keeps the
  -- library loaded.
  local PROLOGUE = [[
    local llthreads = require "llthreads"
    local child = [=[
      local version, ready = ...
      local f = assert(io.open(ready, "w")) f:close()
      local deadline = os.time() + 3
      while os.time() < deadline do
        for i = 1, 1000 do version() end
      end
    ]=]
    for i = 1, 4 do
      llthreads.new(child, llthreads.version, dir .. "/ready" .. i):start(true)
    end
    local function exists(p) local f = io.open(p) if f then f:close() return true end end
    for i = 1, 4 do
      local n = 0
      while not exists(dir .. "/ready" .. i) and n < 1000 do os.execute("sleep 0.01") n = n + 1 end
      assert(exists(dir .. "/ready" .. i), "child " .. i .. " did not start")
    end
    -- Lots of garbage: closing the state frees it after the package library
    -- has unloaded C modules, which keeps the children running in the
    -- module's code for a while after the unload.
    junk = {}
    for i = 1, 300000 do junk[i] = { i } end
    io.stdout:write("parent done\n")
  ]]

  local function run_script(epilogue)
    local dir = H.tmpname()
    assert(os.execute("mkdir " .. H.shq(dir)))
    finally(function() os.execute("rm -rf " .. H.shq(dir)) end)
    local source = ("local dir = %q\n"):format(dir) .. PROLOGUE .. "\n" .. (epilogue or "")
    return H.run_lua(source)
  end

  it("is clean when the script ends while detached threads run module code", function()
    local code, out = run_script()
    assert.is_falsy(H.crashed(code, out), out)
    assert.are.equal(0, code, out)
    H.assert_contains(out, "parent done")
  end)

  it("keeps the script's code when it calls os.exit(3) while detached threads run", function()
    local code, out = run_script("os.exit(3)")
    assert.is_falsy(H.crashed(code, out), out)
    assert.are.equal(3, code, out)
    H.assert_contains(out, "parent done")
  end)

  -- On 5.2+ os.exit(code, true) closes the state (unloading C modules)
  -- before exiting; 5.1 and LuaJIT ignore the second argument.
  it("keeps the script's code when it calls os.exit(3, true) while detached threads run", function()
    local code, out = run_script("os.exit(3, true)")
    assert.is_falsy(H.crashed(code, out), out)
    assert.are.equal(3, code, out)
  end)

  -- What lua_close does to C modules, done by hand so the script keeps
  -- running afterwards: call the __gc of the package library's handles
  -- (5.2+: the CLIBS table; 5.1 and LuaJIT: one "LOADLIB: path" userdata
  -- each). Then look for the module in the process's memory map.
  local UNLOAD = [[
    local function unload_c_libraries()
      for k, v in pairs(debug.getregistry()) do
        local mt = (type(v) == "table" or type(v) == "userdata") and getmetatable(v)
        local gc = type(mt) == "table" and rawget(mt, "__gc")
        if gc and type(v) == "table" and type(rawget(v, 1)) == "userdata" then
          gc(v)
          -- Their __gc does not forget the handles; lua_close must not
          -- close them a second time.
          for i = #v, 1, -1 do v[i] = nil end
        elseif gc and type(k) == "string" and k:sub(1, 9) == "LOADLIB: " then
          gc(v)
        end
      end
    end
    local function module_mapped()
      local f = assert(io.open("/proc/self/maps"))
      local maps = f:read("*a")
      f:close()
      return maps:find("/llthreads.so", 1, true) ~= nil
    end
  ]]

  it("keeps the module mapped once loaded, even after the host unloads it", function()
    local code, out = H.run_lua(UNLOAD .. [[
      require "llthreads"
      assert(module_mapped(), "module not found in /proc/self/maps")
      unload_c_libraries()
      io.stdout:write("mapped after unload: ", tostring(module_mapped()), "\n")
    ]])
    assert.are.equal(0, code, out)
    H.assert_contains(out, "mapped after unload: true")
  end)

  it("lets detached threads finish module code that the host has unloaded", function()
    local dir = H.tmpname()
    assert(os.execute("mkdir " .. H.shq(dir)))
    finally(function() os.execute("rm -rf " .. H.shq(dir)) end)
    local code, out = H.run_lua(("local dir = %q\n"):format(dir) .. UNLOAD .. [[
      local llthreads = require "llthreads"
      local child = [=[
        local version, ready, done = ...
        local f = assert(io.open(ready, "w")) f:close()
        -- Up to a second of calls into the module, most of it after the unload.
        local t0 = os.time()
        local n = 0
        while os.time() - t0 < 1 or n < 200000 do version() n = n + 1 end
        local g = assert(io.open(done, "w")) g:write("done") g:close()
      ]=]
      for i = 1, 4 do
        llthreads.new(child, llthreads.version, dir .. "/ready" .. i, dir .. "/done" .. i):start(true)
      end
      local function exists(p) local f = io.open(p) if f then f:close() return true end end
      local function wait(p) local n = 0 while not exists(p) and n < 1000 do os.execute("sleep 0.01") n = n + 1 end end
      for i = 1, 4 do wait(dir .. "/ready" .. i) end
      unload_c_libraries()
      for i = 1, 4 do wait(dir .. "/done" .. i) end
      local finished = 0
      for i = 1, 4 do if exists(dir .. "/done" .. i) then finished = finished + 1 end end
      io.stdout:write("finished: ", finished, "\n")
    ]])
    assert.is_falsy(H.crashed(code, out), out)
    assert.are.equal(0, code, out)
    H.assert_contains(out, "finished: 4")
  end)

  it("waits for attached threads whose objects are still alive at the end", function()
    local done = H.tmpname()
    local code, out = H.run_lua(([[
      local llthreads = require "llthreads"
      keep = llthreads.new([=[os.execute('sleep 0.2') local f = io.open(%q, 'w') f:write('finished') f:close()]=])
      keep:start()
      io.stdout:write("parent done\n")
    ]]):format(done))
    assert.are.equal(0, code, out)
    H.assert_contains(out, "parent done")
    assert.are.equal("finished", H.read_file(done))
  end)

  it("does not wait for detached joinable threads at the end", function()
    local done = H.tmpname()
    local t0 = H.now()
    local code, out = H.run_lua(([[
      local llthreads = require "llthreads"
      -- Spins instead of running `sleep`, whose process would outlive the
      -- script and hold its output pipe open.
      -- It spins far longer than the bound below, so that a loaded machine (slow
      -- interpreter start-up) never makes a script that did wait look quick.
      keep = llthreads.new([=[local d = os.time() + 60 while os.time() < d do end local f = io.open(%q, 'w') f:write('finished') f:close()]=])
      keep:start(true, true)
      io.stdout:write("parent done\n")
    ]]):format(done))
    assert.is_true(H.now() - t0 < 30, "the script waited for its detached thread")
    assert.are.equal(0, code, out)
    assert.is_false(H.exists(done))
  end)
end)
