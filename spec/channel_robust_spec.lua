-- Channels under abuse: interrupt storms on threads blocked in every kind of
-- wait, thread objects and channels collected while threads block on them, the
-- process exiting under blocked threads, and bad input to every channel
-- function. spec/channel_spec.lua, spec/select_spec.lua and
-- spec/wait_interrupt_spec.lua cover the plain cases (one interrupt per wait,
-- the basic argument errors); this file covers what they leave out.
--
-- Size: LLTHREADS_STRESS scales the storms (1, the default, is what
-- tools/test.sh runs).

local H = require "spec.helper"
local llthreads = require "llthreads"

local SCALE = tonumber(os.getenv("LLTHREADS_STRESS") or "") or 1
if SCALE < 1 then SCALE = 1 end

local STORM = 200 * SCALE -- interrupt calls per blocked thread
local INTERRUPTED = llthreads.interrupted_error
-- Lua functions cross in messages; what cannot is refused with the reason.
local UNSUPPORTED = "cannot be copied"
local TOO_DEEP = "Hit maximum copy depth (31 > 30)."
local BAD_TIMEOUT = "timeout must be a non-negative number of milliseconds"
local M = debug.getmetatable(llthreads.channel()).__index
local MT = debug.getmetatable(llthreads.channel())
local load = loadstring or load

-- Lets a child that has just said it is about to wait get into the wait.
local function settle() llthreads.sleep(30) end

