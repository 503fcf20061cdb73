-- Stress: many threads, fast, at once, collected, interrupted, racing their own
-- end, and a parent process exiting under running detached threads.
--
-- Size: LLTHREADS_STRESS scales every count between modest (1, the default,
-- what tools/test.sh runs) and full size (20: tools/stress-full.sh):
--   sequential spawn+join     1000 .. 20000
--   threads alive at once      100 .. 1000
--   objects collected per mode 200 .. 4000
--   interrupt storm threads     20 .. 400
--   end races                  300 .. 6000
--   exit runs per case           2 .. 20
--   threads starting threads    40 .. 800 (5 grandchildren each)
--   storms on failing children 1000 .. 20000 (3000 .. 20000 in a fresh interpreter)

local H = require "spec.helper"
local llthreads = require "llthreads"

local SCALE = tonumber(os.getenv("LLTHREADS_STRESS") or "") or 1
if SCALE < 1 then SCALE = 1 end
local function size(modest, full)
  return math.floor(modest + (full - modest) * (SCALE - 1) / 19 + 0.5)
end

local N_SEQ = size(1000, 20000)
local M_ALIVE = size(100, 1000)
local K_GC = size(200, 4000)
local STORM = size(20, 400)
local RACES = size(300, 6000)
local EXIT_RUNS = size(2, 20)
local NESTED = size(40, 800)
local ERR_STORMS = size(1000, 20000)
local ERR_STORMS_FRESH = size(3000, 20000)

local INTERRUPTED = llthreads.interrupted_error
local QUIET = "require('llthreads').set_logger(function() end) "

local MODES = {
  { name = "start(false, false)", d = false, j = false },
  { name = "start(false, true)", d = false, j = true },
  { name = "start(true, false)", d = true, j = false },
  { name = "start(true, true)", d = true, j = true },
}

-- Unblocks `gate` after `sec` seconds from another thread, so that a module
-- bug that makes the parent wait on gated children fails the test instead of
-- hanging it.
local function watchdog(gate, sec)
  local code = H.CHILD_TIME .. "local p, s = ... sleep(s) local f = io.open(p, 'r+') if f then f:close() end"
  return llthreads.new(code, gate.path, sec):start(true)
end

