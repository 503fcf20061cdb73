-- Faults inside the child: odd error values, a logger that raises, huge results,
-- and a long-running thread whose object is collected in the detached modes.

local H = require "spec.helper"
local llthreads = require "llthreads"

local CHILD_PREFIX = "Error from child thread: "
local LOG_PREFIX = "Error from thread: "
-- 5.2+ read an error value's __tostring metamethod (messages_spec has the details).
local READS_TOSTRING = not (H.flavour == "5.1" or H.is_jit)
local NO_MESSAGE = LOG_PREFIX .. "(no error message)"
-- 5.5 raises a nil error value as the string "<no error object>" (Lua itself, after
-- the message handler ran: no traceback); earlier versions keep nil, which has no text.
local NIL_LOGGED = H.flavour == "5.5" and (LOG_PREFIX .. "<no error object>") or NO_MESSAGE

local MODES = {
  { name = "start(false, false)", d = false, j = false },
  { name = "start(false, true)", d = false, j = true },
  { name = "start(true, false)", d = true, j = false },
  { name = "start(true, true)", d = true, j = true },
}

-- Child code: the first argument is a file the child's logger writes the
-- message it gets into; `raise` is code that raises the error under test.
local function with_file_logger(raise)
  -- (written under another name, then renamed: the parent may look any time)
  return "local log = ... require('llthreads').set_logger(function(msg) "
    .. "local f = assert(io.open(log .. '.part', 'wb')) "
    .. "f:write(type(msg) == 'string' and msg or ('<' .. type(msg) .. '>')) f:close() "
    .. "assert(os.rename(log .. '.part', log)) end) "
    .. raise
end

-- Error values and what the logger line must say. `log` is a plain string the
-- line must start with, or a list of accepted prefixes.
local ERRORS = {
  { name = "a string", raise = "error('plain failure', 0)", join = "plain failure", log = { LOG_PREFIX .. "plain failure" } },
  { name = "a number", raise = "error(42, 0)", join = "42", log = { LOG_PREFIX .. "42" } },
  { name = "a table", raise = "error({ code = 7 })", log = { LOG_PREFIX .. "(no error message)" } },
  { name = "a cyclic table", raise = "local t = {} t.t = t error(t)", log = { LOG_PREFIX .. "(no error message)" } },
  { name = "nil", raise = "error(nil)", log = { NIL_LOGGED } },
  { name = "no value", raise = "error()", log = { NIL_LOGGED } },
  { name = "false", raise = "error(false)", log = { LOG_PREFIX .. "(no error message)" } },
  { name = "true", raise = "error(true)", log = { LOG_PREFIX .. "(no error message)" } },
  { name = "a function", raise = "error(print)", log = { LOG_PREFIX .. "(no error message)" } },
  { name = "a coroutine", raise = "error(coroutine.create(function() end))", log = { LOG_PREFIX .. "(no error message)" } },
  { name = "a foreign userdata", raise = "error(io.stdout)",
    log = { READS_TOSTRING and (LOG_PREFIX .. "file (0x") or NO_MESSAGE } },
  { name = "a table with __tostring",
    raise = "error(setmetatable({}, { __tostring = function() return 'custom message' end }))",
    log = { READS_TOSTRING and (LOG_PREFIX .. "custom message") or NO_MESSAGE } },
  { name = "a table whose __tostring raises",
    raise = "error(setmetatable({}, { __tostring = function() error('tostring boom') end }))",
    log = { LOG_PREFIX } },
  { name = "a table whose __tostring returns a table",
    raise = "error(setmetatable({}, { __tostring = function() return {} end }))",
    log = { LOG_PREFIX } },
  { name = "a table with a raising __gc",
    raise = "error(setmetatable({}, { __gc = function() error('gc boom') end }))",
    log = { LOG_PREFIX .. "(no error message)" } },
  { name = "a 1 MiB string", raise = "error(string.rep('e', 1024 * 1024), 0)", join = string.rep("e", 1024 * 1024),
    log = { LOG_PREFIX .. string.rep("e", 1024 * 1024) } },
  { name = "a stack overflow", raise = "local function f() return 1 + f() end f()", join = "stack overflow",
    log = { LOG_PREFIX } },
}