-- Everything queued in `ch` right now, in order (non-blocking).
local function drain(ch)
  local got = {}
  while true do
    local v, err = ch:receive(0)
    if v == nil then return got, err end
    got[#got + 1] = v
  end
end

local function nest(n)
  local t = {}
  local cur = t
  for _ = 2, n do
    cur[1] = {}
    cur = cur[1]
  end
  return t
end

---------------------------------------------------------------------------
-- Interrupt storms
---------------------------------------------------------------------------

-- The storm, as source so that a child can run it on its own child too: plain
-- interrupts, sticky ones and withdrawals in a burst, the blocked thread given a
-- moment now and then to go back into its wait, and a sticky one last, which
-- must end the thread whatever came before.
local STORM_CODE = [[
local llthreads = require "llthreads"
return function(threads, n)
  for i = 1, n do
    for _, t in ipairs(threads) do
      local m = i % 5
      if m == 0 then t:interrupt(true) elseif m == 3 then t:interrupt(false) else t:interrupt() end
    end
    if i % 50 == 0 then llthreads.sleep(1) end
  end
  for _, t in ipairs(threads) do t:interrupt(true) end
end
]]
local storm = load(STORM_CODE)()

-- Child code that blocks in `wait` again and again, catching each
-- interrupted_error, until an interrupt lands outside its pcall (or, with a
-- sticky request, the last unprotected wait raises at once). Any other error,
-- or a wait that returns, ends it differently and fails the test. Arguments:
-- ready (it sends true once set up), ch, release (what a grandchild waits on).
local function storm_child(setup, wait)
  return "local llthreads = require 'llthreads' llthreads.set_logger(function() end) "
    .. "local ready, ch, release = ... " .. setup .. " ready:send(true) "
    .. "for _ = 1, 100000 do "
    .. "  local ok, err = pcall(function() " .. wait .. " end) "
    .. "  if ok then return 'the wait ended by itself' end "
    .. "  if not tostring(err):find(llthreads.interrupted_error, 1, true) then error(err, 0) end "
    .. "end " .. wait .. " return 'the wait ended by itself'"
end

local GRANDCHILD = "local g = llthreads.new('local release = ... release:receive()', release):start() "

-- Joins `t`, which must end within `ms`; if it does not, `release` frees it
-- before the test fails (so the spec run goes on).
local function join_soon(t, ms, release, what)
  local r = H.pack(t:join(ms))
  if r[1] == nil and r[2] == "timeout" then
    release()
    t:join()
    error(what .. ": not woken within " .. ms .. " ms", 2)
  end
  return r
end

-- A receiver parked on `ch` gets the next message at once: no interrupted
-- waiter is left in the channel's list to swallow the wake-up meant for it.
-- (Its own wait has no time limit, so that only that wake-up can end it.)
local function receiver_still_served(ch, send_timeout)
  local ready = llthreads.channel()
  local t = llthreads.new("local ch, ready = ... ready:send(true) return ch:receive()", ch, ready):start()
  assert.is_true(ready:receive(10000))
  settle()
  H.assert_values({ true, n = 1 }, H.pack(ch:send("after the storm", send_timeout)))
  local r = join_soon(t, 2000, function() ch:close() end, "a receiver parked after the storm")
  H.assert_values({ true, "after the storm", n = 2 }, r)
end

-- A sender parked on the full channel `ch` (holding "kept") is woken by the
-- next receive, and nothing an interrupted sender tried to send is there.
local function sender_still_served(ch)
  local ready = llthreads.channel()
  local t = llthreads.new("local ch, ready = ... ready:send(true) return ch:send('second')", ch, ready):start()
  assert.is_true(ready:receive(10000))
  settle()
  assert.are.equal("kept", ch:receive(0))
  local r = join_soon(t, 2000, function() ch:close() end, "a sender parked after the storm")
  H.assert_values({ true, true, n = 2 }, r)
  assert.are.same({ "second" }, drain(ch))
end

local KINDS = {
  {
    name = "receive",
    channel = function() return llthreads.channel() end,
    wait = "ch:receive()",
    after = function(ch)
      assert.are.equal(0, ch:len())
      receiver_still_served(ch)
    end,
  },
  {
    name = "send on a full bounded channel",
    channel = function()
      local ch = llthreads.channel(1)
      ch:send("kept")
      return ch
    end,
    wait = "ch:send('from the interrupted sender')",
    after = function(ch)
      assert.are.equal(1, ch:len())
      sender_still_served(ch)
    end,
  },
  {
    name = "send on a rendezvous channel",
    channel = function() return llthreads.channel(0) end,
    wait = "ch:send('from the interrupted sender')",
    after = function(ch)
      -- every offer was withdrawn when its wait raised
      assert.are.equal(0, ch:len())
      H.assert_nil_msg(H.pack(ch:receive(0)), "timeout")
      receiver_still_served(ch, 10000)
    end,
  },
  {
    name = "select over a channel and a thread",
    channel = function() return llthreads.channel() end,
    setup = GRANDCHILD,
    wait = "llthreads.select({ ch, g })",
    after = function(ch)
      assert.are.equal(0, ch:len())
      receiver_still_served(ch)
    end,
  },
  {
    name = "sleep",
    channel = function() return llthreads.channel() end,
    wait = "llthreads.sleep(1e9)",
  },
  {
    name = "join on its own child",
    channel = function() return llthreads.channel() end,
    setup = GRANDCHILD,
    wait = "g:join()",
  },
}

describe(("an interrupt storm (%d calls, plain, sticky and withdrawn)"):format(STORM), function()
  for _, kind in ipairs(KINDS) do
    it("on a thread blocked in " .. kind.name .. " ends it with interrupted_error, and the wait's object still works",
      function()
        local ready, release = llthreads.channel(), llthreads.channel()
        local ch = kind.channel()
        local t = llthreads.new(storm_child(kind.setup or "", kind.wait), ready, ch, release):start()
        assert.is_true(ready:receive(10000))
        settle()
        storm({ t }, STORM)
        local ended = H.wait_not_alive(t, 20)
        -- a grandchild (select, join) is released only now: while the child
        -- ran, its wait must not have ended by itself
        release:close()
        assert.is_true(ended, "the thread still runs after the storm")
        local r = H.pack(t:join(10000))
        assert.are.equal(false, r[1], H.show_pack(r))
        H.assert_contains(r[2], INTERRUPTED)
        if kind.after then kind.after(ch) end
      end)
  end

  it("on four receivers and four senders blocked on the same channels leaves both channels working", function()
    local ready, release = llthreads.channel(), llthreads.channel()
    local rx, tx = llthreads.channel(), llthreads.channel(1)
    tx:send("kept")
    local threads = {}
    for _ = 1, 4 do
      threads[#threads + 1] = llthreads.new(storm_child("", "ch:receive()"), ready, rx, release):start()
      threads[#threads + 1] = llthreads.new(storm_child("", "ch:send('never')"), ready, tx, release):start()
    end
    for _ = 1, #threads do assert.is_true(ready:receive(10000)) end
    settle()
    storm(threads, STORM)
    for i, t in ipairs(threads) do
      local r = H.pack(t:join(20000))
      assert.are.equal(false, r[1], ("thread %d: %s"):format(i, H.show_pack(r)))
      H.assert_contains(r[2], INTERRUPTED)
    end
    assert.are.equal(0, rx:len())
    receiver_still_served(rx)
    assert.are.equal(1, tx:len())
    sender_still_served(tx)
  end)

  it("from a child on its own children, blocked in receive, select and sleep", function()
    local kinds = { KINDS[1], KINDS[4], KINDS[5] }
    local codes = {}
    for i, kind in ipairs(kinds) do codes[i] = storm_child(kind.setup or "", kind.wait) end
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local storm_code, codes, n = ...
      local storm = (loadstring or load)(storm_code)()
      local ready, release = llthreads.channel(), llthreads.channel()
      local threads = {}
      for i, code in ipairs(codes) do threads[i] = llthreads.new(code, ready, llthreads.channel(), release):start() end
      for _ = 1, #threads do assert(ready:receive(10000)) end
      llthreads.sleep(30)
      storm(threads, n)
      for _, th in ipairs(threads) do
        local deadline = os.time() + 20
        while th:alive() and os.time() < deadline do llthreads.sleep(1) end
      end
      release:close()
      local results = {}
      for i, th in ipairs(threads) do results[i] = { th:join(10000) } end
      return results
    ]], STORM_CODE, codes, STORM):start()
    local ok, results = t:join()
    assert.is_true(ok, tostring(results))
    for i, kind in ipairs(kinds) do
      assert.are.equal(false, results[i][1], kind.name .. ": " .. tostring(results[i][2]))
      H.assert_contains(results[i][2], INTERRUPTED)
    end
  end)
end)