describe("stress (LLTHREADS_STRESS=" .. SCALE .. ")", function()
  after_each(H.cleanup)

  it(("runs %d threads one after another, each joined"):format(N_SEQ), function()
    local rss_early
    for i = 1, N_SEQ do
      local r = H.pack(llthreads.new("return ...", i, "x"):start():join())
      if not (r.n == 3 and r[1] == true and r[2] == i and r[3] == "x") then
        error(("iteration %d: join gave %s"):format(i, H.show_pack(r)))
      end
      if i == math.floor(N_SEQ / 5) then
        collectgarbage()
        rss_early = H.rss_kb()
      end
    end
    collectgarbage()
    local grew = H.rss_kb() - rss_early
    assert(grew < 10 * 1024, ("RSS grew by %d kB over %d spawn+join"):format(grew, N_SEQ - N_SEQ / 5))
  end)

  it(("keeps %d threads alive at once, then joins them all"):format(M_ALIVE), function()
    local gate = H.gate()
    finally(function() gate:release() end)
    local tids = H.tmpname()
    H.write_file(tids, "")
    -- each child appends the id of its OS thread, then waits on the gate
    local code = H.CHILD_TID .. "do local f = assert(io.open((select(2, ...)), 'ab')) "
      .. "f:write(tostring(tid()) .. '\\n') f:close() end "
      .. H.GATE_WAIT .. "return (select(3, ...))"
    local threads = {}
    for i = 1, M_ALIVE do
      threads[i] = llthreads.new(code, gate.path, tids, i)
      assert(rawequal(threads[i]:start(), threads[i]), "start failed at thread " .. i)
    end
    -- all of them wait on the gate, each on an OS thread of its own, all there at once
    local seen
    local function count()
      seen = {}
      local n = 0
      for line in io.lines(tids) do
        local id = tonumber(line)
        if id and not seen[id] then seen[id] = true n = n + 1 end
      end
      return n
    end
    assert(H.wait_until(function() return count() >= M_ALIVE end, 60),
      ("%d distinct OS threads reported for %d started threads"):format(count(), M_ALIVE))
    for id in pairs(seen) do
      assert(H.task_exists(id), "OS thread " .. id .. " is gone while its Lua thread waits")
    end
    for i = 1, M_ALIVE do
      local a = H.pack(threads[i]:alive())
      H.expect(a.n == 1 and a[1] == true, "thread %s: alive gave %s", i, a)
      H.assert_nil_msg(H.pack(threads[i]:join(0)), "timeout")
    end
    gate:release()
    for i = 1, M_ALIVE do
      local r = H.pack(threads[i]:join())
      H.expect(r.n == 2 and r[1] == true and r[2] == i, "thread %s: join gave %s", i, r)
    end
    gate:close()
  end)

  for _, m in ipairs(MODES) do
    it(("collects %d thread objects while their threads run, %s"):format(K_GC, m.name), function()
      local counter = H.tmpname()
      H.write_file(counter, "")
      -- each child appends one byte when it is done
      -- (the counter path is the last argument: 1st when attached, 2nd after the gate)
      local function tail(argn)
        return ("local f = assert(io.open((select(%d, ...)), 'ab')) f:write('x') f:close() return 1, {2}"):format(argn)
      end
      if not m.d then
        -- attached: collection joins, so the children must end on their own
        local code = "local s = 0 for i = 1, 20000 do s = s + i end " .. tail(1)
        for i = 1, K_GC do
          llthreads.new(code, counter):start(m.d, m.j)
          if i % 50 == 0 then collectgarbage() end
        end
        collectgarbage()
        collectgarbage()
      else
        -- detached: the children wait on a gate while their objects are
        -- collected; collection must not wait for them
        local gate = H.gate()
        finally(function() gate:release() end)
        -- Generous: under valgrind on a loaded machine starting the 200 threads alone
        -- has taken over 10 s, and an early release reads as a collection that waited.
        watchdog(gate, 60)
        for i = 1, K_GC do
          llthreads.new(H.GATE_WAIT .. tail(2), gate.path, counter):start(m.d, m.j)
          if i % 50 == 0 then collectgarbage("step") end
        end
        local t0 = H.now()
        collectgarbage()
        collectgarbage()
        local took = H.now() - t0
        assert(took < 5, ("collecting detached thread objects took %.2f s"):format(took))
        -- none could finish yet: they wait on the gate
        assert.are.equal(0, H.file_size(counter))
        gate:release()
      end
      -- every child ran to its end, after its object was collected
      assert(H.wait_until(function() return H.file_size(counter) == K_GC end, 60),
        ("%s of %d children finished"):format(tostring(H.file_size(counter)), K_GC))
    end)
  end

  it(("runs %d threads that start grandchildren in every mode and never join them"):format(NESTED), function()
    local counter = H.tmpname()
    H.write_file(counter, "")
    -- the child's state closes with its grandchildren's objects in it (in the
    -- child thread, or in the parent's join for start(false, true))
    local code = [[
      local llthreads = require "llthreads"
      local counter = ...
      local leaf = "local f = assert(io.open((...), 'ab')) f:write('x') f:close()"
      for _, m in ipairs({ { false, false }, { false, true }, { true, false }, { true, true } }) do
        llthreads.new(leaf, counter):start(m[1], m[2])
      end
      keep = llthreads.new(leaf, counter):start(true, true)
      return "child done"
    ]]
    local joinable = {}
    for i = 1, NESTED do
      local m = MODES[(i % 4) + 1]
      local t = llthreads.new(code, counter):start(m.d, m.j)
      if m.j or not m.d then joinable[#joinable + 1] = { t = t, m = m } end
      if #joinable >= 20 or i == NESTED then
        for _, e in ipairs(joinable) do
          local r = H.pack(e.t:join())
          if e.m.j and not e.m.d then
            H.expect(r.n == 2 and r[1] == true and r[2] == "child done", "join gave %s", r)
          else
            H.expect(r[1] == true, "join gave %s", r)
          end
        end
        joinable = {}
      end
    end
    assert(H.wait_until(function() return H.file_size(counter) == NESTED * 5 end, 60),
      ("%s of %d grandchildren finished"):format(tostring(H.file_size(counter)), NESTED * 5))
  end)

  describe("interrupt storms", function()
    -- A child that keeps running whatever single interrupts hit its pcall;
    -- only interrupt(true) stops it early. Otherwise it runs until the file
    -- named by its argument exists (the spec creates it when done), at most
    -- 300 s. Not a shorter fixed deadline: with hundreds of busy threads on
    -- two cores the parent may need more than 20 s to send its storm, and the
    -- first threads then ended on their own before their interrupt(true) was
    -- even sent (the full-size run failed that way).
    local LOOPER = QUIET .. H.CHILD_TIME .. [[
      local release = ...
      local t0, caught, turns = now(), 0, 0
      while now() - t0 < 300 do
        local ok = pcall(function() local x = 0 for i = 1, 50 do x = x + i end return x end)
        if not ok then caught = caught + 1 end
        turns = turns + 1
        if turns % 1000 == 0 then
          local f = io.open(release, 'rb')
          if f then f:close() break end
        end
      end
      return 'ran to the end', caught, now() - t0
    ]]

    it(("on %d running threads: nil/false/true storms, then join"):format(STORM), function()
      local threads = {}
      local release = H.tmpname()
      finally(function() H.touch(release) end)
      for i = 1, STORM do threads[i] = llthreads.new(LOOPER, release):start() end
      local args = { { n = 0 }, { n = 1, nil }, { n = 1, false }, { n = 1, nil }, { n = 1, false } }
      for _ = 1, 50 do
        for i = 1, STORM do
          local a = args[(i % #args) + 1]
          threads[i]:interrupt(H.unpack(a, 1, a.n))
        end
      end
      for i = 1, STORM do threads[i]:interrupt(true) end
      for i = 1, STORM do
        -- A thread interrupt(true) did not stop would run until released.
        local r = H.pack(threads[i]:join(60000)) -- ms
        if r[1] == nil then H.touch(release) r = H.pack(threads[i]:join()) end
        H.expect(r[1] == false and type(r[2]) == "string" and r[2]:find(INTERRUPTED, 1, true),
          "thread %s: join gave %s", i, r)
        -- after join: no child state, interrupts do nothing
        threads[i]:interrupt()
        threads[i]:interrupt(true)
        threads[i]:interrupt(false)
      end
    end)

    for _, m in ipairs(MODES) do
      it(("in %s: storms while running, while ending and after the end"):format(m.name), function()
        local threads = {}
        local n = math.max(5, math.floor(STORM / 2))
        local can_ask = m.j or not m.d -- alive() works in this mode
        local function all_ended()
          for i = 1, n do
            if threads[i]:alive() ~= false then return false end
          end
          return true
        end
        local release = H.tmpname()
        finally(function() H.touch(release) end)
        for i = 1, n do threads[i] = llthreads.new(LOOPER, release):start(m.d, m.j) end
        for round = 1, 30 do
          for i = 1, n do
            threads[i]:interrupt(round % 3 == 0 and false or nil)
          end
        end
        -- stop them, and keep interrupting while they end and after
        local ended = false
        for round = 1, 2000 do
          for i = 1, n do
            local v = round % 3
            if v == 0 then threads[i]:interrupt(true)
            elseif v == 1 then threads[i]:interrupt()
            else threads[i]:interrupt(false) end
            threads[i]:interrupt(true)
          end
          if can_ask and round % 20 == 0 and all_ended() then ended = true break end
        end
        if not ended then
          if can_ask then
            ended = H.wait_until(all_ended, 15)
          else
            -- no alive() here: the busy children have stopped once the
            -- process stops using CPU
            ended = H.wait_cpu_quiet(15)
          end
        end
        assert(ended, "interrupt(true) did not stop the threads")
        for _ = 1, 20 do
          for i = 1, n do
            threads[i]:interrupt()
            threads[i]:interrupt(true)
            threads[i]:interrupt(false)
          end
        end
        if m.j or not m.d then
          for i = 1, n do
            local r = H.pack(threads[i]:join())
            if m.j and not m.d then
              H.expect(r[1] == false and tostring(r[2]):find(INTERRUPTED, 1, true),
                "thread %s: join gave %s", i, r)
            else
              H.expect(r[1] == true, "thread %s: join gave %s", i, r)
            end
            threads[i]:interrupt(true)
          end
        end
        threads = nil
        collectgarbage()
      end)
    end
  end)

  describe("racing the end of very short threads", function()
    it(("alive() and join(0) right after start, %d times"):format(RACES), function()
      for i = 1, RACES do
        local t = llthreads.new("return ...", i):start()
        local saw_finished = false
        local spins = 0
        while true do
          spins = spins + 1
          local a = H.pack(t:alive())
          H.expect(a.n == 1 and type(a[1]) == "boolean", "alive gave %s", a)
          if a[1] == false then saw_finished = true end
          local j = H.pack(t:join(0))
          if j[1] == nil then
            H.assert_nil_msg(j, "timeout")
            H.expect(not saw_finished, "run %s: alive() said finished, then join(0) said timeout", i)
          else
            H.expect(j.n == 2 and j[1] == true and j[2] == i, "run %s: join(0) gave %s", i, j)
            break
          end
          assert(spins < 1e7, "thread never finished")
        end
      end
    end)

    it(("interrupt() racing the end, %d times in each mode"):format(RACES), function()
      for i = 1, RACES do
        local m = MODES[(i % 4) + 1]
        local t = llthreads.new(QUIET .. "return ...", i):start(m.d, m.j)
        if m.d and not m.j then
          -- the child frees its own state when it ends, maybe right now
          for k = 1, 20 do t:interrupt(k % 2 == 0 or nil) end
        else
          local j
          repeat
            t:interrupt()
            t:interrupt(false)
            j = H.pack(t:join(0))
          until j[1] ~= nil or j[2] ~= "timeout"
          if m.j and not m.d then
            local ok = (j.n == 2 and j[1] == true and j[2] == i)
              or (j[1] == false and tostring(j[2]):find(INTERRUPTED, 1, true))
            H.expect(ok, "run %s: join(0) gave %s", i, j)
          else
            H.expect(j[1] == true, "run %s (%s): join(0) gave %s", i, m.name, j)
          end
          t:interrupt(true)
        end
      end
      collectgarbage()
    end)

    -- The storm meets the child while it handles its own error (the message
    -- handler runs): the error must still be the child's own or the
    -- interruption, never lost ("error in error handling").
    it(("interrupt storms while the child fails with its own error, %d times"):format(ERR_STORMS), function()
      local code = QUIET .. "local n = ... for i = 1, n do pcall(function() end) end error('own failure')"
      for i = 1, ERR_STORMS do
        local t = llthreads.new(code, (i % 50) * 100):start()
        local ok, msg
        repeat -- (a tight loop: no allocation in it)
          t:interrupt(true)
          t:interrupt(false)
          t:interrupt()
          ok, msg = t:join(0)
        until ok ~= nil or msg ~= "timeout"
        local m = tostring(msg)
        H.expect(ok == false and (m:find("own failure", 1, true) or m:find(INTERRUPTED, 1, true)) ~= nil,
          "run %s: join gave %s, %s", i, ok, msg)
      end
    end)

    -- The same in a fresh interpreter: without busted's heap and modules in the
    -- way the parent storms faster and the window is hit far more often.
    it(("interrupt storms while the child fails with its own error, %d times in a fresh interpreter"):format(ERR_STORMS_FRESH), function()
      local code, out = H.run_lua(([[
        local llthreads = require "llthreads"
        local code = "require('llthreads').set_logger(function() end) "
          .. "local n = ... for i = 1, n do pcall(function() end) end error('own failure')"
        local lost, first = 0, nil
        for i = 1, %d do
          local t = llthreads.new(code, (i %% 50) * 100):start()
          local ok, msg
          repeat t:interrupt(true) t:interrupt(false) t:interrupt() ok, msg = t:join(0) until ok ~= nil
          if ok ~= false or not (msg:find("own failure", 1, true) or msg:find(llthreads.interrupted_error, 1, true)) then
            lost = lost + 1
            first = first or (tostring(ok) .. ", " .. tostring(msg))
          end
        end
        print("LOST " .. lost .. " " .. tostring(first))
      ]]):format(ERR_STORMS_FRESH), nil, 300)
      assert(not H.crashed(code, out), "crashed:\n" .. out:sub(-2000))
      -- (the output also holds the children's reports of interrupted errors)
      assert(code == 0 and out:find("LOST 0 nil", 1, true),
        ("joins that lost the error (exit %s): %s"):format(tostring(code), out:match("LOST[^\n]*") or out:sub(-2000)))
    end)

    it(("join(0) with alive() in the modes where the child closes its state, %d times"):format(RACES), function()
      for i = 1, RACES do
        local m = (i % 2 == 0) and MODES[1] or MODES[4]
        local t = llthreads.new("return 1"):start(m.d, m.j)
        local j
        repeat
          local a = H.pack(t:alive())
          H.expect(a.n == 1 and type(a[1]) == "boolean", "alive gave %s", a)
          j = H.pack(t:join(0))
          if j[1] == nil then H.assert_nil_msg(j, "timeout") end
        until j[1] ~= nil
        H.expect(j[1] == true, "run %s (%s): join(0) gave %s", i, m.name, j)
        H.assert_nil_msg(H.pack(t:alive()), "Can't join a thread that has already been joined.")
      end
    end)
  end)

  describe("process exit with threads still running", function()
    -- The script: a big heap (so closing the state takes a while after the
    -- C modules are unloaded), then 20 threads of spread-out lengths (or
    -- endless), then the given ending.
    local function script(m, work, ending)
      return ([[
        local llthreads = require "llthreads"
        local heap = {}
        for i = 1, 200000 do heap[i] = { i } end
        local keep = {}
        for i = 1, 20 do
          local code = %q
          local t = llthreads.new(code, i * 50000)
          assert(t:start(%s, %s))
          if i %% 2 == 0 then keep[i] = t end
        end
        io.write("STARTED\n") io.flush()
        %s
      ]]):format(work, tostring(m.d), tostring(m.j), ending)
    end
    local FINITE = "local n = ... local s = 0 for i = 1, n do s = s + i end return s"
    local ENDLESS = "while true do end"

    local CASES = {
      { modes = { 3, 4 }, work = FINITE, ending = "", code = 0, what = "script end" },
      { modes = { 3, 4 }, work = ENDLESS, ending = "", code = 0, what = "script end, endless threads" },
      { modes = { 3, 4 }, work = FINITE, ending = "os.exit(3)", code = 3, what = "os.exit(3)" },
      { modes = { 3, 4 }, work = ENDLESS, ending = "os.exit(4, true)", code = 4, what = "os.exit(4, true), endless threads" },
      { modes = { 3, 4 }, work = FINITE, ending = "os.exit(5, true)", code = 5, what = "os.exit(5, true)" },
      { modes = { 3, 4 }, work = ENDLESS, ending = "error('boom')", code = 1, what = "error at top level, endless threads" },
      -- attached threads: closing the state joins them (they end on their own)
      { modes = { 1, 2 }, work = FINITE, ending = "", code = 0, what = "script end" },
      { modes = { 1, 2 }, work = FINITE, ending = "os.exit(6, true)", code = 6, what = "os.exit(6, true)" },
      { modes = { 1, 2 }, work = ENDLESS, ending = "os.exit(7)", code = 7, what = "os.exit(7), endless threads" },
    }

    for _, c in ipairs(CASES) do
      for _, mi in ipairs(c.modes) do
        local m = MODES[mi]
        it(("%s with %s threads running: exit status %d, no crash (%d runs)"):format(c.what, m.name, c.code, EXIT_RUNS), function()
          local src = script(m, c.work, c.ending)
          for run = 1, EXIT_RUNS do
            local code, out = H.run_lua(src, nil, 60)
            assert(not H.crashed(code, out), ("run %d crashed (exit %s):\n%s"):format(run, tostring(code), out))
            assert(code == c.code, ("run %d: exit status %s, want %d:\n%s"):format(run, tostring(code), c.code, out))
            assert(out:find("STARTED", 1, true), "script did not get to start its threads:\n" .. out)
          end
        end)
      end
    end
  end)
end)
