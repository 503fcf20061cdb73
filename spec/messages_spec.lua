-- Texts a program sees, as the C original (lua-llthreads2) prints them: the error of
-- a failed chunk (through the logger and through join), its traceback, the argument
-- error of a method called on something else than a thread object, and `warn` in a
-- memory-limited state. Programs compare these texts, so they are checked exactly.

local H = require "spec.helper"
local llthreads = require "llthreads"

local loadstring = loadstring or load

local JOINED = "Error from child thread: "
local LOGGED = "Error from thread: "
-- 5.2+ turn an error value with a __tostring metamethod into its text.
local READS_TOSTRING = not (H.flavour == "5.1" or H.is_jit)
-- 5.5 raises a nil error value as this string; earlier versions raise nil.
local NIL_TEXT = H.flavour == "5.5" and "<no error object>" or nil

-- Runs `raise` in a child whose logger writes the line it gets into a file.
-- Returns join's values (packed) and the logged line.
local function fail_with(raise)
  local log = H.tmpname()
  local code = "local log = ... require('llthreads').set_logger(function(msg) "
    .. "local f = assert(io.open(log, 'wb')) f:write(msg) f:close() end) " .. raise
  local joined = H.pack(llthreads.new(code, log):start():join())
  return joined, H.read_file(log)
end

local function last_line(s)
  return s:match("([^\n]*)$")
end

