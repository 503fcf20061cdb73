local H = require "spec.helper"

local llthreads = require "llthreads"

-- Where an interrupt lands: inside coroutines, without losing the child's own
-- debug hook, only in the chunk's own code (never inside the library's work),
-- and only when the library itself sent the signal.
--
-- The loops call os.clock() each turn, a C function, so they keep producing
-- hook events on LuaJIT too, where JIT-compiled code runs no hooks. Loops are
-- bounded by the clock, so a broken interrupt costs seconds, not a hang.
local BUSY = "local function busy(n) for i = 1, n do os.clock() end end "
local SPIN = "local function spin(s) local deadline = os.time() + s while os.time() < deadline do busy(100) end end "
local UNPACK = "local unpack = table.unpack or unpack "

local function new_child(code, ...)
  return llthreads.new(H.quiet(H.child(BUSY .. SPIN .. UNPACK .. code)), ...)
end

-- Starts `code` (which touches its first argument once it is where the spec
-- wants it), waits for that, and a little longer so that it is well inside.
local function start_and_wait(code, ...)
  local ready = H.tmpname()
  local t = new_child(code, ready, ...):start()
  assert.is_true(H.wait_file(ready, 10), "the child did not get ready")
  H.sleep(0.1)
  return t
end

describe("thread:interrupt() inside coroutines", function()
  after_each(H.cleanup)

  -- The defect: on PUC Lua a hook belongs to one coroutine, and the interrupt
  -- hook went on the chunk's state only, so a loop in a coroutine made before
  -- the request ran to its end (join(4000) gave nil, "timeout").
  it("stops a loop inside coroutine.wrap, in a coroutine made before the request", function()
    local t = start_and_wait([[
      local ready = ...
      local work = coroutine.wrap(function() touch(ready) spin(10) return 'not interrupted' end)
      return work()
    ]])
    finally(function() t:join() end)
    t:interrupt()
    -- Well before the loop would end by itself.
    local ok, err = t:join(4000)
    assert.are.equal(false, ok)
    H.assert_contains(err, llthreads.interrupted_error)
  end)

  -- coroutine.resume catches the error as pcall would: the innermost coroutine
  -- ends with interrupted_error and each resume returns what it got.
  it("stops a loop three coroutines deep; each coroutine.resume returns the error", function()
    local t = start_and_wait([[
      local ready = ...
      local c = coroutine.create(function() touch(ready) spin(5) return 'not interrupted' end)
      local b = coroutine.create(function() return coroutine.resume(c) end)
      local a = coroutine.create(function() return coroutine.resume(b) end)
      return coroutine.resume(a)
    ]])
    t:interrupt()
    local got = H.pack(t:join())
    assert.are.equal(5, got.n)
    H.assert_values({ true, true, true, false, n = 4 }, { n = 4, H.unpack(got, 1, 4) })
    H.assert_contains(got[5], llthreads.interrupted_error)
  end)

  it("with interrupt(true), goes on to the code that resumed the coroutine", function()
    local t = start_and_wait([[
      local ready = ...
      local co = coroutine.create(function() touch(ready) spin(10) end)
      local ok, err = coroutine.resume(co)
      spin(10)
      return 'survived', ok, err
    ]])
    finally(function() t:join() end)
    t:interrupt(true)
    local ok, err = t:join(4000)
    assert.are.equal(false, ok)
    H.assert_contains(err, llthreads.interrupted_error)
  end)

  if coroutine.close then
    -- Closing a suspended coroutine runs its pending __close handlers in it.
    it("stops a loop in a __close handler that coroutine.close runs", function()
      local t = start_and_wait([[
        local ready = ...
        local co = coroutine.create(assert(load("local ready, touch, spin = ... "
          .. "local guard <close> = setmetatable({}, { __close = function() touch(ready) spin(5) end }) "
          .. "coroutine.yield()")))
        coroutine.resume(co, ready, touch, spin)
        return coroutine.close(co)
      ]])
      t:interrupt()
      local got = H.pack(t:join())
      assert.are.equal(3, got.n)
      assert.are.equal(true, got[1])
      assert.are.equal(false, got[2])
      H.assert_contains(got[3], llthreads.interrupted_error)
    end)
  else
    it("(this flavour has no coroutine.close)", function()
      assert.is_nil(coroutine.close)
    end)
  end
end)

