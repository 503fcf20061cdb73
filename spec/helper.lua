-- Shared helpers for the llthreads specs.
--
-- The specs run under every interpreter (lua5.1 .. lua5.5, luajit) with
--   LLTHREADS_LUA      absolute path of the interpreter running busted
--   LLTHREADS_FLAVOUR  5.1 | 5.2 | 5.3 | 5.4 | 5.5 | jit
--   LLTHREADS_STRESS   stress scale, 1 (default, modest) .. 20 (full size)
--   LLTHREADS_SEED     seed for the copy property spec (default: os.time())
-- Plain Lua has no sleep and no sub-second clock: both come from luasystem
-- (a dependency of busted) and go through the shell without it. Child threads
-- signal the parent through files, which keeps the specs event driven instead
-- of guessing how long a thread needs. Whatever reads /proc is Linux-only, as
-- is the project.

local H = {}

-- busted puts luassert in the specs' environment, not in this module's.
local assert = require "luassert"

local detected = jit and "jit" or _VERSION:match("%d+%.%d+")

H.flavour = os.getenv("LLTHREADS_FLAVOUR") or detected
H.lua = os.getenv("LLTHREADS_LUA") or (jit and "luajit" or ("lua" .. detected))

-- A mismatch means the runner is misconfigured; every flavour-specific
-- assertion would then test the wrong thing, so stop here.
assert(H.flavour == detected, ("LLTHREADS_FLAVOUR=%s but the interpreter running the specs is %s")
  :format(tostring(H.flavour), detected))

H.is_jit = H.flavour == "jit"
-- Lua 5.3 and later have an integer subtype of number.
H.has_integers = H.flavour == "5.3" or H.flavour == "5.4" or H.flavour == "5.5"
-- Lua 5.4 and later: warn, to-be-closed variables, coroutine.close.
H.is_54_or_later = H.flavour == "5.4" or H.flavour == "5.5"

H.unpack = table.unpack or unpack

function H.pack(...)
  return { n = select("#", ...), ... }
end

---------------------------------------------------------------------------
-- Shell and files
---------------------------------------------------------------------------