---------------------------------------------------------------------------
-- Collection while threads block
---------------------------------------------------------------------------

describe("a thread object collected while its thread blocks", function()
  -- The child blocks in hold:receive(), then reports how that ended.
  local BLOCKED = "local hold, done = ... local v, err = hold:receive() done:send(tostring(v) .. ', ' .. tostring(err))"

  -- Forgets the thread object made by `start` and collects it.
  local function start_and_collect(start, ...)
    local weak = setmetatable({}, { __mode = "v" })
    weak[1] = start(llthreads.new(BLOCKED, ...))
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1], "the thread object was not collected")
  end

  for _, mode in ipairs({ { "start()", false, true }, { "start(false, false)", false, false } }) do
    it(mode[1] .. ": the collection waits for the thread, which ends when its channel closes", function()
      local hold, done = llthreads.channel(), llthreads.channel()
      -- a detached thread closes the channel later, or the collection would
      -- wait for ever
      llthreads.new("local llthreads = require 'llthreads' local hold = ... llthreads.sleep(150) hold:close()", hold)
        :start(true)
      start_and_collect(function(t) return t:start(mode[2], mode[3]) end, hold, done)
      -- the thread reported its end before the collection returned
      assert.are.equal("nil, closed", done:receive(0))
    end)
  end

  it("start(true, true): the collection lets the thread go on; it gets the message sent later", function()
    local hold, done = llthreads.channel(), llthreads.channel()
    start_and_collect(function(t) return t:start(true, true) end, hold, done)
    H.assert_nil_msg(H.pack(done:receive(0)), "timeout")
    hold:send("later")
    assert.are.equal("later, nil", done:receive(10000))
  end)

  it("a child ending while its detached joinable child blocks lets the grandchild go on", function()
    local hold, done = llthreads.channel(), llthreads.channel()
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local code, hold, done = ...
      llthreads.new(code, hold, done):start(true, true)
      return "child done"
    ]], BLOCKED, hold, done):start()
    -- join closes the child's state, which collects the grandchild's object
    H.assert_values({ true, "child done", n = 2 }, H.pack(t:join()))
    hold:send("to the grandchild")
    assert.are.equal("to the grandchild, nil", done:receive(10000))
  end)

  it("a child ending while its attached child blocks: closing its state waits for the grandchild", function()
    local hold, done = llthreads.channel(), llthreads.channel()
    llthreads.new("local llthreads = require 'llthreads' local hold = ... llthreads.sleep(150) hold:send('late')", hold)
      :start(true)
    local t = llthreads.new([[
      local llthreads = require "llthreads"
      local code, hold, done = ...
      llthreads.new(code, hold, done):start()
      return "child done"
    ]], BLOCKED, hold, done):start()
    H.assert_values({ true, "child done", n = 2 }, H.pack(t:join()))
    -- the grandchild reported its end before join returned
    assert.are.equal("late, nil", done:receive(0))
  end)
end)

