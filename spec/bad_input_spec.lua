-- Bad input matrix: every module function and every thread method, called with
-- each wrong kind of value and in each wrong order. Every case must end in what
-- COMPAT.md documents: a Lua error with a string message, or `nil, msg`, or the
-- documented reading of the value; never a crash or a hang.
--
-- The cases are generated in loops from the tables below; each combination is
-- its own test.

local H = require "spec.helper"
local llthreads = require "llthreads"
local llthreads2 = require "llthreads2"
local ex = require "llthreads.ex"

local NOT_STARTED = "Can't join a thread that hasn't be started."
local DETACHED = "Can't join a thread that has been detached."
local JOINED = "Can't join a thread that has already been joined."
local ALREADY = "Thread already started."
local UNSUPPORTED = "function/userdata/thread types un-supported."
local INTERRUPTED = llthreads.interrupted_error

local METHODS = { "start", "join", "alive", "started", "detached", "joinable", "interrupt" }

-- Each wrong kind of value. `copyable`: what new() accepts as an argument.
local function make_kinds()
  return {
    { name = "nil", value = nil, copyable = true },
    { name = "false", value = false, copyable = true },
    { name = "true", value = true, copyable = true },
    { name = "integer", value = 42, copyable = true, number = true },
    { name = "float", value = 0.5, copyable = true, number = true },
    { name = "string", value = "not a number", copyable = true },
    { name = "numeric string", value = "10", copyable = true },
    { name = "table", value = {}, copyable = true },
    -- metatables are not copied, so a callable table is a plain table there
    { name = "callable table", value = setmetatable({}, { __call = function() end }), copyable = true },
    { name = "Lua function", value = function() end },
    { name = "coroutine", value = coroutine.create(function() end) },
    { name = "foreign userdata (io.stdout)", value = io.stdout },
    { name = "thread object", value = llthreads.new("return") },
  }
end
local KINDS = make_kinds()