function H.shq(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local has_sys, sys = pcall(require, "system")
if has_sys and not (sys.sleep and sys.monotime) then has_sys = false end

function H.sleep(sec)
  if has_sys then sys.sleep(sec) else os.execute("sleep " .. tostring(sec)) end
end

-- Seconds with sub-millisecond resolution, monotonic when luasystem is there.
function H.now()
  if has_sys then return sys.monotime() end
  local p = assert(io.popen("date +'%s %N'"))
  local s, ns = p:read("*a"):match("(%d+)%s+(%d+)")
  p:close()
  return tonumber(s) + tonumber(ns) / 1e9
end

function H.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function H.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function H.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- Creates the file under a temporary name first, so a reader never sees it
-- half written.
function H.touch(path, data)
  H.write_file(path .. ".part", data or "")
  assert(os.rename(path .. ".part", path))
end

local tmp_files = {}

-- A fresh path that does not exist yet (os.tmpname creates the file).
function H.tmpname()
  local p = os.tmpname()
  os.remove(p)
  tmp_files[#tmp_files + 1] = p
  return p
end

function H.cleanup()
  for i = #tmp_files, 1, -1 do
    os.remove(tmp_files[i])
    os.remove(tmp_files[i] .. ".part")
    tmp_files[i] = nil
  end
end

function H.file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- Polls pred every `step` seconds (default 10 ms) until it is true or
-- `timeout` seconds (default 10) went by.
function H.wait_until(pred, timeout, step)
  local deadline = H.now() + (timeout or 10)
  repeat
    if pred() then return true end
    H.sleep(step or 0.01)
  until H.now() > deadline
  return pred() and true or false
end

function H.wait_file(path, timeout)
  return H.wait_until(function() return H.exists(path) end, timeout)
end

-- Polls t:alive() until it says false (the thread finished); true if it did.
function H.wait_not_alive(t, timeout)
  return H.wait_until(function() return t:alive() == false end, timeout, 0.001)
end

-- Waits until the process stops using CPU (os.clock counts every thread):
-- the busy threads it started have stopped. True if it did within `timeout`.
function H.wait_cpu_quiet(timeout)
  local deadline = H.now() + (timeout or 10)
  repeat
    local c0 = os.clock()
    H.sleep(0.1)
    if os.clock() - c0 < 0.03 then return true end
  until H.now() > deadline
  return false
end

---------------------------------------------------------------------------
-- /proc
---------------------------------------------------------------------------

-- A field of /proc/self/status, as a number (kB for the Vm* fields).
local function proc_status(field)
  local s = H.read_file("/proc/self/status")
  return s and tonumber(s:match(field .. ":%s*(%d+)"))
end

-- OS threads in this process right now (the main thread included). Only a
-- rough figure: the module may keep finished workers parked for reuse, so an
-- OS thread outlives the Lua thread it ran; never use it to tell that a
-- thread ended.
function H.os_threads() return proc_status("Threads") end
function H.rss_kb() return proc_status("VmRSS") end

-- Whether the OS thread `tid` of this process exists.
function H.task_exists(tid)
  return H.exists("/proc/self/task/" .. tostring(tid) .. "/stat")
end

---------------------------------------------------------------------------
-- Code for child threads
---------------------------------------------------------------------------

-- Prepended to child code. Kept on one line so error positions in the
-- child's own code stay on the line numbers the spec wrote.
H.CHILD_LIB = table.concat({
  "local function sleep(s) os.execute('sleep ' .. s) end",
  "local function touch(p, d) local f = assert(io.open(p .. '.part', 'wb')) f:write(d or '') f:close() assert(os.rename(p .. '.part', p)) end",
  -- One blocking C call that creates `ready` and then waits for `go` (at
  -- most `max` seconds): while the child sits in it, it runs no Lua code.
  -- It also ends when `ready` disappears: H.cleanup deleting the files
  -- after a failed spec releases the child too.
  "local function handshake(ready, go, max) os.execute(\"touch '\" .. ready .. \"'; i=0; while [ ! -e '\" .. go .. \"' ] && [ -e '\" .. ready .. \"' ] && [ $i -lt \" .. math.floor((max or 10) * 100) .. \" ]; do sleep 0.01; i=$((i+1)); done\") end",
}, " ") .. " "

function H.child(code)
  return H.CHILD_LIB .. code
end

-- Child code that silences the child's error logger, for specs where a
-- failing chunk is expected and its stderr report is only noise.
function H.quiet(code)
  return "require('llthreads').set_logger(function() end) " .. code
end

-- Code prepended to child chunks: `sleep(sec)` and `now()` in the child.
H.CHILD_TIME = "local sleep, now do local ok, s = pcall(require, 'system') "
  .. "if ok and s.sleep and s.monotime then sleep, now = s.sleep, s.monotime "
  .. "else sleep = function(x) os.execute('sleep ' .. x) end "
  .. "now = os.time end end "

-- Child snippets: `mark(path)` creates an empty file; `tid()` is the OS
-- thread id the child runs on.
H.CHILD_MARK = "local function mark(p) local f = io.open(p, 'wb') if f then f:close() end end "
H.CHILD_TID = "local function tid() local f = io.open('/proc/thread-self/stat', 'r') "
  .. "if not f then return nil end local n = f:read('*n') f:close() return n end "

---------------------------------------------------------------------------
-- Gate: children block (in the kernel, using no CPU and running no Lua
-- code) until the parent opens the gate. A gate is a FIFO: a child opens it
-- for reading, which blocks until some process opens it for writing. The
-- parent opens it read-write (never blocks), which wakes every blocked
-- child, then removes the path (so later children find no file and pass
-- too) and keeps its end open so that a child which looked the path up
-- before the removal still gets through.
---------------------------------------------------------------------------

local Gate = {}
Gate.__index = Gate
local open_gates = {}

function H.gate()
  local p = H.tmpname()
  local ok = os.execute("mkfifo '" .. p .. "'")
  assert(ok == true or ok == 0, "mkfifo failed for " .. p)
  return setmetatable({ path = p }, Gate)
end

function Gate:release()
  if self.released then return end
  self.released = true
  self.fh = assert(io.open(self.path, "r+"))
  os.remove(self.path)
  open_gates[self] = true
end

-- Call once every child has passed the gate (for example after joining
-- them all). Gates not closed stay open until the state closes.
function Gate:close()
  self:release()
  if self.fh then self.fh:close() self.fh = nil end
  open_gates[self] = nil
end

-- Chunk prefix: the first argument of the chunk is the gate path; the
-- chunk waits for the gate, then runs on with `...` unchanged.
H.GATE_WAIT = "do local g = ... local f = io.open(g, 'r') if f then f:close() end end "

---------------------------------------------------------------------------
-- Sub-processes
---------------------------------------------------------------------------

-- The environment a sub-process interpreter needs to find the module under
-- test: our own package.cpath, with any LUA_INIT removed.
function H.lua_env()
  local cpath = H.shq(package.cpath)
  return "env -u LUA_INIT -u LUA_INIT_5_2 -u LUA_INIT_5_3 -u LUA_INIT_5_4 -u LUA_INIT_5_5"
    .. " LUA_CPATH=" .. cpath
    .. " LUA_CPATH_5_2=" .. cpath
    .. " LUA_CPATH_5_3=" .. cpath
    .. " LUA_CPATH_5_4=" .. cpath
    .. " LUA_CPATH_5_5=" .. cpath
end

-- Runs a shell command; returns its exit status (128+N when killed by
-- signal N; nil if the shell reported none) and its stdout and stderr
-- together. Portable across 5.1/LuaJIT, whose os.execute and io.close do
-- not report the status.
function H.run(cmd)
  local p = assert(io.popen("( " .. cmd .. " ) 2>&1; echo \"EXIT:$?\""))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.*)EXIT:(%d+)%s*$")
  return tonumber(code), body or out
end

local function has_timeout_cmd()
  local p = io.popen("command -v timeout 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out:match("%S") ~= nil
end
local TIMEOUT = has_timeout_cmd() and "timeout -k 5 " or nil

-- Runs a Lua script in a fresh interpreter of the flavour under test.
-- `env` is an optional string of extra VAR=value assignments; `limit`
-- (seconds, default 60) turns a hang into exit status 124.
function H.run_lua(source, env, limit)
  local path = H.tmpname() .. ".lua"
  tmp_files[#tmp_files + 1] = path
  H.write_file(path, source)
  return H.run(H.lua_env() .. " " .. (env or "") .. " "
    .. (TIMEOUT and (TIMEOUT .. (limit or 60) .. " ") or "")
    .. H.shq(H.lua) .. " " .. H.shq(path))
end

-- Signals that mean the interpreter crashed rather than exited.
function H.crashed(code, output)
  return code == nil or code >= 128
    or output:find("Segmentation fault", 1, true) ~= nil
    or output:find("Aborted", 1, true) ~= nil
    or output:find("core dumped", 1, true) ~= nil
    or output:find("panicked", 1, true) ~= nil
end

-- Runs `source` in a fresh interpreter (see H.run_lua) and asserts that it
-- neither crashed nor failed; returns its output.
function H.survives(source, env, limit)
  local code, out = H.run_lua(source, env, limit or 60)
  assert(not H.crashed(code, out), ("the interpreter crashed (exit %s):\n%s"):format(tostring(code), out))
  assert.are.equal(0, code, out)
  return out
end

---------------------------------------------------------------------------
-- The module file
---------------------------------------------------------------------------

-- package.searchpath does not exist on 5.1/LuaJIT.
function H.find_module_file(name)
  local fname = name:gsub("%.", "/")
  for template in package.cpath:gmatch("[^;]+") do
    local path = template:gsub("%?", fname)
    if H.exists(path) then return path end
  end
  return nil
end

-- Calls llthreads.new from a Lua line that names it, as programs do, so an
-- argument error names 'new'. (Handed straight to pcall, the function has no
-- name at the call site and 5.2+ names it by its path in package.loaded,
-- e.g. 'llthreads.new'.) Not a tail call, which would lose the name too.
function H.try_new(llthreads, ...)
  return pcall(function(...)
    local t = llthreads.new(...)
    return t
  end, ...)
end

---------------------------------------------------------------------------
-- Assertions
---------------------------------------------------------------------------

function H.assert_contains(haystack, needle)
  assert(type(haystack) == "string",
    ("expected a string containing %q, got %s"):format(needle, tostring(haystack)))
  assert(haystack:find(needle, 1, true),
    ("expected %q to contain %q"):format(haystack, needle))
end

function H.assert_not_contains(haystack, needle)
  assert(not tostring(haystack):find(needle, 1, true),
    ("expected %q not to contain %q"):format(tostring(haystack), needle))
end

-- Asserts that the values `got` (a H.pack result) are exactly `expected`,
-- count included.
function H.assert_values(expected, got)
  assert.are.equal(expected.n or #expected, got.n)
  for i = 1, got.n do
    assert.are.equal(expected[i], got[i])
  end
end

function H.is_integer(x)
  if math.type then return math.type(x) == "integer" end
  return type(x) == "number" and x == math.floor(x)
end

---------------------------------------------------------------------------
-- Checks for loops: the message is built only on failure
---------------------------------------------------------------------------

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end
H.show = show

function H.show_pack(p)
  local t = {}
  for i = 1, p.n do t[i] = show(p[i]) end
  return "(" .. table.concat(t, ", ") .. ")"
end

-- Raises `fmt` formatted with the rest (packed results are shown as lists)
-- when `cond` is false. The message is only built on failure: these checks
-- sit in loops that run thousands of times.
function H.expect(cond, fmt, ...)
  if cond then return end
  local args = H.pack(...)
  for i = 1, args.n do
    local v = args[i]
    if type(v) == "table" and type(v.n) == "number" then args[i] = H.show_pack(v) else args[i] = tostring(v) end
  end
  error(fmt:format(H.unpack(args, 1, args.n)), 2)
end

-- pcall(f, ...) must fail with a string error containing every plain
-- `needles` entry (a string or list of strings). Returns the message.
function H.assert_error(needles, f, ...)
  local r = H.pack(pcall(f, ...))
  H.expect(not r[1], "expected an error, got %s", r)
  local msg = r[2]
  H.expect(type(msg) == "string", "expected a string error message, got %s", msg)
  if type(needles) == "string" then needles = { needles } end
  for _, n in ipairs(needles or {}) do
    if not msg:find(n, 1, true) then error(("error %s does not contain %q"):format(show(msg), n), 2) end
  end
  return msg
end

-- A packed result must be exactly (nil, msg).
function H.assert_nil_msg(p, msg)
  if not (p.n == 2 and p[1] == nil and p[2] == msg) then
    error(("expected (nil, %q), got %s"):format(msg, H.show_pack(p)), 2)
  end
end

return H