describe("a channel collected in the parent while children block on it", function()
  -- Each case: a child blocked on the channel, and a releaser child that holds
  -- the same channel and acts on it once told to. The parent's only reference
  -- is gone (collected) by then.
  local CASES = {
    {
      name = "receive",
      capacity = nil,
      blocked = "return ch:receive()",
      releaser = "return ch:send('released')",
      expect_blocked = { true, "released", n = 2 },
      expect_releaser = { true, true, n = 2 },
    },
    {
      name = "send on a full channel",
      capacity = 1,
      prefill = "first",
      blocked = "return ch:send('second')",
      releaser = "return ch:receive(), ch:receive()",
      expect_blocked = { true, true, n = 2 },
      expect_releaser = { true, "first", "second", n = 3 },
    },
    {
      name = "send on a rendezvous channel",
      capacity = 0,
      blocked = "return ch:send('handed')",
      releaser = "return ch:receive()",
      expect_blocked = { true, true, n = 2 },
      expect_releaser = { true, "handed", n = 2 },
    },
    {
      name = "select",
      capacity = 2,
      blocked = "local c, v = llthreads.select({ ch }) return c == ch, v",
      releaser = "return ch:send('released')",
      expect_blocked = { true, true, "released", n = 3 },
      expect_releaser = { true, true, n = 2 },
    },
    {
      name = "receive, released by close",
      capacity = nil,
      blocked = "return ch:receive()",
      releaser = "return ch:close()",
      expect_blocked = { true, nil, "closed", n = 3 },
      expect_releaser = { true, true, n = 2 },
    },
  }
  local PRELUDE = "local llthreads = require 'llthreads' local ch, ready, go = ... "

  for _, case in ipairs(CASES) do
    it(case.name .. ": the children still share it", function()
      local ready, go = llthreads.channel(), llthreads.channel()
      local weak = setmetatable({}, { __mode = "v" })
      local blocked, releaser
      do
        local ch = llthreads.channel(case.capacity)
        if case.prefill then ch:send(case.prefill) end
        weak[1] = ch
        blocked = llthreads.new(PRELUDE .. "ready:send(true) " .. case.blocked, ch, ready, go):start()
        releaser = llthreads.new(PRELUDE .. "go:receive() " .. case.releaser, ch, ready, go):start()
      end
      assert.is_true(ready:receive(10000))
      settle()
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak[1], "the parent still holds the channel")
      go:send(true)
      H.assert_values(case.expect_releaser, H.pack(releaser:join(10000)))
      H.assert_values(case.expect_blocked, H.pack(blocked:join(10000)))
    end)
  end

  it("its __gc called by hand: the parent's copy is dead, the children's are not", function()
    local ready, go = llthreads.channel(), llthreads.channel()
    local ch = llthreads.channel()
    local blocked = llthreads.new(PRELUDE .. "ready:send(true) return ch:receive()", ch, ready, go):start()
    local releaser = llthreads.new(PRELUDE .. "go:receive() return ch:send('released')", ch, ready, go):start()
    assert.is_true(ready:receive(10000))
    settle()
    MT.__gc(ch)
    MT.__gc(ch) -- a second call finds nothing to release
    assert.are.equal("llthreads.channel: collected", tostring(ch))
    H.assert_error("bad argument #1 to 'send' (llthreads.channel expected, got userdata)", function()
      local r = M.send(ch, 1) return r
    end)
    H.assert_error("item 1: llthreads.channel, thread or task expected, got userdata", function()
      local r = llthreads.select({ ch }) return r
    end)
    go:send(true)
    H.assert_values({ true, true, n = 2 }, H.pack(releaser:join(10000)))
    H.assert_values({ true, "released", n = 2 }, H.pack(blocked:join(10000)))
  end)

  it("held only by blocked threads that are then interrupted: it is freed, its queue with it", function()
    local NAME = "robust: held only by blocked threads"
    local ready = llthreads.channel()
    local threads = {}
    do
      local ch = llthreads.channel({ name = NAME, capacity = 1 })
      ch:send({ "a queued message that goes with the channel" })
      for i = 1, 3 do
        threads[i] = llthreads.new(H.quiet("local ch, ready = ... ready:send(true) ch:send('never')"), ch, ready)
          :start()
      end
    end
    for _ = 1, 3 do assert.is_true(ready:receive(10000)) end
    settle()
    collectgarbage()
    collectgarbage()
    -- the blocked senders hold it: the name is still taken
    H.assert_error("named channel '" .. NAME .. "' exists with capacity 1", function()
      local r = llthreads.channel({ name = NAME, capacity = 2 }) return r
    end)
    for _, t in ipairs(threads) do t:interrupt(true) end
    for _, t in ipairs(threads) do
      local ok, err = t:join(10000)
      assert.are.equal(false, ok)
      H.assert_contains(err, INTERRUPTED)
    end
    collectgarbage()
    collectgarbage()
    -- nothing holds it now: the name is free, a new channel gets it
    assert.are.equal(2, llthreads.channel({ name = NAME, capacity = 2 }):capacity())
  end)
