-- llthreads.pool{size = n, init = ..., queue = k, max_tasks = m, max_memory = b,
-- paths = bool}: n OS threads, each owning one Lua state made once (warm: globals a
-- task sets stay in its worker's state), running submitted tasks in order.
-- pool:submit([{timeout = ms},] fn_or_source, ...) gives a task with the shape of a
-- thread: join([timeout]), alive(), interrupt([arg]); select waits for tasks too.
-- pool:close([timeout [, cancel]]) refuses new tasks, runs (or cancels) the queued
-- ones and ends the workers. A pool copied anywhere (a task's upvalue, a thread, a
-- message, a result) is a handle of the same pool.

local H = require "spec.helper"

local llthreads = require "llthreads"

local function values(task, timeout)
  return H.pack(task:join(timeout))
end

describe("llthreads.pool", function()
  after_each(H.cleanup)

  it("makes size workers, runs init once in each, and tasks with their upvalues", function()
    local pool = llthreads.pool{ size = 2, init = function() INIT_RUNS = (INIT_RUNS or 0) + 1 end }
    assert.are.equal(2, pool:size())
    local k = 10
    H.assert_values({ true, 52, 1, n = 3 }, values(pool:submit(function(a) return a + 2 * k + 22, INIT_RUNS end, 10)))
    H.assert_values({ true, 3, n = 2 }, values(pool:submit("local a, b = ... return a + b", 1, 2)))
    assert.is_true(pool:close())
  end)

  it("defaults to one worker per CPU", function()
    local pool = llthreads.pool()
    assert.is_true(pool:size() >= 1)
    pool:close()
  end)

  it("fails its creation with init's error, and leaves no worker behind", function()
    local before = H.os_threads()
    local ok, err = pcall(llthreads.pool, { size = 3, init = function() error("no config") end })
    assert.is_false(ok)
    H.assert_contains(err, "no config")
    H.assert_contains(err, "stack traceback:")
    H.wait_until(function() return H.os_threads() <= before end, 10)
    assert.is_true(H.os_threads() <= before)
  end)

  it("starts tasks in submission order", function()
    local pool = llthreads.pool{ size = 1 }
    local order = llthreads.channel()
    local tasks = {}
    for i = 1, 20 do tasks[i] = pool:submit(function(i) order:send(i) end, i) end
    for i = 1, 20 do assert.is_true((tasks[i]:join())) end
    for i = 1, 20 do assert.are.equal(i, order:receive(0)) end
    pool:close()
  end)

  it("keeps a worker's state warm: globals stay, init's work is there", function()
    local pool = llthreads.pool{ size = 1, init = "json_like = { encode = tostring }" }
    pool:submit(function() LEFT_BEHIND = "yes" end):join()
    H.assert_values({ true, "yes", "42", n = 3 }, values(pool:submit(function() return LEFT_BEHIND, json_like.encode(42) end)))
    pool:close()
  end)

  it("gives workers the creator's package.path, or the environment's with paths = false", function()
    local saved = package.path
    package.path = "/pool-path/?.lua;" .. saved
    local ok, err = pcall(function()
      local pool = llthreads.pool{ size = 1 }
      H.assert_values({ true, "/pool-path/?.lua;" .. saved, n = 2 }, values(pool:submit(function() return package.path end)))
      pool:close()
      local plain = llthreads.pool{ size = 1, paths = false }
      local _, path = plain:submit(function() return package.path end):join()
      assert.is_nil(path:find("/pool-path/", 1, true))
      plain:close()
    end)
    package.path = saved
    assert(ok, err)
  end)

  it("reports a task's error as join does for a thread, and the worker goes on", function()
    local pool = llthreads.pool{ size = 1 }
    local line = debug.getinfo(1, "l").currentline + 1
    local got = values(pool:submit(function() error("task failed") end))
    assert.is_false(got[1])
    H.assert_contains(got[2], ("Error from child thread: %s:%d: task failed"):format(debug.getinfo(1, "S").short_src, line))
    H.assert_values({ true, "still here", n = 2 }, values(pool:submit(function() return "still here" end)))
    pool:close()
  end)

  it("joins once, with timeouts, and tells alive from done", function()
    local pool = llthreads.pool{ size = 1 }
    local gate = llthreads.channel()
    local t = pool:submit(function() return gate:receive(10000) end)
    assert.is_true(t:alive())
    H.assert_values({ nil, "timeout", n = 2 }, values(t, 0))
    H.assert_values({ nil, "timeout", n = 2 }, values(t, 20))
    gate:send("open")
    H.assert_values({ true, "open", n = 2 }, values(t))
    assert.is_false(t:alive())
    H.assert_values({ nil, "Can't join a task that has already been joined.", n = 2 }, values(t))
    pool:close()
  end)

  it("copies results by the rules of spawn's: functions come back, userdata is described", function()
    local pool = llthreads.pool{ size = 1 }
    local ok, f, u = pool:submit(function() local n = 4 return function(x) return x * n end, io.stdout end):join()
    assert.is_true(ok)
    assert.are.equal(20, f(5))
    H.assert_contains(u, "Un-supported value: userdata")
    pool:close()
  end)

  -- The submitting state keeps the bytecode of a function it submits again (so a
  -- loop of submits does not dump it every time); what a task sees must not change.
  describe("a function submitted many times", function()
    it("runs with its upvalues as they are at each submit, debug.setupvalue included", function()
      local pool = llthreads.pool{ size = 1 }
      local n = 0
      local function f(x) return x + n end
      for i = 1, 5 do
        n = i * 10
        H.assert_values({ true, i * 10 + 1, n = 2 }, values(pool:submit(f, 1)))
      end
      assert.are.equal("n", debug.setupvalue(f, 1, 1000))
      H.assert_values({ true, 1001, n = 2 }, values(pool:submit(f, 1)))
      pool:close()
    end)

    it("is told apart from other functions, also from new ones made where collected ones were", function()
      local pool = llthreads.pool{ size = 1 }
      for round = 1, 3 do
        local tasks = {}
        for i = 1, 40 do
          local f = assert((loadstring or load)("return " .. (round * 100 + i)))
          tasks[i] = { pool:submit(f), pool:submit(f), pool:submit(f) }
        end
        for i = 1, 40 do
          for _, t in ipairs(tasks[i]) do
            H.assert_values({ true, round * 100 + i, n = 2 }, values(t))
          end
        end
        tasks = nil
        collectgarbage()
        collectgarbage()
      end
      pool:close()
    end)
  end)

  -- The cache is a table in the registry, which Lua code reaches with `debug`: what it
  -- plants there must never be loaded as a function's code.
  describe("a function submitted many times, its cache tampered with", function()
    local function cache_of(f)
      for _, t in pairs(debug.getregistry()) do
        local mt = type(t) == "table" and getmetatable(t)
        if mt and rawget(mt, "__mode") == "k" and rawget(t, f) ~= nil then return t end
      end
    end

    it("regression: bytecode planted in the cache through the registry ran as the function", function()
      local pool = llthreads.pool{ size = 1 }
      local function f() return "f" end
      local function g() return "g" end
      for _ = 1, 2 do
        H.assert_values({ true, "f", n = 2 }, values(pool:submit(f)))
        H.assert_values({ true, "g", n = 2 }, values(pool:submit(g)))
      end
      local cache = cache_of(f)
      assert(cache, "the cache was not found in the registry")
      local plants = {
        string.dump(g), -- another function's valid bytecode
        rawget(cache, g), -- what the cache keeps for another function
        "\27Lua not bytecode at all",
        io.stdout, -- another library's userdata
        42,
      }
      local function ran_f(got, what)
        assert(got.n == 2 and got[1] == true and got[2] == "f", what .. " gave " .. H.show_pack(got))
      end
      for i, plant in ipairs(plants) do
        rawset(cache, f, plant)
        ran_f(values(pool:submit(f)), "plant " .. i .. ": submit")
        rawset(cache, f, plant)
        ran_f(H.pack(llthreads.spawn(f):join()), "plant " .. i .. ": spawn")
      end
      H.assert_values({ true, "g", n = 2 }, values(pool:submit(g)))
      pool:close()
    end)
  end)

  -- A pool is a value: copied into a task (an upvalue, an argument), a thread, a
  -- channel message or a result, it is a handle of the same pool there.
  describe("as a value", function()
    it("lets a task submit to its own pool and join what it submitted", function()
      local pool = llthreads.pool{ size = 2 }
      local t = pool:submit(function(x)
        local inner = pool:submit(function(y) return y * 2 end, x)
        return inner:join()
      end, 21)
      H.assert_values({ true, true, 42, n = 3 }, values(t))
      pool:close()
    end)

    it("is the same pool in every copy: ==, tostring and size agree", function()
      local pool = llthreads.pool{ size = 3 }
      local ok, back, same_inside = pool:submit(function(p) return p, p == pool end, pool):join()
      assert.is_true(ok)
      assert.is_true(same_inside)
      assert.is_true(back == pool)
      assert.are.equal(tostring(pool), tostring(back))
      assert.are.equal(3, back:size())
      assert.is_false(back == llthreads.pool{ size = 1 })
      pool:close()
    end)

    it("crosses to a thread and through a channel, and works there", function()
      local pool = llthreads.pool{ size = 1 }
      local t = llthreads.new([[
        local p = ...
        return p:submit(function() return "from a thread" end):join()
      ]], pool)
      assert(t:start())
      H.assert_values({ true, true, "from a thread", n = 3 }, H.pack(t:join()))
      local ch = llthreads.channel()
      ch:send({ pool = pool })
      local got = ch:receive()
      assert.is_true(got.pool == pool)
      H.assert_values({ true, 5, n = 2 }, values(got.pool:submit(function() return 5 end)))
      pool:close()
    end)

    it("keeps running while a thread holds it, after its creator's handle was collected", function()
      local pool = llthreads.pool{ size = 1 }
      local gate = llthreads.channel()
      local t = llthreads.new([[
        local p, gate = ...
        gate:receive()
        return p:submit(function() return "still running" end):join()
      ]], pool, gate)
      assert(t:start())
      pool = nil
      collectgarbage()
      collectgarbage()
      gate:send(true)
      H.assert_values({ true, true, "still running", n = 3 }, H.pack(t:join()))
    end)

    it("keeps running while a message a task sent holds it", function()
      local pool = llthreads.pool{ size = 1 }
      local ch = llthreads.channel()
      pool:submit(function(ch) ch:send(pool) end, ch):join()
      pool = nil
      collectgarbage()
      collectgarbage()
      local copy = ch:receive(1000)
      H.assert_values({ true, "still running", n = 2 }, values(copy:submit(function() return "still running" end)))
      copy:close()
    end)

    it("does not keep its pool running from the pool's own worker states", function()
      local pool = llthreads.pool{ size = 1 }
      local ended = llthreads.channel()
      -- A global of the warm worker state holds the pool; a finalizer there tells
      -- when that state is closed, which happens once the pool ends.
      pool:submit(function(ended)
        HELD = pool
        local function on_close() ended:send("worker state closed") end
        if newproxy then
          WATCH = newproxy(true)
          getmetatable(WATCH).__gc = on_close
        else
          WATCH = setmetatable({}, { __gc = on_close })
        end
      end, ended):join()
      pool = nil
      collectgarbage()
      collectgarbage()
      H.assert_values({ "worker state closed", n = 1 }, H.pack(ended:receive(10000)))
    end)

    it("refuses close() from one of its own tasks, which would wait for itself", function()
      local pool = llthreads.pool{ size = 1 }
      local ok, caught, err = pool:submit(function() return pcall(pool.close, pool) end):join()
      assert.is_true(ok)
      assert.is_false(caught)
      H.assert_contains(err, "a pool cannot be closed from one of its own tasks")
      H.assert_values({ true, "open", n = 2 }, values(pool:submit(function() return "open" end)))
      pool:close()
    end)

    it("closes from a copy held elsewhere, and then refuses tasks in every copy", function()
      local pool = llthreads.pool{ size = 1 }
      local t = llthreads.new("local p = ... return p:close()", pool)
      assert(t:start())
      H.assert_values({ true, true, n = 2 }, H.pack(t:join()))
      H.assert_values({ nil, "closed", n = 2 }, H.pack(pool:submit(function() end)))
      assert.is_true(pool:close())
    end)
  end)

  it("refuses what cannot be copied at submit, before anything is queued", function()
    local pool = llthreads.pool{ size = 1 }
    local handle = io.stdout
    local ok, err = pcall(pool.submit, pool, function() return handle end)
    assert.is_false(ok)
    H.assert_contains(err, "upvalue 'handle' of function")
    pool:close()
  end)

  describe("interrupt", function()
    it("stops only its own task; the worker runs the next one with no hook left", function()
      local pool = llthreads.pool{ size = 1 }
      -- The loop calls a C function: LuaJIT runs no hook inside a compiled trace, and
      -- `while true do end` may be compiled before the interrupt lands (README,
      -- "interrupt on LuaJIT"); os.clock keeps the loop in the interpreter.
      local spinning = pool:submit(function() while true do os.clock() end end)
      local next_one = pool:submit(function()
        local n = 0
        for i = 1, 2e6 do n = n + i end
        return n, debug.gethook()
      end)
      spinning:interrupt(true)
      local got = values(spinning)
      assert.is_false(got[1])
      H.assert_contains(got[2], llthreads.interrupted_error)
      local after = values(next_one)
      assert.is_true(after[1])
      assert.are.equal(2e6 * (2e6 + 1) / 2, after[2])
      assert.is_nil(after[3])
      pool:close()
    end)

    it("made before the task runs applies when it starts", function()
      local pool = llthreads.pool{ size = 1 }
      local gate = llthreads.channel()
      local blocker = pool:submit(function() return gate:receive(10000) end)
      local queued = pool:submit(function() while true do end end)
      queued:interrupt(true)
      gate:send(1)
      assert.is_true((blocker:join()))
      assert.is_false((queued:join()))
      pool:close()
    end)
  end)

  describe("a bounded queue", function()
    it("makes submit wait for room, or fail with a timeout or at once with timeout 0", function()
      local pool = llthreads.pool{ size = 1, queue = 1 }
      local gate, started = llthreads.channel(), llthreads.channel()
      local running = pool:submit(function() started:send(true) return gate:receive(10000) end)
      assert.is_true(started:receive(10000))
      -- the worker has taken `running`; one more fits in the queue
      local queued = pool:submit({ timeout = 0 }, function() return "queued" end)
      assert.is_not_nil(queued)
      H.assert_values({ nil, "full", n = 2 }, H.pack(pool:submit({ timeout = 0 }, function() end)))
      local t0 = H.now()
      H.assert_values({ nil, "timeout", n = 2 }, H.pack(pool:submit({ timeout = 50 }, function() end)))
      assert.is_true(H.now() - t0 >= 0.04)
      gate:send("go")
      assert.is_true((running:join()))
      H.assert_values({ true, "queued", n = 2 }, values(queued))
      pool:close()
    end)

    it("lets interrupt() reach a submitter waiting for room", function()
      local out = H.survives([[
        local llthreads = require "llthreads"
        local t = llthreads.spawn(function()
          local llthreads = require "llthreads"
          local pool = llthreads.pool{ size = 1, queue = 1 }
          local gate = llthreads.channel()
          pool:submit(function() return gate:receive(20000) end)
          local t0 = os.time()
          while not pool:submit({ timeout = 0 }, function() end) do
            if os.time() - t0 > 5 then error("never queued") end
          end
          local ok, err = pcall(pool.submit, pool, function() end)
          gate:send(1)
          pool:close()
          return ok, err
        end)
        require("llthreads").sleep(300)
        t:interrupt()
        local ok, a, b = t:join()
        assert(ok, a)
        assert(a == false and tostring(b):find("interrupted"), tostring(b))
        print("interrupted")
      ]])
      H.assert_contains(out, "interrupted")
    end)
  end)

  describe("close", function()
    it("lets queued tasks run, then refuses new ones", function()
      local pool = llthreads.pool{ size = 1 }
      local tasks = {}
      for i = 1, 5 do tasks[i] = pool:submit(function(i) return i end, i) end
      assert.is_true(pool:close())
      for i = 1, 5 do H.assert_values({ true, i, n = 2 }, values(tasks[i])) end
      H.assert_values({ nil, "closed", n = 2 }, H.pack(pool:submit(function() end)))
      assert.is_true(pool:close()) -- again: nothing left to do
    end)

    it("cancels queued tasks when asked, and their join says so", function()
      local pool = llthreads.pool{ size = 1 }
      local gate, started = llthreads.channel(), llthreads.channel()
      local running = pool:submit(function() started:send(true) return gate:receive(10000) end)
      local queued = pool:submit(function() return "ran" end)
      assert.is_true(started:receive(10000))
      local closer = llthreads.spawn(function() require("llthreads").sleep(100) gate:send("go") end)
      assert.is_true(pool:close(nil, true))
      H.assert_values({ true, "go", n = 2 }, values(running))
      local got = values(queued)
      assert.is_false(got[1])
      H.assert_contains(got[2], "cancelled")
      closer:join()
    end)

    it("with a timeout gives nil, 'timeout' while a task still runs", function()
      local pool = llthreads.pool{ size = 1 }
      local gate = llthreads.channel()
      local t = pool:submit(function() return gate:receive(10000) end)
      H.assert_values({ nil, "timeout", n = 2 }, H.pack(pool:close(30)))
      gate:send(1)
      assert.is_true(pool:close())
      assert.is_true((t:join()))
    end)

    it("happens when the pool is collected, without waiting, and at exit with busy workers", function()
      local code, out = H.run_lua([[
        local llthreads = require "llthreads"
        local pool = llthreads.pool{ size = 2 }
        local t = pool:submit(function() return 6 * 7 end)
        pool = nil
        collectgarbage() collectgarbage()
        local ok, v = t:join()
        assert(ok and v == 42)
        local busy = llthreads.pool{ size = 2 }
        for i = 1, 4 do busy:submit(function() local x = 0 for i = 1, 1e7 do x = x + i end return x end) end
        print("exiting")
        os.exit(3)
      ]], nil, 60)
      assert(not H.crashed(code, out), out)
      assert.are.equal(3, code, out)
      H.assert_contains(out, "exiting")
    end)
  end)

  describe("recycling", function()
    it("gives a worker a fresh state (init again) after max_tasks tasks", function()
      local pool = llthreads.pool{ size = 1, max_tasks = 2, init = function() SEEN = 0 end }
      local seen = {}
      for i = 1, 5 do
        local _, v = pool:submit(function() SEEN = SEEN + 1 return SEEN end):join()
        seen[i] = v
      end
      assert.are.same({ 1, 2, 1, 2, 1 }, seen)
      pool:close()
    end)

    it("gives a worker a fresh state once it holds more than max_memory bytes after a task", function()
      local pool = llthreads.pool{ size = 1, max_memory = 4 * 1024 * 1024 }
      pool:submit(function() HOARD = string.rep("x", 8 * 1024 * 1024) end):join()
      H.assert_values({ true, "nil", n = 2 }, values(pool:submit(function() return type(HOARD) end)))
      pool:submit(function() SMALL = 1 end):join()
      H.assert_values({ true, 1, n = 2 }, values(pool:submit(function() return SMALL end)))
      pool:close()
    end)

    -- A state keeps the small objects' memory it freed for its own next objects until
    -- it closes; that memory is held, so it counts.
    it("counts small objects a task freed as held: max_memory gives their memory back", function()
      local pool = llthreads.pool{ size = 1, max_memory = 4 * 1024 * 1024 }
      local _, alive = pool:submit(function()
        MARK = true
        local t = {}
        for i = 1, 100000 do t[i] = { i } end
        t = nil
        collectgarbage()
        collectgarbage()
        return collectgarbage("count") < 1024
      end):join()
      assert.is_true(alive, "the task's objects were not collected")
      -- With LLTHREADS_MALLOC=system (valgrind runs) each object was malloc's own and
      -- went back to it: the state holds nothing more, and goes on.
      local packed = os.getenv("LLTHREADS_MALLOC") ~= "system"
      H.assert_values({ true, packed and "nil" or "boolean", n = 2 },
        values(pool:submit(function() return type(MARK) end)))
      pool:close()
    end)
  end)

  it("loads a function submitted many times once per worker", function()
    local pool = llthreads.pool{ size = 1 }
    local function task(x) LOADS = LOADS or {} local me = debug.getinfo(1, "f").func LOADS[me] = true return x end
    for i = 1, 20 do pool:submit(task, i):join() end
    local _, distinct = pool:submit(function() local n = 0 for _ in pairs(LOADS) do n = n + 1 end return n end):join()
    assert.are.equal(1, distinct)
    pool:close()
  end)

  it("works with channels and select, and from a child thread", function()
    local got = H.pack(llthreads.spawn(function()
      local llthreads = require "llthreads"
      local pool = llthreads.pool{ size = 2 }
      local results = llthreads.channel()
      local a = pool:submit(function() results:send("from a") return "a" end)
      local b = pool:submit(function() return "b" end)
      local first = llthreads.select({ a, b }, 5000)
      assert(first == a or first == b)
      local _, va = a:join()
      local _, vb = b:join()
      pool:close()
      return va, vb, results:receive(1000)
    end):join())
    H.assert_values({ true, "a", "b", "from a", n = 4 }, got)
  end)

  describe("bad input", function()
    local function refused(options, text)
      local ok, err = pcall(llthreads.pool, options)
      assert.is_false(ok, H.show(text))
      H.assert_contains(err, text)
    end

    it("refuses bad options", function()
      refused(5, "table of options expected, got number")
      refused({ size = 0 }, "size must be between 1 and 1024 threads")
      refused({ size = 2000 }, "size must be between 1 and 1024 threads")
      refused({ size = "2" }, "option 'size': a number of bytes expected, got string")
      refused({ queue = 0 }, "queue must hold at least 1 task")
      refused({ max_tasks = 0 }, "max_tasks must be at least 1")
      refused({ max_memory = 0 }, "max_memory must be a positive number of bytes")
      refused({ paths = 1 }, "option 'paths': a boolean expected, got number")
      refused({ init = 5 }, "option 'init': a function or source expected, got number")
      local handle = io.stdout
      refused({ init = function() return handle end, size = 1 }, "upvalue 'handle' of function")
      refused({ nope = 1 }, "unknown option 'nope'")
      refused({ [1] = 1 }, "option names are strings, got number")
    end)

    it("refuses bad method calls", function()
      local pool = llthreads.pool{ size = 1 }
      local t = pool:submit(function() end)
      H.assert_error("llthreads.pool expected, got nil", function() pool.submit(nil, function() end) end)
      H.assert_error("llthreads.pool expected, got userdata", function() pool.submit(t, function() end) end)
      H.assert_error("function or source expected, got number", function() pool:submit(5) end)
      H.assert_error("function or source expected, got no value", function() pool:submit() end)
      H.assert_error("the only option of submit is timeout", function() pool:submit({ wait = 1 }, function() end) end)
      H.assert_error("timeout must be a non-negative number of milliseconds", function() pool:submit({ timeout = -1 }, function() end) end)
      H.assert_error("llthreads.task expected, got userdata", function() t.join(pool) end)
      H.assert_error("timeout must be a non-negative number of milliseconds", function() pool:close(-5) end)
      t:join()
      pool:close()
    end)
  end)
end)