-- What can be passed as `self` that is not a thread object of this module.
local function make_bad_selves()
  local selves = {}
  for _, k in ipairs(KINDS) do
    if k.name ~= "thread object" then selves[#selves + 1] = k end
  end
  local probe = llthreads.new("return")
  local mt = getmetatable(probe)
  if type(mt) == "table" then
    -- right metatable, wrong Lua type
    selves[#selves + 1] = { name = "table with the thread metatable", value = setmetatable({}, mt) }
  end
  selves[#selves + 1] = { name = "llthreads.ex wrapper object", value = ex.new("return") }
  return selves
end

local function truthy(v) return not not v end

-- A fresh thread object; its methods are reached through the metatable.
local function method(name)
  local f = llthreads.new("return")[name]
  assert(type(f) == "function", "no method " .. name)
  return f
end

describe("bad input: module functions", function()
  after_each(H.cleanup)

  describe("llthreads.new(code)", function()
    for _, k in ipairs(KINDS) do
      if type(k.value) == "string" or k.number then
        -- A string or number is Lua source: these are not valid chunks, so
        -- the compiler's message is raised in the caller, chunk named by code.
        it("compiles a " .. k.name .. " as source and raises the syntax error", function()
          local name = tostring(k.value)
          local msg = H.assert_error({ '[string "' .. name .. '"]:1:' }, llthreads.new, k.value)
          assert(msg:find("near", 1, true) or msg:find("expected", 1, true) or msg:find("syntax", 1, true),
            "not a compiler message: " .. msg)
        end)
      else
        it("raises an argument error for a " .. k.name, function()
          H.assert_error("bad argument #1", llthreads.new, k.value)
          -- and with extra arguments
          H.assert_error("bad argument #1", llthreads.new, k.value, 1, 2)
        end)
      end
    end

    it("raises an argument error with no argument at all", function()
      H.assert_error("bad argument #1", llthreads.new)
    end)
  end)

  describe("llthreads.new(code, ...) arguments", function()
    for _, k in ipairs(KINDS) do
      for _, pos in ipairs({ 2, 4 }) do
        local args = pos == 2 and { k.value } or { 1, 2, k.value }
        if k.copyable then
          it("copies a " .. k.name .. " as argument #" .. pos, function()
            local t = llthreads.new("return ...", H.unpack(args, 1, pos - 1))
            local r = H.pack(t:start():join())
            assert(r.n == pos and r[1] == true, "join gave " .. H.show_pack(r))
            local got, want = r[pos], k.value
            assert.are.equal(type(want), type(got))
            if type(want) ~= "table" then assert.are.equal(want, got) end
            if math.type and k.number then assert.are.equal(math.type(want), math.type(got)) end
          end)
        else
          it("refuses a " .. k.name .. " as argument #" .. pos .. " with an argument error", function()
            -- called from Lua code (not straight from pcall) so that Lua names
            -- the function the way the caller wrote it
            H.assert_error(("bad argument #%d to 'new' (%s)"):format(pos, UNSUPPORTED),
              function(...) local t = llthreads.new(...) return t end, "return ...", H.unpack(args, 1, pos - 1))
          end)
          it("refuses a " .. k.name .. " nested in a table argument #" .. pos, function()
            local nested = { 1, { x = k.value } }
            args[pos - 1] = nested
            H.assert_error({ "bad argument #" .. pos, UNSUPPORTED },
              llthreads.new, "return ...", H.unpack(args, 1, pos - 1))
            args[pos - 1] = { [k.value] = true }
            H.assert_error({ "bad argument #" .. pos, UNSUPPORTED },
              llthreads.new, "return ...", H.unpack(args, 1, pos - 1))
          end)
        end
      end
    end
  end)

  describe("llthreads.set_logger(fn)", function()
    for _, k in ipairs(KINDS) do
      if type(k.value) == "function" then
        it("accepts a " .. k.name, function()
          local r = H.pack(pcall(llthreads.set_logger, k.value))
          assert(r[1], "set_logger raised " .. H.show(r[2]))
        end)
      else
        it("raises 'function expected' for a " .. k.name, function()
          H.assert_error({ "bad argument #1", "function expected" }, llthreads.set_logger, k.value)
        end)
      end
    end

    it("raises 'function expected' with no argument", function()
      H.assert_error({ "bad argument #1", "function expected" }, llthreads.set_logger)
    end)
  end)

  describe("llthreads.version(...)", function()
    local want = H.pack(llthreads.version())
    for _, k in ipairs(KINDS) do
      it("ignores an extra " .. k.name, function()
        local got = H.pack(llthreads.version(k.value))
        assert.are.same(want, got)
      end)
    end
  end)

  describe("llthreads.ex.new(code)", function()
    for _, k in ipairs(KINDS) do
      if k.value == nil or k.value == false then
        it("raises an error for a " .. k.name, function()
          H.assert_error(nil, ex.new, k.value)
        end)
      elseif type(k.value) == "function" then
        it("accepts a " .. k.name, function()
          local r = H.pack(ex.new(k.value):start():join())
          assert(r[1] == true, "join gave " .. H.show_pack(r))
        end)
      else
        -- Not source ex can run: an error in the caller, or a child that
        -- fails and reports it through join.
        it("raises an error or fails in the child for a " .. k.name, function()
          local r = H.pack(pcall(ex.new, k.value))
          if not r[1] then
            assert(type(r[2]) == "string", "non-string error " .. H.show(r[2]))
            return
          end
          local t = r[2]
          assert(rawequal(t:start(), t), "ex start did not return the wrapper")
          local j = H.pack(t:join())
          assert(j[1] == false and type(j[2]) == "string", "join gave " .. H.show_pack(j))
        end)
      end
    end
  end)
end)

describe("bad input: wrong self", function()
  after_each(H.cleanup)
  local SELVES = make_bad_selves()

  for _, name in ipairs(METHODS) do
    for _, s in ipairs(SELVES) do
      it(name .. "(self = " .. s.name .. ") raises 'bad argument #1'", function()
        local f = method(name)
        H.assert_error("bad argument #1", f, s.value)
        -- the self check comes before any other argument is looked at
        H.assert_error("bad argument #1", f, s.value, true, true)
        H.assert_error("bad argument #1", f, s.value, "x")
      end)
    end

    it(name .. " through getmetatable(t).__index with io.stdout raises 'bad argument #1'", function()
      local mt = getmetatable(llthreads.new("return"))
      local index = type(mt) == "table" and mt.__index
      if type(index) == "table" then
        H.assert_error("bad argument #1", index[name], io.stdout)
      else
        -- __index is a function (or the metatable is protected): the methods
        -- come from indexing the object, as method() does.
        H.assert_error("bad argument #1", method(name), io.stdout)
      end
    end)
  end

  -- Metamethods reached through the metatable (__gc, __tostring, __close...):
  -- with a wrong self they may refuse or do nothing, but must not touch the
  -- value (io.stdout still writes, a thread of the other library copy still runs).
  do
    local mt = getmetatable(llthreads.new("return"))
    local names = {}
    if type(mt) == "table" then
      for k, v in pairs(mt) do
        if type(v) == "function" then names[#names + 1] = k end
      end
      table.sort(names)
    end
    for _, mm in ipairs(names) do
      it("metamethod " .. mm .. " with every wrong self leaves the value alone", function()
        for _, s in ipairs(SELVES) do
          local r = H.pack(pcall(mt[mm], s.value))
          if not r[1] then assert(type(r[2]) == "string", mm .. " raised " .. H.show(r[2])) end
        end
        assert(io.stdout:write(""), "io.stdout broken by " .. mm)
        local other = llthreads2.new("return 5")
        local r = H.pack(pcall(mt[mm], other))
        if not r[1] then assert(type(r[2]) == "string", mm .. " raised " .. H.show(r[2])) end
        if mm ~= "__gc" and mm ~= "__close" then
          assert.are.same({ n = 2, true, 5 }, H.pack(other:start():join()))
        else
          -- either it did nothing, or it finished the object as its own (which
          -- the other copy's methods must then refuse cleanly)
          local s = H.pack(pcall(other.start, other))
          if s[1] and rawequal(s[2], other) then
            assert.are.same({ n = 2, true, 5 }, H.pack(other:join()))
          else
            assert(not s[1] and type(s[2]) == "string" or (s[2] == nil and type(s[3]) == "string"),
              "start after a foreign " .. mm .. " gave " .. H.show_pack(s))
          end
        end
      end)
    end
  end

  it("ex wrapper methods with a wrong self raise a Lua error", function()
    local w = ex.new("return")
    for _, name in ipairs(METHODS) do
      local f = w[name]
      assert(type(f) == "function", "ex wrapper has no " .. name)
      for _, s in ipairs({ { v = nil }, { v = 1 }, { v = io.stdout }, { v = {} } }) do
        H.assert_error(nil, f, s.v)
      end
    end
  end)

  -- llthreads.so and llthreads2.so are two copies of the library: an object of
  -- one passed to the methods of the other either works as a thread object or
  -- is refused with an argument error.
  for _, dir in ipairs({ { llthreads, llthreads2, "llthreads2 object, llthreads methods" },
                         { llthreads2, llthreads, "llthreads object, llthreads2 methods" } }) do
    local owner, other, label = dir[1], dir[2], dir[3]
    it("cross-module self: " .. label, function()
      local proto = other.new("return")
      local t = owner.new("return 7")
      local r = H.pack(pcall(proto.start, t))
      if r[1] then
        assert(rawequal(r[2], t), "start returned " .. H.show_pack(r))
      else
        assert(type(r[2]) == "string" and r[2]:find("bad argument #1", 1, true), H.show(r[2]))
        assert(rawequal(t:start(), t))
      end
      for _, name in ipairs({ "started", "detached", "joinable", "alive", "interrupt" }) do
        local q = H.pack(pcall(proto[name], t, false))
        if not q[1] then
          assert(type(q[2]) == "string" and q[2]:find("bad argument #1", 1, true), name .. ": " .. H.show(q[2]))
        elseif name == "started" then
          assert(q[2] == true, name .. " gave " .. H.show_pack(q))
        elseif name == "detached" then
          assert(q[2] == false, name .. " gave " .. H.show_pack(q))
        elseif name == "joinable" then
          assert(q[2] == true, name .. " gave " .. H.show_pack(q))
        elseif name == "alive" then
          assert(type(q[2]) == "boolean", name .. " gave " .. H.show_pack(q))
        end
      end
      local j = H.pack(pcall(proto.join, t))
      if j[1] then
        assert(j[2] == true and j[3] == 7, "join gave " .. H.show_pack(j))
      else
        assert(type(j[2]) == "string" and j[2]:find("bad argument #1", 1, true), H.show(j[2]))
        local own = H.pack(t:join())
        assert(own[1] == true and own[2] == 7, "own join gave " .. H.show_pack(own))
      end
    end)
  end
end)

describe("bad input: method arguments", function()
  after_each(H.cleanup)

  -- start(detached, joinable) reads any value as a boolean.
  for _, k in ipairs(KINDS) do
    it("start(" .. k.name .. ") reads it as detached = " .. tostring(truthy(k.value)), function()
      local t = llthreads.new("return 1")
      local r = H.pack(t:start(k.value))
      assert(r.n == 1 and rawequal(r[1], t), "start gave " .. H.show_pack(r))
      assert.are.equal(true, t:started())
      assert.are.equal(truthy(k.value), t:detached())
      assert.are.equal(not truthy(k.value), t:joinable())
      if not truthy(k.value) then
        local j = H.pack(t:join())
        assert(j[1] == true and j[2] == 1, "join gave " .. H.show_pack(j))
      end
    end)

    for _, d in ipairs({ false, true }) do
      -- An explicit second argument is "given", even when it is nil (the C
      -- library tests lua_isnone): it is read as a boolean.
      it("start(" .. tostring(d) .. ", " .. k.name .. ") reads joinable = " .. tostring(truthy(k.value)), function()
        local t = llthreads.new("return 1")
        local r = H.pack(t:start(d, k.value))
        assert(r.n == 1 and rawequal(r[1], t), "start gave " .. H.show_pack(r))
        assert.are.equal(d, t:detached())
        assert.are.equal(truthy(k.value), t:joinable())
        if truthy(k.value) or not d then
          local j = H.pack(t:join())
          assert(j[1] == true, "join gave " .. H.show_pack(j))
          if not d and truthy(k.value) then assert.are.equal(1, j[2]) end
        end
      end)
    end
  end

  -- join(timeout): a number (or a string Lua converts to one) is a timeout in
  -- ms; anything else is an argument error, after which the thread is intact.
  for _, k in ipairs(KINDS) do
    it("join(" .. k.name .. ")", function()
      local t = llthreads.new("return 7")
      t:start()
      if k.value == nil then
        local j = H.pack(t:join(k.value))
        assert(j.n == 2 and j[1] == true and j[2] == 7, "join gave " .. H.show_pack(j))
        return
      end
      local function poll()
        -- a timeout: (nil, "timeout") while running, then the results
        for _ = 1, 2000 do
          local j = H.pack(t:join(k.value))
          if j[1] ~= nil then
            assert(j.n == 2 and j[1] == true and j[2] == 7, "join gave " .. H.show_pack(j))
            return
          end
          H.assert_nil_msg(j, "timeout")
        end
        error("thread never finished")
      end
      if k.name == "integer" or k.name == "numeric string" then
        poll()
      elseif k.name == "float" then
        -- 0.5 ms: accepted as a timeout, or refused as a non-integer
        local ok, err = pcall(poll)
        if not ok then
          assert(type(err) == "string" and err:find("bad argument", 1, true), H.show(err))
        end
      else
        H.assert_error({ "bad argument", "number expected" }, t.join, t, k.value)
      end
      -- the failed call changed nothing
      local j = H.pack(t:join())
      if j[1] == nil then H.assert_nil_msg(j, JOINED) -- poll() joined it already
      else assert(j.n == 2 and j[1] == true and j[2] == 7, "join gave " .. H.show_pack(j)) end
    end)
  end

  -- Numbers at the edges as timeouts (negative, NaN, infinite, huge, tiny):
  -- whatever the module makes of them, a finished thread gives its results,
  -- and a running one either times out or waits for its end; nothing panics.
  local fzero = 0.0
  local EXTREME = { -1, -1e300, fzero / fzero, math.huge, -math.huge, 1e300, 2 ^ 63, -(2 ^ 63), 2 ^ 53,
    1e-300, 0.0001, -fzero, 2 ^ 31, 2 ^ 32 + 5 }
  if math.maxinteger then
    EXTREME[#EXTREME + 1] = math.maxinteger
    EXTREME[#EXTREME + 1] = math.mininteger
  end
  for _, v in ipairs(EXTREME) do
    it(("join(%s) on a finished and on a running thread"):format(tostring(v)), function()
      local t = llthreads.new("return 7"):start()
      assert(H.wait_not_alive(t), "alive() never reported the end")
      local j = H.pack(t:join(v))
      assert(j.n == 2 and j[1] == true and j[2] == 7, "join gave " .. H.show_pack(j))
      -- running: ends on its own after ~50 ms
      t = llthreads.new(H.CHILD_TIME .. "sleep(0.05) return 1"):start()
      j = H.pack(t:join(v))
      if j[1] == nil then
        H.assert_nil_msg(j, "timeout")
        j = H.pack(t:join())
      end
      assert(j.n == 2 and j[1] == true and j[2] == 1, "join gave " .. H.show_pack(j))
    end)
  end

  -- interrupt(arg): nil = once, true = always, false = remove; any other value
  -- is either read some way or refused; the thread still ends properly.
  local BUSY = H.CHILD_TIME .. [[
    local t0 = now()
    while now() - t0 < 0.2 do pcall(function() local x = 0 for i = 1, 10 do x = x + i end end) end
    return 'done'
  ]]
  for _, k in ipairs(KINDS) do
    it("interrupt(" .. k.name .. ") on a running thread", function()
      local t = llthreads.new(BUSY)
      t:start()
      local r = H.pack(pcall(t.interrupt, t, k.value))
      local j = H.pack(t:join())
      local interrupted = j[1] == false and type(j[2]) == "string" and j[2]:find(INTERRUPTED, 1, true) ~= nil
      local finished = j.n == 2 and j[1] == true and j[2] == "done"
      if k.value == true then
        assert(r[1], "interrupt raised " .. H.show(r[2]))
        assert(interrupted, "join gave " .. H.show_pack(j))
      elseif k.value == false then
        assert(r[1], "interrupt raised " .. H.show(r[2]))
        assert(finished, "join gave " .. H.show_pack(j))
      else
        if k.value == nil then assert(r[1], "interrupt raised " .. H.show(r[2])) end
        if not r[1] then assert(type(r[2]) == "string", H.show(r[2])) end
        assert(interrupted or finished, "join gave " .. H.show_pack(j))
      end
    end)
  end

  -- alive(), started(), detached(), joinable() take no argument: an extra one
  -- changes nothing.
  for _, name in ipairs({ "alive", "started", "detached", "joinable" }) do
    for _, k in ipairs(KINDS) do
      it(name .. "(" .. k.name .. ") ignores the extra argument", function()
        local t = llthreads.new("return")
        local before = H.pack(t[name](t))
        assert.are.same(before, H.pack(t[name](t, k.value)))
        t:start()
        assert(H.wait_not_alive(t), "alive() never reported the end")
        assert.are.same(H.pack(t[name](t)), H.pack(t[name](t, k.value)))
        t:join()
        assert.are.same(H.pack(t[name](t)), H.pack(t[name](t, k.value)))
      end)
    end
  end
end)

describe("bad input: wrong order", function()
  after_each(H.cleanup)

  local MODES = {
    { name = "start(false, false)", d = false, j = false },
    { name = "start(false, true)", d = false, j = true },
    { name = "start(true, false)", d = true, j = false },
    { name = "start(true, true)", d = true, j = true },
  }
  local STAGES = { "not started", "running", "finished", "joined" }

  -- can join() be called in this mode
  local function joinable_mode(m) return not (m.d and not m.j) end

  -- Waits until a started thread has finished: alive() where the mode has
  -- it (polled until false: it must get there), else the mark file the
  -- child makes at its very end, and a little more for the module to finish.
  local function wait_finished(t, m, mark)
    if joinable_mode(m) then
      assert(H.wait_not_alive(t), "alive() never reported the end")
    else
      assert(H.wait_file(mark), "the child never got to its end")
      H.sleep(0.05)
    end
  end

  -- Brings a fresh thread (blocked on a gate until released) to `stage`.
  local function setup(m, stage)
    local g = H.gate()
    local mark = H.tmpname()
    local t = llthreads.new(H.GATE_WAIT .. H.CHILD_MARK .. "mark((select(2, ...))) return 1", g.path, mark)
    local ctx = { t = t, gate = g, mark = mark }
    finally(function()
      g:release()
      -- whatever the case did, leave no thread unjoined (a detached one ends
      -- on its own now that the gate is open)
      if t:started() and joinable_mode(m) then t:join() end
      g:close()
    end)
    if stage == "not started" then return ctx end
    assert(rawequal(t:start(m.d, m.j), t))
    if stage == "running" then return ctx end
    g:release()
    wait_finished(t, m, mark)
    if stage == "finished" then return ctx end
    local j = H.pack(t:join())
    assert(j[1] == true, "join gave " .. H.show_pack(j))
    return ctx
  end

  -- The checks, per method: what each stage must give (twice in a row).
  local CHECK = {}

  function CHECK.start(ctx, m, stage)
    local t = ctx.t
    if stage == "not started" then
      assert(rawequal(t:start(m.d, m.j), t))
      H.assert_nil_msg(H.pack(t:start(m.d, m.j)), ALREADY)
    else
      H.assert_nil_msg(H.pack(t:start()), ALREADY)
      H.assert_nil_msg(H.pack(t:start(not m.d, not m.j)), ALREADY)
      -- the flags did not change
      assert.are.equal(m.d, t:detached())
      assert.are.equal(m.j, t:joinable())
    end
  end

  function CHECK.join(ctx, m, stage)
    local t = ctx.t
    if stage == "not started" then
      H.assert_nil_msg(H.pack(t:join()), NOT_STARTED)
      H.assert_nil_msg(H.pack(t:join(0)), NOT_STARTED)
    elseif not joinable_mode(m) then
      H.assert_nil_msg(H.pack(t:join()), DETACHED)
      H.assert_nil_msg(H.pack(t:join(0)), DETACHED)
    elseif stage == "running" then
      H.assert_nil_msg(H.pack(t:join(0)), "timeout")
      H.assert_nil_msg(H.pack(t:join(0)), "timeout")
      H.assert_nil_msg(H.pack(t:join(1)), "timeout")
    elseif stage == "finished" then
      local j = H.pack(t:join())
      if m.j and not m.d then
        assert(j.n == 2 and j[1] == true and j[2] == 1, "join gave " .. H.show_pack(j))
      else
        assert(j[1] == true, "join gave " .. H.show_pack(j))
      end
      H.assert_nil_msg(H.pack(t:join()), JOINED)
      H.assert_nil_msg(H.pack(t:join(0)), JOINED)
    else -- joined
      H.assert_nil_msg(H.pack(t:join()), JOINED)
      H.assert_nil_msg(H.pack(t:join(0)), JOINED)
    end
  end

  function CHECK.alive(ctx, m, stage)
    local t = ctx.t
    for _ = 1, 2 do
      local a = H.pack(t:alive())
      if stage == "not started" then
        H.assert_nil_msg(a, NOT_STARTED)
      elseif not joinable_mode(m) then
        H.assert_nil_msg(a, DETACHED)
      elseif stage == "running" then
        assert(a.n == 1 and a[1] == true, "alive gave " .. H.show_pack(a))
      elseif stage == "finished" then
        assert(a.n == 1 and a[1] == false, "alive gave " .. H.show_pack(a))
      else
        H.assert_nil_msg(a, JOINED)
      end
    end
  end

  local function flag_check(flag)
    return function(ctx, m, stage)
      local want = false
      if stage ~= "not started" then
        want = (flag == "started") or (flag == "detached" and m.d) or (flag == "joinable" and m.j)
      end
      for _ = 1, 2 do
        local r = H.pack(ctx.t[flag](ctx.t))
        assert(r.n == 1 and r[1] == want, flag .. " gave " .. H.show_pack(r) .. ", want " .. tostring(want))
      end
    end
  end
  CHECK.started = flag_check("started")
  CHECK.detached = flag_check("detached")
  CHECK.joinable = flag_check("joinable")

  function CHECK.interrupt(ctx, m, stage)
    local t = ctx.t
    local function call(...)
      local r = H.pack(pcall(t.interrupt, t, ...))
      return r
    end
    if stage == "not started" then
      -- Not documented before start: it may do something or refuse, but the
      -- thread must then still start and end properly.
      local r = call()
      if not r[1] then assert(type(r[2]) == "string", H.show(r[2])) end
      assert(rawequal(t:start(m.d, m.j), t))
      ctx.gate:release()
      if joinable_mode(m) then
        local j = H.pack(t:join())
        local ok = j[1] == true or (j[1] == false and tostring(j[2]):find(INTERRUPTED, 1, true))
        assert(ok, "join gave " .. H.show_pack(j))
      end
      return
    end
    if stage == "running" then
      -- false removes nothing harmful; nil interrupts once, when the child
      -- runs again
      local r = call(false)
      assert(r[1], "interrupt(false) raised " .. H.show(r[2]))
      r = call()
      assert(r[1], "interrupt() raised " .. H.show(r[2]))
      ctx.gate:release()
      if joinable_mode(m) then
        local j = H.pack(t:join())
        local ok = j[1] == true or (j[1] == false and tostring(j[2]):find(INTERRUPTED, 1, true))
        assert(ok, "join gave " .. H.show_pack(j))
      end
      return
    end
    -- finished or joined: a no-op, every variant, repeatedly
    for _ = 1, 3 do
      for _, arg in ipairs({ { n = 0 }, { n = 1, nil }, { n = 1, true }, { n = 1, false } }) do
        local r = call(H.unpack(arg, 1, arg.n))
        assert(r[1], "interrupt raised " .. H.show(r[2]))
      end
    end
    if stage == "finished" and joinable_mode(m) then
      local j = H.pack(t:join())
      if m.j and not m.d then
        assert(j.n == 2 and j[1] == true and j[2] == 1, "join after interrupt gave " .. H.show_pack(j))
      else
        assert(j[1] == true, "join after interrupt gave " .. H.show_pack(j))
      end
    end
  end

  for _, m in ipairs(MODES) do
    for _, stage in ipairs(STAGES) do
      if not (stage == "joined" and not joinable_mode(m)) then
        for _, name in ipairs(METHODS) do
          it(("%s when %s, %s"):format(name, stage, m.name), function()
            local ctx = setup(m, stage)
            CHECK[name](ctx, m, stage)
          end)
        end
      end
    end
  end

  -- __gc reached through the metatable and called by hand, at every stage:
  -- the object is then dead; every method must refuse it cleanly, a second
  -- __gc must be harmless, and so must the real collection later.
  local gc_mt = getmetatable(llthreads.new("return"))
  local gc = type(gc_mt) == "table" and gc_mt.__gc
  for _, m in ipairs(MODES) do
    for _, stage in ipairs(STAGES) do
      if not (stage == "joined" and not joinable_mode(m)) then
        it(("__gc called by hand when %s, %s, then every method"):format(stage, m.name), function()
          if type(gc) ~= "function" then
            -- the metatable is protected or has no reachable __gc: nothing to misuse
            assert(gc_mt == nil or type(gc_mt) ~= "table" or gc_mt.__gc == nil)
            return
          end
          -- a child that ends on its own (__gc of an attached thread waits)
          local mark = H.tmpname()
          local t = llthreads.new(H.CHILD_TIME .. H.CHILD_MARK .. "sleep(0.02) mark((...)) return 1", mark)
          if stage ~= "not started" then t:start(m.d, m.j) end
          if stage == "finished" or stage == "joined" then wait_finished(t, m, mark) end
          if stage == "joined" then t:join() end
          gc(t)
          gc(t)
          for _, name in ipairs(METHODS) do
            local r = H.pack(pcall(t[name], t))
            if r[1] then
              assert(r.n == 3 and r[2] == nil and type(r[3]) == "string",
                name .. " on a dead object gave " .. H.show_pack(r))
            else
              assert(type(r[2]) == "string", name .. " raised " .. H.show(r[2]))
            end
          end
          assert.are.equal("string", type(tostring(t)))
          t = nil
          collectgarbage()
          collectgarbage()
          if stage ~= "not started" then assert(H.wait_file(mark), "the child never got to its end") end
        end)
      end
    end
  end
end)