end)

---------------------------------------------------------------------------
-- Process exit
---------------------------------------------------------------------------

describe("the process exiting with detached threads blocked in every kind of wait", function()
  after_each(H.cleanup)

  -- Two detached threads (one of each detached mode) per kind of wait.
  local SCRIPT = [[
    local llthreads = require "llthreads"
    local ready, hold, full, rdv = llthreads.channel(), llthreads.channel(), llthreads.channel(1), llthreads.channel(0)
    full:send("x")
    local WAITS = {
      "hold:receive()", "full:send('y')", "rdv:send('z')", "llthreads.select({ hold })",
      "llthreads.sleep(1e9)", "llthreads.new('local hold = ... hold:receive()', hold):start():join()",
    }
    for _, w in ipairs(WAITS) do
      for _, joinable in ipairs({ false, true }) do
        llthreads.new("local llthreads = require 'llthreads' local ready, hold, full, rdv = ... ready:send(true) " .. w,
          ready, hold, full, rdv):start(true, joinable)
      end
    end
    for _ = 1, 2 * #WAITS do ready:receive() end
    llthreads.sleep(20)
    io.write("exiting\n")
    io.flush()
  ]]

  local EXITS = {
    { "os.exit(3)", 3 },
    { "os.exit(3, true)", 3 }, -- closes the main state first (5.2+, LuaJIT)
    { "os.exit(false)", 1 },
    { "error('the script fails')", 1, "the script fails" },
    { "", 0 }, -- the script ends
    { "llthreads.new('os.exit(5)'):start():join()", 5 }, -- a thread exits while the main one waits in join
  }

  for _, e in ipairs(EXITS) do
    it((e[1] == "" and "the script ending" or e[1]) .. ": no crash, no hang, exit status " .. e[2], function()
      local code, out = H.run_lua(SCRIPT .. e[1], nil, 60)
      assert.is_false(H.crashed(code, out), out)
      assert.are_not.equal(124, code, "the process hung: " .. out)
      assert.are.equal(e[2], code, out)
      H.assert_contains(out, "exiting")
      if e[3] then H.assert_contains(out, e[3]) end
    end)
  end
end)

---------------------------------------------------------------------------
-- Bad input
---------------------------------------------------------------------------