describe("the error of a failed chunk, as text", function()
  after_each(H.cleanup)

  it("is what a __tostring metamethod returns (5.2+), for the logger and join alike", function()
    local joined, logged = fail_with("error(setmetatable({}, { __tostring = function() return 'custom text' end }))")
    if READS_TOSTRING then
      H.assert_values({ false, JOINED .. "custom text", n = 2 }, joined)
      assert.are.equal(LOGGED .. "custom text", logged)
    else
      -- Lua 5.1 and LuaJIT have no such conversion: the value has no text.
      H.assert_values({ false, JOINED .. "(null)", n = 2 }, joined)
      assert.are.equal(LOGGED .. "(no error message)", logged)
    end
  end)

  it("is a number's text when __tostring returns a number (5.2+)", function()
    local joined, logged = fail_with("error(setmetatable({}, { __tostring = function() return 42 end }))")
    if READS_TOSTRING then
      H.assert_values({ false, JOINED .. "42", n = 2 }, joined)
      assert.are.equal(LOGGED .. "42", logged)
    else
      H.assert_values({ false, JOINED .. "(null)", n = 2 }, joined)
      assert.are.equal(LOGGED .. "(no error message)", logged)
    end
  end)

  it("is the text of the error a __tostring raises, when it raises (5.2+)", function()
    local joined, logged = fail_with("error(setmetatable({}, { __tostring = function() error('tostring broke', 0) end }))")
    if READS_TOSTRING then
      H.assert_values({ false, JOINED .. "tostring broke", n = 2 }, joined)
      assert.are.equal(LOGGED .. "tostring broke", logged)
    else
      H.assert_values({ false, JOINED .. "(null)", n = 2 }, joined)
      assert.are.equal(LOGGED .. "(no error message)", logged)
    end
  end)

  it("is the C original's for values with no text: '(no error message)' logged, '(null)' or '(no error message)' joined", function()
    -- 5.2+: a value without __tostring gets the text "(no error message)"; nil,
    -- and a __tostring result that is not text, have none. 5.1 and LuaJIT leave
    -- every value without text. join formats a missing text as Lua formats a
    -- missing string.
    local cases = {
      { raise = "error({ code = 1 })", joined = READS_TOSTRING and "(no error message)" or "(null)" },
      { raise = "error(true)", joined = READS_TOSTRING and "(no error message)" or "(null)" },
      { raise = "error(setmetatable({}, { __tostring = function() return {} end }))", joined = "(null)" },
      -- 5.5 itself turns a nil error value into this text (after the message
      -- handler, so without a traceback): there is text, and it is passed on.
      { raise = "error(nil)", joined = NIL_TEXT or "(null)", logged = NIL_TEXT },
      { raise = "error()", joined = NIL_TEXT or "(null)", logged = NIL_TEXT },
    }
    for _, c in ipairs(cases) do
      local joined, logged = fail_with(c.raise)
      H.expect(joined.n == 2 and joined[1] == false and joined[2] == JOINED .. c.joined,
        "%s: join gave %s", c.raise, joined)
      H.expect(logged == LOGGED .. (c.logged or "(no error message)"), "%s: logged %s", c.raise, logged)
    end
  end)

  it("gets a traceback for a number, as a string does", function()
    local joined, logged = fail_with("error(42, 0)")
    assert.are.equal(false, joined[1])
    assert.are.equal(JOINED .. "42\nstack traceback:\n", joined[2]:sub(1, #JOINED + 20))
    assert.are.equal(LOGGED .. "42\nstack traceback:\n", logged:sub(1, #LOGGED + 20))
  end)
end)

describe("the traceback of a failed chunk", function()
  after_each(H.cleanup)

  -- The library's own frames stay out of it: its last line is the chunk's frame.
  it("ends with the chunk's own frame, in join's message and the logger's", function()
    local joined, logged = fail_with("local function inner() error('deep') end inner()")
    assert.are.equal(false, joined[1])
    for _, text in ipairs({ joined[2], logged }) do
      H.assert_contains(text, "stack traceback:")
      assert.are.equal("]:1: in main chunk", last_line(text):match("%]:1: in main chunk$"))
      H.assert_not_contains(text, "[C]: in ?")
    end
  end)

  it("ends with the chunk's own frame when levels are skipped", function()
    local joined = fail_with("local function f(n) if n == 0 then error('bottom') end return 1 + f(n - 1) end f(40)")
    assert.are.equal(false, joined[1])
    H.assert_contains(joined[2], "...")
    assert.is_truthy(last_line(joined[2]):match("%]:1: in main chunk$"), joined[2])
    assert.is_truthy(joined[2]:match("\n([^\n]*)\n[^\n]*$"):match("'f'$"), joined[2])
  end)

  it("ends with the chunk's own frame for an error raised by an interrupt", function()
    local ready, go = H.tmpname(), H.tmpname()
    finally(function() H.touch(go) end)
    local t = llthreads.new(H.child(H.quiet([[
      local ready, go = ...
      if jit then jit.off() end
      handshake(ready, go)
      while true do os.clock() end
    ]])), ready, go):start()
    assert.is_true(H.wait_file(ready, 10))
    t:interrupt(true)
    H.touch(go)
    local ok, msg = t:join()
    assert.are.equal(false, ok)
    H.assert_contains(msg, llthreads.interrupted_error)
    assert.is_truthy(last_line(msg):match(": in main chunk$"), msg)
  end)
end)

describe("a method called on something else than a thread object", function()
  local METHODS = { "start", "join", "alive", "started", "detached", "joinable", "interrupt" }
  local t = llthreads.new("return 1")
  local mt = debug.getmetatable(t)

  -- Calls `call` (Lua source, `t` and `mt` in scope) from a line that names the
  -- function, as a program would (not a tail call, which loses the name on
  -- LuaJIT); returns the message without its position.
  local function message_of(call)
    local f = assert(loadstring("local t, mt = ... local r = " .. call .. " return r"))
    local ok, err = pcall(f, t, mt)
    H.expect(not ok, "%s did not raise", call)
    return (tostring(err):gsub("^[^:]*:%d+: ", ""))
  end

  it("raises 'bad argument #1 to <method> (LLThread expected, got <type>)'", function()
    local values = { ["5"] = "number", ["nil"] = "nil", ["{}"] = "table", ["'x'"] = "string",
      ["true"] = "boolean", ["io.stdout"] = "userdata", ["print"] = "function" }
    for _, name in ipairs(METHODS) do
      for src, tname in pairs(values) do
        local want = ("bad argument #1 to '%s' (LLThread expected, got %s)"):format(name, tname)
        local got = message_of(("t.%s(%s)"):format(name, src))
        H.expect(got == want, "t.%s(%s) raised %s", name, src, got)
      end
    end
  end)

  it("says 'got no value' when nothing was passed", function()
    for _, name in ipairs(METHODS) do
      local want = ("bad argument #1 to '%s' (LLThread expected, got no value)"):format(name)
      local got = message_of(("t.%s()"):format(name))
      H.expect(got == want, "t.%s() raised %s", name, got)
    end
  end)

  it("says the same for the methods reached through the metatable", function()
    assert.are.equal("bad argument #1 to 'join' (LLThread expected, got number)", message_of("mt.__index.join(5)"))
    assert.are.equal("bad argument #1 to 'join' (LLThread expected, got nil)",
      message_of("require('llthreads').new('')['join'](nil)"))
  end)

  it("says the same for __tostring called by hand", function()
    assert.are.equal("bad argument #1 to '__tostring' (LLThread expected, got number)", message_of("mt.__tostring(5)"))
    assert.are.equal("bad argument #1 to '__tostring' (LLThread expected, got no value)", message_of("mt.__tostring()"))
    -- a thread object is still fine
    assert.is_truthy(tostring(t):match("^llthreads%.thread: "))
  end)
end)

describe("warn() in a memory-limited child", function()
  after_each(H.cleanup)

  -- Child code exercising the warning function: before any control (5.4: off;
  -- 5.5: on), "@on"/"@off" controls, a warning in pieces.
  local WARNINGS = [[
    warn("before any control")
    warn("@on")
    warn("first ", "in ", "pieces")
    warn("@unknown control")
    warn("@off")
    warn("dropped: off again")
    warn("@on")
    warn("last")
    return "ran"
  ]]

  if H.is_54_or_later then
    it("behaves as the standard one: lua.c's prefix, off until '@on' (on from the start on 5.5), pieces joined", function()
      local script = [[
        local llthreads = require "llthreads"
        local code = ]] .. ("%q"):format(WARNINGS) .. [[

        io.stderr:write("[unlimited]\n")
        assert(llthreads.new(code):start():join())
        llthreads.set_memory_limit(16 * 1024 * 1024)
        io.stderr:write("[limited]\n")
        local ok, v = llthreads.new(code):start():join()
        io.stderr:write("[joined ", tostring(ok), " ", tostring(v), "]\n")
      ]]
      local code, out = H.run_lua(script)
      assert.are.equal(0, code, out)
      -- 5.5's luaL_newstate starts with warnings on, 5.4's with them off: a limited
      -- state (made with lua_newstate and the library's warning function) follows.
      local expected = (H.flavour == "5.5" and "Lua warning: before any control\n" or "")
        .. "Lua warning: first in pieces\nLua warning: last\n"
      assert.are.equal("[unlimited]\n" .. expected .. "[limited]\n" .. expected .. "[joined true ran]\n", out)
    end)
  else
    it("does not exist before 5.4; the child runs", function()
      if not H.is_jit then llthreads.set_memory_limit(16 * 1024 * 1024) end
      finally(function() if not H.is_jit then llthreads.set_memory_limit(nil) end end)
      H.assert_values({ true, "nil", n = 2 }, H.pack(llthreads.new("return type(warn)"):start():join()))
    end)
  end
end)