-- The child's coroutine functions are the library's own on PUC Lua (so that
-- interrupts follow coroutines); what they return and raise must be what the
-- stock ones give, byte for byte. The same cases run in this state (stock
-- functions) and in a child; the chunk has the same name and lines in both.
describe("coroutine functions in a child", function()
  local BATTERY = [==[
local unpack = table.unpack or unpack
local C, W = coroutine.create, coroutine.wrap
local function show(...)
  local t = { select("#", ...) }
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    local k = type(v)
    t[#t + 1] = (k == "string" or k == "number" or k == "boolean" or k == "nil") and tostring(v) or k
  end
  return table.concat(t, "|")
end
local out = {}
local function case(name, f) out[#out + 1] = name .. " = " .. show(pcall(f)) end
case("resume()", function() return coroutine.resume() end)
case("resume(1)", function() return coroutine.resume(1) end)
case("resume(print)", function() return coroutine.resume(print) end)
case("values both ways", function()
  local co = C(function(a, b) local c, d = coroutine.yield(a + b, "y", nil) return c .. d, nil end)
  return show(coroutine.resume(co, 1, 2)) .. " " .. show(coroutine.resume(co, "p", "q"))
    .. " " .. show(coroutine.resume(co)) .. " " .. coroutine.status(co)
end)
case("error string", function() return coroutine.resume(C(function() error("boom") end)) end)
case("error level 0", function() return coroutine.resume(C(function() error("boom", 0) end)) end)
case("error table", function() return coroutine.resume(C(function() error({}) end)) end)
case("error nil", function() return coroutine.resume(C(function() error() end)) end)
case("error number", function() return coroutine.resume(C(function() error(42) end)) end)
case("runtime error", function() return coroutine.resume(C(function() local x return x.y end)) end)
case("resume running", function()
  local co
  co = C(function() return coroutine.resume(co) end)
  return coroutine.resume(co)
end)
case("resume normal", function()
  local outer
  outer = C(function() return coroutine.resume(C(function() return coroutine.resume(outer) end)) end)
  return coroutine.resume(outer)
end)
case("dead after error", function()
  local co = C(function() error("x") end)
  coroutine.resume(co)
  return show(coroutine.resume(co)) .. " " .. coroutine.status(co)
end)
case("dead after return", function()
  local co = C(function() return 1 end)
  coroutine.resume(co)
  return coroutine.resume(co)
end)
case("many arguments", function()
  local t = {}
  for i = 1, 300 do t[i] = i end
  return coroutine.resume(C(function(...) return select("#", ...), (select(300, ...)) end), unpack(t))
end)
case("many results", function()
  local co = C(function() local t = {} for i = 1, 5000 do t[i] = i end return unpack(t) end)
  local r = { coroutine.resume(co) }
  return #r, r[1], r[5001]
end)
case("yield across pcall", function()
  local co = C(function() return pcall(coroutine.yield, "in pcall") end)
  return show(coroutine.resume(co)) .. " " .. show(coroutine.resume(co, "back"))
end)
case("wrap()", function() return coroutine.wrap() end)
case("wrap(1)", function() return coroutine.wrap(1) end)
case("wrap(select)", function() local f = coroutine.wrap(select) return f("#", 1, 2) end)
case("wrap values", function()
  local f = W(function(...) local a = coroutine.yield(...) return a * 2 end)
  return show(f(1, nil, 3)) .. " " .. show(f(21))
end)
case("wrap error string", function() local f = W(function() error("boom") end) return f() end)
case("wrap error level 0", function() local f = W(function() error("boom", 0) end) return f() end)
case("wrap error from pcall", function() return pcall(W(function() error("boom") end)) end)
case("wrap error table", function() local f = W(function() error({}) end) return f() end)
case("wrap error number", function() local f = W(function() error(42, 0) end) return f() end)
case("wrap error nil", function() local f = W(function() error() end) return f() end)
case("wrap dead", function() local f = W(function() return 1 end) f() return f() end)
case("wrap dead after error", function()
  local f = W(function() error("x") end)
  pcall(f)
  return f()
end)
case("wrap running", function() local f f = W(function() return f() end) return f() end)
case("wrap in for", function()
  local s = 0
  for v in W(function() for i = 1, 3 do coroutine.yield(i) end end) do s = s + v end
  return s
end)
case("wrap upvalue", function() return debug.getupvalue(W(function() end), 1) end)
case("wrap info", function() local i = debug.getinfo(W(function() end), "Su") return i.what, i.nups end)
case("status in wrap", function() return W(function() return coroutine.status((coroutine.running())) end)() end)
if coroutine.close then
  local src = [[
    local case, C, W = ...
    case("close fresh", function() return coroutine.close(C(function() end)) end)
    case("close(1)", function() return coroutine.close(1) end)
    case("close running", function() local co co = C(function() return coroutine.close(co) end) return coroutine.resume(co) end)
    case("close main", function() return coroutine.close((coroutine.running())) end)
    case("close normal", function()
      local outer
      outer = C(function() return coroutine.resume(C(function() return coroutine.close(outer) end)) end)
      return coroutine.resume(outer)
    end)
    case("close with __close error", function()
      local co = C(function()
        local g <close> = setmetatable({}, { __close = function() error("in close") end })
        coroutine.yield()
      end)
      coroutine.resume(co)
      return coroutine.close(co)
    end)
    case("close dead with error", function()
      local co = C(function() error("died") end)
      coroutine.resume(co)
      return coroutine.close(co)
    end)
    case("wrap error through __close", function()
      local f = W(function()
        local g <close> = setmetatable({}, { __close = function(_, e) error("closing " .. tostring(e), 0) end })
        error("first", 0)
      end)
      return f()
    end)
  ]]
  assert(load(src, "=battery54"))(case, C, W)
end
return table.concat(out, "\n")
]==]

  local function run_here()
    return assert((loadstring or load)(BATTERY, "=battery"))()
  end

  it("return and raise exactly what the stock functions do", function()
    local expected = run_here()
    local ok, got = llthreads.new("local src = ... return assert((loadstring or load)(src, '=battery'))()",
      BATTERY):start():join()
    assert.are.equal(true, ok, got)
    -- Line by line first, for a readable failure.
    local lines = {}
    for line in got:gmatch("[^\n]+") do lines[#lines + 1] = line end
    local i = 0
    for line in expected:gmatch("[^\n]+") do
      i = i + 1
      assert.are.equal(line, lines[i])
    end
    assert.are.equal(expected, got)
  end)
end)

describe("thread:interrupt() and the child's own debug hook", function()
  after_each(H.cleanup)

  -- The child sets a hook, the interrupt lands while it waits in handshake()
  -- (one blocking C call), a pcall catches it; the hook must be the child's
  -- again, with its mask and count, and still counting.
  local CODE = [[
    local ready, go, mask, count = ...
    local events = 0
    local function counter() events = events + 1 end
    debug.sethook(counter, mask, count)
    local ok, err = pcall(function() handshake(ready, go) busy(1e5) end)
    local f, m, c = debug.gethook()
    local before = events
    busy(1000)
    local grew = events > before
    debug.sethook()
    return ok, err, f == counter, m, c, grew
  ]]

  -- The defect: after an interrupt the hook was set to none for good.
  for _, hook in ipairs({ { "l", 0 }, { "", 7 }, { "cr", 0 }, { "crl", 3 } }) do
    local mask, count = hook[1], hook[2]
    local name = ("mask %q, count %d"):format(mask, count)

    it("comes back after an interrupt() the child caught (" .. name .. ")", function()
      local ready, go = H.tmpname(), H.tmpname()
      finally(function() H.touch(go) end)
      local t = new_child(CODE, ready, go, mask, count):start()
      assert.is_true(H.wait_file(ready, 10))
      t:interrupt()
      H.touch(go)
      local got = H.pack(t:join())
      assert.are.equal(true, got[1], got[2])
      assert.are.equal(false, got[2])
      H.assert_contains(got[3], llthreads.interrupted_error)
      H.assert_values({ true, mask, count, true, n = 4 }, { n = 4, H.unpack(got, 4, 7) })
    end)

    it("comes back after interrupt() then interrupt(false) (" .. name .. ")", function()
      local ready, go = H.tmpname(), H.tmpname()
      finally(function() H.touch(go) end)
      local t = new_child(CODE, ready, go, mask, count):start()
      assert.is_true(H.wait_file(ready, 10))
      t:interrupt()
      -- Time for the signal to put the interrupt hook in place first.
      H.sleep(0.2)
      t:interrupt(false)
      H.touch(go)
      local got = H.pack(t:join())
      assert.are.equal(true, got[1], got[2])
      H.assert_values({ true, nil, true, mask, count, true, n = 6 }, { n = 6, H.unpack(got, 2, 7) })
    end)
  end

  -- PUC Lua: each coroutine has its own hook, and gets its own back. LuaJIT:
  -- one hook for all, so the one set last (in the coroutine) is the one kept.
  it("gives each coroutine its own hook back", function()
    local ready, go = H.tmpname(), H.tmpname()
    finally(function() H.touch(go) end)
    local t = new_child([[
      local ready, go = ...
      local function main_hook() end
      local function co_hook() end
      debug.sethook(main_hook, "l")
      local inside = coroutine.wrap(function()
        debug.sethook(co_hook, "", 5)
        local ok, err = pcall(function() handshake(ready, go) busy(1e5) end)
        local f, m, c = debug.gethook()
        return ok, err, f == co_hook, m, c
      end)
      local r = { inside() }
      local f, m, c = debug.gethook()
      debug.sethook()
      return r[1], r[2], r[3], r[4], r[5], f == main_hook, f == co_hook, m, c
    ]], ready, go):start()
    assert.is_true(H.wait_file(ready, 10))
    t:interrupt()
    H.touch(go)
    local got = H.pack(t:join())
    assert.are.equal(true, got[1], got[2])
    assert.are.equal(false, got[2])
    H.assert_contains(got[3], llthreads.interrupted_error)
    H.assert_values({ true, "", 5, n = 3 }, { n = 3, H.unpack(got, 4, 6) })
    if H.is_jit then
      H.assert_values({ false, true, "", 5, n = 4 }, { n = 4, H.unpack(got, 7, 10) })
    else
      H.assert_values({ true, false, "l", 0, n = 4 }, { n = 4, H.unpack(got, 7, 10) })
    end
  end)
end)

describe("interrupts fire only in the chunk's own code", function()
  after_each(H.cleanup)

  -- The defect: the hook fired in the library's protected call that starts
  -- the chunk, so the error came without the message handler's traceback.
  it("delivers a request made before start inside the chunk, with a traceback", function()
    -- In a separate process: the child reports its error on stderr (it has
    -- no chance to set a logger first).
    local code, out = H.run_lua([[
      local llthreads = require "llthreads"
      local t = llthreads.new("return 'ran'")
      t:interrupt()
      t:start()
      local ok, err = t:join()
      io.stdout:write("RESULT ", tostring(ok), "\n", tostring(err), "\nEND\n")
    ]])
    assert.are.equal(0, code, out)
    local result = out:match("RESULT (.-)\nEND")
    assert(result, out)
    H.assert_contains(result, "false\n")
    H.assert_contains(result, llthreads.interrupted_error)
    H.assert_contains(result, "stack traceback:")
  end)

  -- The defect: the hook fired inside join's copy of the results, after the
  -- grandchild was marked joined, so its values were gone.
  it("never drops the results of a join it interrupts", function()
    local go = H.tmpname()
    finally(function() H.touch(go) end)
    local t = start_and_wait([[
      local ready, go = ...
      local llthreads = require "llthreads"
      local g = llthreads.new("local go = ... os.execute(\"i=0; while [ ! -e '\" .. go .. \"' ] && [ $i -lt 1000 ]; "
        .. "do sleep 0.01; i=$((i+1)); done\") return 'a', 'b', 3", go):start()
      touch(ready)
      local first = { pcall(g.join, g) }
      if first[1] then return 'completed', unpack(first, 2, 5) end
      return 'raised', first[2], g:join()
    ]], go)
    -- The child is blocked in join now.
    t:interrupt()
    H.sleep(0.1)
    H.touch(go)
    local got = H.pack(t:join())
    assert.are.equal(true, got[1], got[2])
    if got[2] == "completed" then
      H.assert_values({ true, "completed", true, "a", "b", 3, n = 6 }, got)
    else
      assert.are.equal("raised", got[2])
      H.assert_contains(got[3], llthreads.interrupted_error)
      H.assert_values({ true, "a", "b", 3, n = 4 }, { n = 4, H.unpack(got, 4, 7) })
      assert.are.equal(7, got.n)
    end
  end)
end)

-- Plain Lua cannot queue a signal with a value. On every flavour the check
-- the handler applies is pinned by the cargo unit tests in src/interrupt.rs
-- (signal_values_not_queued_by_the_library_name_no_interruptor and the slot
-- tests); on LuaJIT its FFI also queues such signals for real.
describe("signals the library did not send", function()
  after_each(H.cleanup)

  if H.is_jit then
    -- The defect: the handler took any real-time signal queued in this process
    -- (SI_QUEUE) as the address of an interruptor, so another library queueing
    -- the same signal number with its own value crashed the process. Here
    -- LuaJIT's FFI plays that library, at a running child's thread and at the
    -- process.
    it("are ignored; the process survives and the child stays interruptible", function()
      local tidfile = H.tmpname()
      local code, out = H.run_lua([[
        local llthreads = require "llthreads"
        local ffi = require "ffi"
        ffi.cdef[=[
          int getpid(void);
          unsigned getuid(void);
          long syscall(long number, ...);
          int sigaction(int signum, const void *act, void *oldact);
          int sigqueue(int pid, int sig, void *value);
        ]=]
        local tidfile = ]] .. ("%q"):format(tidfile) .. [[

        local t = llthreads.new([=[
          local tidfile = ...
          local f = io.open("/proc/thread-self/stat") local tid = f:read("*n") f:close()
          f = io.open(tidfile .. ".part", "w") f:write(tid) f:close() os.rename(tidfile .. ".part", tidfile)
          local deadline = os.time() + 10
          while os.time() < deadline do os.clock() end
          return "not interrupted"
        ]=], tidfile):start()
        local tid
        for _ = 1, 1000 do
          local f = io.open(tidfile)
          if f then tid = f:read("*n") f:close() break end
          os.execute("sleep 0.01")
        end
        assert(tid, "the child did not start")
        -- The library installs its handler on the first real-time signal it
        -- finds free (SIGRTMIN + 2 up), when a child first runs.
        local sa = ffi.new("uint64_t[32]")
        local sig
        for s = 34, 64 do
          if ffi.C.sigaction(s, nil, sa) == 0 and sa[0] > 1 then sig = s break end
        end
        assert(sig, "no handled real-time signal found")
        local pid = ffi.C.getpid()
        local values = { 0xdeadbeef, 1, 0x10000, 0x20001, 0x7fffffff, 0x123456789 }
        for _, v in ipairs(values) do
          assert(ffi.C.sigqueue(pid, sig, ffi.cast("void *", v)) == 0)
        end
        local SYS_rt_tgsigqueueinfo = ({ x64 = 297, arm64 = 240 })[jit.arch]
        assert(SYS_rt_tgsigqueueinfo, "unknown architecture " .. jit.arch)
        for _, v in ipairs(values) do
          local info = ffi.new("int32_t[32]")
          info[0], info[2] = sig, -1 -- si_signo, si_code = SI_QUEUE
          info[4], info[5] = pid, ffi.C.getuid()
          ffi.cast("uint64_t *", info + 6)[0] = v -- si_value
          assert(ffi.C.syscall(SYS_rt_tgsigqueueinfo, ffi.cast("long", pid), ffi.cast("long", tid),
            ffi.cast("long", sig), info) == 0)
        end
        os.execute("sleep 0.2")
        t:interrupt()
        local ok, err = t:join()
        io.stdout:write("RESULT ", tostring(ok), " ", tostring(err), "\nEND\n")
      ]], nil, 60)
      assert.is_false(H.crashed(code, out), out)
      assert.are.equal(0, code, out)
      local result = out:match("RESULT (.-)\nEND")
      assert(result, out)
      H.assert_contains(result, "false ")
      H.assert_contains(result, llthreads.interrupted_error)
    end)
  end
end)