local function starts_with_any(s, prefixes)
  for _, p in ipairs(prefixes) do
    if s:sub(1, #p) == p then return true end
  end
  return false
end

describe("faults in the child", function()
  after_each(H.cleanup)

  describe("error values", function()
    for _, e in ipairs(ERRORS) do
      for _, m in ipairs(MODES) do
        it(("%s raised, %s: join and the logger get a message, nothing crashes"):format(e.name, m.name), function()
          local log = H.tmpname()
          local t = llthreads.new(with_file_logger(e.raise), log)
          assert(rawequal(t:start(m.d, m.j), t))
          if m.j and not m.d then
            local r = H.pack(t:join())
            assert(r.n == 2 and r[1] == false and type(r[2]) == "string", "join gave " .. H.show_pack(r))
            assert(r[2]:sub(1, #CHILD_PREFIX) == CHILD_PREFIX, "join message: " .. r[2]:sub(1, 200))
            if e.join then
              assert(r[2]:find(e.join, 1, true), "join message lacks the error: " .. r[2]:sub(1, 200))
            end
          elseif not m.d or m.j then
            local r = H.pack(t:join())
            assert(r[1] == true, "join gave " .. H.show_pack(r))
          end
          -- the logger ran in the child (in every mode) and got a string
          -- Generous: a detached child recursing to a stack overflow under valgrind on a
          -- loaded machine has needed longer than the default wait.
          assert(H.wait_file(log, 60), "the logger was not called")
          local f = assert(io.open(log, "rb"))
          local line = f:read("*a")
          f:close()
          assert(starts_with_any(line, e.log), "logger got: " .. line:sub(1, 200))
        end)
      end
    end
  end)

  -- Regression: the error object was dropped before the logger ran, so a collection
  -- inside the logger ran the object's own finalizer there; on 5.2 and 5.3 its error
  -- aborted the logger, which never saw the message (a CI run caught it by chance).
  describe("an error object with a raising finalizer", function()
    for _, m in ipairs(MODES) do
      it(("stays alive while the logger runs, %s: the logger gets the message"):format(m.name), function()
        local log = H.tmpname()
        local raise = "error(setmetatable({}, { __gc = function() error('gc boom') end }))"
        -- the logger collects first: without the fix that is where the finalizer raised
        local code = with_file_logger(raise):gsub("set_logger%(function%(msg%) ", "%0collectgarbage() ")
        assert(code:find("collectgarbage() ", 1, true), "the logger must collect first")
        local t = llthreads.new(code, log)
        t:start(m.d, m.j)
        if not m.d or m.j then
          local r = H.pack(t:join())
          if m.j and not m.d then
            assert(r[1] == false and type(r[2]) == "string" and r[2]:sub(1, #CHILD_PREFIX) == CHILD_PREFIX,
              "join gave " .. H.show_pack(r))
          else
            assert(r[1] == true, "join gave " .. H.show_pack(r))
          end
        end
        assert(H.wait_file(log, 60), "the logger was not called, or did not finish")
        local f = assert(io.open(log, "rb"))
        local line = f:read("*a")
        f:close()
        assert(line == NO_MESSAGE, "logger got: " .. line:sub(1, 200))
      end)
    end
  end)

  describe("a logger that raises", function()
    local LOGGERS = {
      { name = "a string error", code = "function() error('logger boom') end" },
      { name = "a table error", code = "function() error({}) end" },
      { name = "a stack overflow", code = "function() local function f() return 1 + f() end f() end" },
      { name = "a yield outside a coroutine", code = "function() coroutine.yield(1) end" },
      { name = "an error whose __tostring raises",
        code = "function() error(setmetatable({}, { __tostring = function() error('x') end })) end" },
    }
    for _, lg in ipairs(LOGGERS) do
      for _, m in ipairs(MODES) do
        it(("raising %s, %s: swallowed, the thread's own error still reaches join"):format(lg.name, m.name), function()
          local done = H.tmpname()
          -- the logger raises after leaving a mark, so we know it ran
          local code = "local done = ... require('llthreads').set_logger(function(msg) "
            .. "local f = io.open(done, 'wb') f:write(msg) f:close() (" .. lg.code .. ")() end) "
            .. "error('original failure')"
          local t = llthreads.new(code, done)
          t:start(m.d, m.j)
          if m.j and not m.d then
            local r = H.pack(t:join())
            assert(r.n == 2 and r[1] == false, "join gave " .. H.show_pack(r))
            assert(r[2]:find("original failure", 1, true), "join message: " .. tostring(r[2]))
            assert(not r[2]:find("logger boom", 1, true), "the logger's error leaked: " .. r[2])
          elseif not m.d or m.j then
            assert.are.equal(true, (t:join()))
          end
          assert(H.wait_file(done), "the logger was not called")
        end)
      end
    end
  end)

  describe("big results", function()
    local unpack_src = "local unpack = table.unpack or unpack "

    it("returns 5000 values from a chunk, all of them", function()
      local t = llthreads.new(unpack_src .. "local t = {} for i = 1, 5000 do t[i] = i * 2 end return unpack(t, 1, 5000)")
      local r = H.pack(t:start():join())
      assert.are.equal(5001, r.n)
      assert.are.equal(true, r[1])
      for i = 1, 5000 do
        if r[i + 1] ~= i * 2 then error(("value %d is %s"):format(i, tostring(r[i + 1]))) end
      end
    end)

    it("passes 5000 arguments and gets them back", function()
      local args = {}
      for i = 1, 5000 do args[i] = (i % 3 == 0) and tostring(i) or i end
      local t = llthreads.new("return select('#', ...), ...", H.unpack(args, 1, 5000))
      local r = H.pack(t:start():join())
      assert.are.equal(5002, r.n)
      assert.are.equal(5000, r[2])
      for i = 1, 5000 do
        if r[i + 2] ~= args[i] then error(("value %d is %s"):format(i, tostring(r[i + 2]))) end
      end
    end)

    it("keeps nils among many results", function()
      local r = H.pack(llthreads.new("return nil, 1, nil, nil, 2, nil"):start():join())
      assert.are.equal(7, r.n)
      assert.are.same({ n = 7, true, nil, 1, nil, nil, 2, nil }, r)
    end)

    local MiB = 1024 * 1024

    it("returns a 64 MiB string intact", function()
      local code = "local s = string.rep('\\0\\1\\2\\3\\4\\5\\6\\255', 8 * 1024 * 1024) return s .. 'tail', #s"
      local r = H.pack(llthreads.new(code):start():join())
      assert(r.n == 3 and r[1] == true, "join gave " .. tostring(r[1]) .. ", " .. tostring(r[2]):sub(1, 100))
      local s = r[2]
      assert.are.equal(64 * MiB, r[3])
      assert.are.equal(64 * MiB + 4, #s)
      assert.are.equal("\0\1\2\3\4\5\6\255", s:sub(1, 8))
      assert.are.equal("\0\1\2\3\4\5\6\255", s:sub(32 * MiB + 1, 32 * MiB + 8))
      assert.are.equal("\255tail", s:sub(-5))
      assert.are.equal(3, s:byte(4 + 8 * 12345))
    end)

    it("passes a 64 MiB string argument intact", function()
      local s = string.rep("xyz\0", 16 * MiB)
      local code = "local s = ... return #s, s:sub(1, 4), s:sub(-4), s:byte(32 * 1024 * 1024 + 3)"
      local r = H.pack(llthreads.new(code, s):start():join())
      assert.are.same({ n = 5, true, 64 * MiB, "xyz\0", "xyz\0", ("z"):byte() }, r)
    end)
  end)

  describe("uncopyable results", function()
    local CASES = {
      { name = "a Lua function", code = "return function() end", type = "function" },
      { name = "a coroutine", code = "return coroutine.create(function() end)", type = "thread" },
      { name = "a foreign userdata", code = "return io.stdout", type = "userdata" },
    }
    for _, c in ipairs(CASES) do
      it(("turns %s into an 'Un-supported value' string, also inside a table"):format(c.name), function()
        local code = ("local v = (function() %s end)() return v, { v, k = v }, 'after'"):format(c.code)
        local r = H.pack(llthreads.new(code):start():join())
        assert(r.n == 4 and r[1] == true, "join gave " .. H.show_pack(r))
        local prefix = "Un-supported value: " .. c.type .. ": "
        assert(type(r[2]) == "string" and r[2]:sub(1, #prefix) == prefix, "got " .. H.show(r[2]))
        assert(type(r[3]) == "table", "got " .. H.show(r[3]))
        assert(type(r[3][1]) == "string" and r[3][1]:sub(1, #prefix) == prefix, "got " .. H.show(r[3][1]))
        assert(type(r[3].k) == "string" and r[3].k:sub(1, #prefix) == prefix, "got " .. H.show(r[3].k))
        assert.are.equal("after", r[4])
      end)
    end
  end)

  describe("bad code", function()
    it("refuses a truncated precompiled chunk with an error in the caller", function()
      local dumped = string.dump(function() local a = 1 return a + 1 end)
      for _, cut in ipairs({ 1, 4, 12, #dumped - 1 }) do
        H.assert_error(nil, llthreads.new, dumped:sub(1, cut))
      end
      -- and the whole chunk works
      assert.are.same({ n = 2, true, 2 }, H.pack(llthreads.new(dumped):start():join()))
    end)

    it("compiles code with NUL bytes in it (binary safe)", function()
      assert.are.same({ n = 3, true, "a\0b", 1 }, H.pack(llthreads.new("return 'a\0b', 1"):start():join()))
      assert.are.same({ n = 2, true, 1 }, H.pack(llthreads.new("return 1 --\0 comment"):start():join()))
      H.assert_error(nil, llthreads.new, "\0")
    end)

    it("refuses code nested too deeply for the parser with an error in the caller", function()
      local deep = "return " .. string.rep("(", 100000) .. "1" .. string.rep(")", 100000)
      H.assert_error(nil, llthreads.new, deep)
    end)

    it("runs empty code and code holding a 4 MiB literal", function()
      assert.are.same({ n = 1, true }, H.pack(llthreads.new(""):start():join()))
      local r = H.pack(llthreads.new("return '" .. string.rep("x", 4 * 1024 * 1024) .. "'"):start():join())
      assert(r.n == 2 and r[1] == true and #r[2] == 4 * 1024 * 1024, "join gave " .. tostring(r[1]))
    end)
  end)

  describe("a thread that runs on while its object is collected", function()
    -- about 1 s of work in 50 ms sleeps, then a mark file
    local LONG = H.CHILD_TIME .. "local done = ... for _ = 1, 20 do sleep(0.05) end "
      .. "local f = assert(io.open(done, 'wb')) f:write('done') f:close()"

    for _, m in ipairs({ MODES[3], MODES[4] }) do
      it(("%s: collectgarbage returns at once, the thread finishes later"):format(m.name), function()
        local done = H.tmpname()
        local t = llthreads.new(LONG, done)
        t:start(m.d, m.j)
        t = nil
        local t0 = H.now()
        collectgarbage()
        collectgarbage()
        local took = H.now() - t0
        -- the child needs 1 s or more: had collection waited for it, it would be done
        assert(not H.exists(done), ("collectgarbage took %.2f s and the thread is done: it waited"):format(took))
        -- it keeps running and ends on its own
        assert(H.wait_file(done, 15), "the thread never finished")
      end)
    end
  end)
end)