describe("bad input", function()
  -- A channel with two messages queued: every refused call below must leave
  -- them exactly as they were.
  local function witness()
    local ch = llthreads.channel(4)
    ch:send("one")
    ch:send({ "two" })
    return ch
  end
  local function check_witness(ch, what)
    assert.are.equal(2, ch:len(), what)
    assert.are.equal("one", ch:receive(0), what)
    assert.are.equal("two", ch:receive(0)[1], what)
    H.assert_nil_msg(H.pack(ch:receive(0)), "timeout")
  end

  local function collected_channel()
    local ch = llthreads.channel()
    MT.__gc(ch)
    return ch
  end

  -- Values channel_spec.lua does not try as self: with it they cover every type.
  local SELVES = {
    { "nil", nil }, { "boolean", false }, { "function", print }, { "thread", coroutine.create(function() end) },
    { "userdata", collected_channel() },
  }

  -- Each method called as a field (so the error names it), arguments absolute.
  local METHOD_CALLS = {
    send = function(s) local r = M.send(s, 1) return r end,
    receive = function(s) local r = M.receive(s, 0) return r end,
    close = function(s) local r = M.close(s) return r end,
    len = function(s) local r = M.len(s) return r end,
    capacity = function(s) local r = M.capacity(s) return r end,
    closed = function(s) local r = M.closed(s) return r end,
    __len = function(s) local r = MT.__len(s) return r end,
  }

  it("every method refuses the rest of the wrong selves, naming itself and what it got", function()
    local ch = witness()
    for name, call in pairs(METHOD_CALLS) do
      for _, s in ipairs(SELVES) do
        H.assert_error(("bad argument #1 to '%s' (llthreads.channel expected, got %s)"):format(name, s[1]), call, s[2])
      end
    end
    -- #ch on a collected channel goes through __len too
    local dead = collected_channel()
    H.assert_error("llthreads.channel expected, got userdata", function() local n = #dead return n end)
    check_witness(ch)
  end)

  it("llthreads.channel refuses the rest of the argument types", function()
    local bad = {
      { "function", print }, { "thread", coroutine.create(function() end) }, { "userdata", io.stdout },
      { "userdata", llthreads.channel() }, { "userdata", llthreads.new("return") },
    }
    for _, b in ipairs(bad) do
      H.assert_error("bad argument #1 to 'channel' (capacity or options table expected, got " .. b[1] .. ")",
        function() local r = llthreads.channel(b[2]) return r end)
    end
    for _, cap in ipairs({ true, {}, print, -0.5, 2 ^ 53 }) do
      H.assert_error("bad argument #1 to 'channel' (capacity must be an integer from 0 to 2147483647)",
        function() local r = llthreads.channel({ capacity = cap }) return r end)
    end
    for _, name in ipairs({ true, {}, print }) do
      H.assert_error("bad argument #1 to 'channel' (name must be a string)",
        function() local r = llthreads.channel({ name = name }) return r end)
    end
    H.assert_error("unknown option of type table", function() local r = llthreads.channel({ [{}] = 1 }) return r end)
  end)

  it("send, receive and select refuse a timeout of any other type", function()
    local ch = witness()
    for _, b in ipairs({ { "boolean", true }, { "table", {} }, { "function", print } }) do
      local expected = "(number expected, got " .. b[1] .. ")"
      H.assert_error({ "bad argument #3 to 'send'", expected }, function() local r = M.send(ch, 1, b[2]) return r end)
      H.assert_error({ "bad argument #2 to 'receive'", expected }, function() local r = M.receive(ch, b[2]) return r end)
      H.assert_error({ "bad argument #2 to 'select'", expected }, function()
        local r = llthreads.select({ ch }, b[2]) return r
      end)
    end
    for _, bad in ipairs({ -1, -0.5, -math.huge, 0 / 0 }) do
      H.assert_error({ "bad argument #2 to 'select'", BAD_TIMEOUT }, function()
        local r = llthreads.select({ ch }, bad) return r
      end)
    end
    check_witness(ch)
  end)

  it("a huge timeout means no limit; -0 and a tiny one mean at once", function()
    local ch = llthreads.channel(1)
    for _, huge in ipairs({ math.huge, 1e300, 2 ^ 63, 1e15 }) do
      assert.is_true(ch:send(huge, huge))
      assert.are.equal(huge, ch:receive(huge))
      ch:send(1)
      H.assert_values({ ch, 1, n = 2 }, H.pack(llthreads.select({ ch }, huge)))
    end
    local t0 = H.now()
    for _, tiny in ipairs({ -0.0, 1e-300, 1e-9 }) do
      H.assert_nil_msg(H.pack(ch:receive(tiny)), "timeout")
      H.assert_nil_msg(H.pack(llthreads.select({ ch }, tiny)), "timeout")
      llthreads.sleep(tiny)
      ch:send("fill")
      H.assert_nil_msg(H.pack(ch:send("over", tiny)), "timeout")
      assert.are.same({ "fill" }, drain(ch))
    end
    assert.is_true(H.now() - t0 < 2)
  end)

  it("a huge timeout or sleep in a child waits until interrupted", function()
    local WAITS = {
      "llthreads.channel():receive(math.huge)", "llthreads.channel():receive(1e15)",
      "llthreads.channel():receive(2^62)", "llthreads.channel(0):send(1, 1e300)",
      "llthreads.select({ llthreads.channel() }, 1e15)", "llthreads.sleep(math.huge)", "llthreads.sleep(1e15)",
    }
    local ready = llthreads.channel()
    local threads = {}
    for i, w in ipairs(WAITS) do
      threads[i] = llthreads.new(H.quiet("local llthreads = require 'llthreads' local ready = ... ready:send(true) "
        .. w .. " return 'returned'"), ready):start()
    end
    for _ = 1, #WAITS do assert.is_true(ready:receive(10000)) end
    llthreads.sleep(100)
    for i, t in ipairs(threads) do assert.is_true(t:alive(), WAITS[i] .. " returned at once") end
    for _, t in ipairs(threads) do t:interrupt() end
    for i, t in ipairs(threads) do
      local ok, err = t:join(10000)
      assert.are.equal(false, ok, WAITS[i])
      H.assert_contains(err, INTERRUPTED)
    end
  end)

  it("sleep refuses the rest of the argument types", function()
    for _, b in ipairs({ { "nil", nil }, { "boolean", true }, { "function", print }, { "table", {} } }) do
      H.assert_error("bad argument #1 to 'sleep' (number expected, got " .. b[1] .. ")",
        function() local r = llthreads.sleep(b[2]) return r end)
    end
    H.assert_error("bad argument #1 to 'sleep' (non-negative number of milliseconds expected)",
      function() local r = llthreads.sleep(-0.5) return r end)
  end)

  it("select refuses the rest of the list types and items", function()
    local ch = witness()
    for _, b in ipairs({ { "number", 1 }, { "boolean", true }, { "function", print },
      { "thread", coroutine.create(function() end) } }) do
      H.assert_error("bad argument #1 to 'select' (table expected, got " .. b[1] .. ")",
        function() local r = llthreads.select(b[2]) return r end)
    end
    for _, b in ipairs({ { "boolean", false }, { "string", "ch" }, { "function", print },
      { "thread", coroutine.create(function() end) }, { "userdata", collected_channel() } }) do
      H.assert_error("bad argument #1 to 'select' (item 2: llthreads.channel, thread or task expected, got " .. b[1] .. ")",
        function() local r = llthreads.select({ ch, b[2] }) return r end)
    end
    -- an item refused after a ready channel: nothing was taken
    check_witness(ch)
  end)

  it("send refuses the rest of the uncopyable messages, and leaves the queue as it was", function()
    local ch = witness()
    local gmatch_iter = string.gmatch("a", "a") -- a C function with upvalues
    local bad = {
      gmatch_iter, { [print == nil] = gmatch_iter },
      { [coroutine.create(function() end)] = 1 }, { [io.stdout] = true },
      { list = { 1, 2, { deeper = { coroutine.create(function() end) } } } },
    }
    for i, v in ipairs(bad) do
      H.assert_error({ "bad argument #2 to 'send'", UNSUPPORTED }, function() local r = M.send(ch, v) return r end)
      assert.are.equal(2, ch:len(), "message " .. i)
    end
    -- too deep as a key, and too deep on a rendezvous and on a closed channel
    local deep_key = nest(30)
    local inner = deep_key
    while inner[1] do inner = inner[1] end
    inner[{}] = true -- a table key at depth 31
    H.assert_error(TOO_DEEP, function() local r = M.send(ch, deep_key) return r end)
    H.assert_error(TOO_DEEP, function() local r = M.send(llthreads.channel(0), nest(31), 0) return r end)
    check_witness(ch)
  end)

  it("a closed channel still checks arguments first, and keeps its queue", function()
    for _, capacity in ipairs({ false, 0, 1 }) do
      local ch = llthreads.channel(capacity or nil)
      if capacity ~= 0 then ch:send("queued") end
      ch:close()
      H.assert_error({ "bad argument #2 to 'send'", "nil cannot be sent" }, function() local r = M.send(ch, nil) return r end)
      H.assert_error({ "bad argument #3 to 'send'", BAD_TIMEOUT }, function() local r = M.send(ch, 1, -1) return r end)
      H.assert_error({ "bad argument #2 to 'send'", UNSUPPORTED }, function() local r = M.send(ch, io.stdout) return r end)
      H.assert_error(TOO_DEEP, function() local r = M.send(ch, nest(31)) return r end)
      H.assert_error({ "bad argument #2 to 'receive'", BAD_TIMEOUT }, function() local r = M.receive(ch, 0 / 0) return r end)
      for _, timeout in ipairs({ false, 0, 10 }) do
        H.assert_nil_msg(H.pack(ch:send("late", timeout or nil)), "closed")
      end
      assert.are.equal(capacity ~= 0 and 1 or 0, ch:len())
      if capacity ~= 0 then assert.are.equal("queued", ch:receive()) end
      H.assert_nil_msg(H.pack(ch:receive()), "closed")
      H.assert_values({ ch, nil, "closed", n = 3 }, H.pack(llthreads.select({ ch }, 0)))
    end
  end)
end)

describe("a receive that runs out of memory", function()
  if H.is_jit then
    it("cannot be provoked on LuaJIT, which has no memory limit", function()
      H.assert_error("memory limit is not supported on LuaJIT", llthreads.set_memory_limit, 200 * 1024)
    end)
    return
  end

  after_each(function() llthreads.set_memory_limit(nil) end)

  -- A child limited to 200 KiB tries one receive: (true, ok, err, len) from join.
  local function receive_limited(ch)
    llthreads.set_memory_limit(200 * 1024)
    local ok, t = pcall(llthreads.new,
      H.quiet("local ch = ... local ok, err = pcall(ch.receive, ch) return ok, err, ch:len()"), ch)
    llthreads.set_memory_limit(nil)
    assert(ok, t)
    return H.pack(t:start():join())
  end

  it("raises not enough memory and leaves the message first in the channel", function()
    local ch = llthreads.channel()
    local big = ("x"):rep(1024 * 1024)
    local many = {}
    for i = 1, 200 do many[i] = ("y"):rep(2000) .. i end
    ch:send(big)
    ch:send(many)
    ch:send("small")
    local r = receive_limited(ch)
    assert.are.equal(true, r[1], H.show_pack(r))
    assert.are.equal(false, r[2])
    H.assert_contains(r[3], "not enough memory")
    assert.are.equal(3, r[4])
    -- nothing lost, order kept
    assert.are.equal(big, ch:receive(0))
    -- a table that fails half-way through is put back whole
    r = receive_limited(ch)
    assert.are.equal(true, r[1], H.show_pack(r))
    assert.are.equal(false, r[2])
    H.assert_contains(r[3], "not enough memory")
    assert.are.equal(2, r[4])
    local got = ch:receive(0)
    assert.are.equal(200, #got)
    for i = 1, 200 do assert.are.equal(many[i], got[i]) end
    assert.are.equal("small", ch:receive(0))
  end)
end)

-- A delivery can run Lua code: a collection step during the copy of a big message runs
-- pending finalizers, in the receiving thread. One that receives from the same closed
-- channel is told "closed" at once. Receivers never wait for one another's
-- deliveries: here the copy waits for the finalizer, so such a wait would never end
-- (as it did not, for a while, in 78c3ed8, reverted).
describe("a finalizer that runs during a delivery and receives from the same closed channel", function()
  -- In a fresh child (a small heap, so that the copy's allocations drive whole
  -- collection cycles): receives the last message of `ch`, closed, while a finalizer
  -- runs `how` on it. Returns the outer message's length and what the finalizer got.
  local function receive_with_finalizer(ch, how)
    local t = llthreads.spawn(function(ch, how)
      local llthreads = require "llthreads"
      local armed, got = false, nil
      local garbage
      local function fin()
        if not armed then return garbage() end
        if got then return end
        if how == "receive" then
          got = { ch:receive(500) }
        else
          local a, b = ch:receive(0)
          local s, v, e = llthreads.select({ ch }, 500)
          got = { a, b, s == ch, v, e }
        end
      end
      function garbage()
        if newproxy then
          getmetatable(newproxy(true)).__gc = fin
        else
          setmetatable({}, { __gc = fin })
        end
      end
      for _ = 1, 200 do garbage() end
      collectgarbage()
      -- 5.5 sets the pause through "param"; the others with "setpause".
      if not pcall(collectgarbage, "setpause", 0) then collectgarbage("param", "pause", 0) end
      armed = true
      local outer = ch:receive()
      armed = false
      assert(got, "no finalizer ran during the copy")
      return #outer, (table.unpack or unpack)(got, 1, how == "receive" and 2 or 5)
    end, ch, how)
    return H.pack(t:join())
  end

  local function big()
    local t = {}
    for i = 1, 20000 do t[i] = { i } end
    return t
  end

  for _, capacity in ipairs({ false, 4 }) do
    local kind = capacity and "bounded" or "unbounded"
    it(kind .. ": regression: a receive there waited for ever for the message its own thread was delivering", function()
      local ch = llthreads.channel(capacity or nil)
      ch:send(big())
      ch:close()
      H.assert_values({ true, 20000, nil, "closed", n = 4 }, receive_with_finalizer(ch, "receive"))
      H.assert_nil_msg(H.pack(ch:receive(0)), "closed")
    end)

    it(kind .. ": receive(0) and select there say closed too", function()
      local ch = llthreads.channel(capacity or nil)
      ch:send(big())
      ch:close()
      H.assert_values({ true, 20000, nil, "closed", true, nil, "closed", n = 7 },
        receive_with_finalizer(ch, "select"))
    end)
  end
end)
