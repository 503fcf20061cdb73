-- Helpers for the robustness specs (bad_input, copy_property, stress, faults,
-- memory_limit). Independent of spec/helper.lua so the two can evolve apart.
--
-- Environment (set by tools/test.sh):
--   LLTHREADS_LUA      absolute path of the interpreter running busted
--   LLTHREADS_FLAVOUR  5.1 | 5.2 | 5.3 | 5.4 | jit
--   LLTHREADS_STRESS   stress scale, 1 (default, modest) .. 20 (full size)
--   LLTHREADS_SEED     seed for the copy property spec (default: os.time())
--
-- Everything here is Linux-specific where it reads /proc; the project only
-- targets Linux.

local R = {}

local detected = rawget(_G, "jit") and "jit" or _VERSION:match("%d+%.%d+")
R.flavour = os.getenv("LLTHREADS_FLAVOUR") or detected
assert(R.flavour == detected, ("LLTHREADS_FLAVOUR=%s but the interpreter is %s")
  :format(tostring(R.flavour), detected))
R.is_jit = R.flavour == "jit"
R.has_integers = math.type ~= nil
R.unpack = table.unpack or unpack

function R.pack(...)
  return { n = select("#", ...), ... }
end

-- The interpreter running the specs, for sub-processes.
R.lua = os.getenv("LLTHREADS_LUA") or (R.is_jit and "luajit" or ("lua" .. detected))

---------------------------------------------------------------------------
-- Time: luasystem comes with busted (a dependency of it); fall back to the
-- shell when it is missing.
---------------------------------------------------------------------------

local has_sys, sys = pcall(require, "system")
if has_sys and not (sys.sleep and sys.monotime) then has_sys = false end

function R.sleep(sec)
  if has_sys then sys.sleep(sec) else os.execute("sleep " .. tostring(sec)) end
end

-- Seconds, sub-millisecond resolution, monotonic when luasystem is there.
function R.now()
  if has_sys then return sys.monotime() end
  local p = assert(io.popen("date +'%s %N'"))
  local s, ns = p:read("*a"):match("(%d+)%s+(%d+)")
  p:close()
  return tonumber(s) + tonumber(ns) / 1e9
end

-- Code prepended to child chunks: `sleep(sec)` and `now()` in the child.
R.CHILD_TIME = "local sleep, now do local ok, s = pcall(require, 'system') "
  .. "if ok and s.sleep and s.monotime then sleep, now = s.sleep, s.monotime "
  .. "else sleep = function(x) os.execute('sleep ' .. x) end "
  .. "now = os.time end end "

---------------------------------------------------------------------------
-- Files and /proc
---------------------------------------------------------------------------

local tmp_files = {}

-- A fresh path that does not exist yet.
function R.tmpname()
  local p = os.tmpname()
  os.remove(p)
  tmp_files[#tmp_files + 1] = p
  return p
end

function R.cleanup()
  for i = #tmp_files, 1, -1 do
    os.remove(tmp_files[i])
    tmp_files[i] = nil
  end
end

function R.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function R.file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

function R.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

-- A field of /proc/self/status, as a number (kB for the Vm* fields).
local function proc_status(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+)"))
end

-- OS threads in this process right now (the main thread included). Only a
-- rough figure: the module may keep finished workers parked for reuse, so an
-- OS thread outlives the Lua thread it ran; never use it to tell that a
-- thread ended.
function R.os_threads() return proc_status("Threads") end
function R.rss_kb() return proc_status("VmRSS") end

-- Whether the OS thread `tid` of this process exists.
function R.task_exists(tid)
  local f = io.open("/proc/self/task/" .. tostring(tid) .. "/stat", "r")
  if f then f:close() return true end
  return false
end

-- Polls pred until it is true or `timeout` seconds went by.
function R.wait_until(pred, timeout, step)
  local deadline = R.now() + (timeout or 10)
  repeat
    if pred() then return true end
    R.sleep(step or 0.005)
  until R.now() > deadline
  return pred() and true or false
end

function R.wait_file(path, timeout)
  return R.wait_until(function() return R.exists(path) end, timeout or 10)
end

-- Polls t:alive() until it says false (the thread finished); true if it did.
function R.wait_not_alive(t, timeout)
  return R.wait_until(function() return t:alive() == false end, timeout or 10, 0.001)
end

-- Waits until the process stops using CPU (os.clock counts every thread):
-- the busy threads it started have stopped. True if it did within `timeout`.
function R.wait_cpu_quiet(timeout)
  local deadline = R.now() + (timeout or 10)
  repeat
    local c0 = os.clock()
    R.sleep(0.1)
    if os.clock() - c0 < 0.03 then return true end
  until R.now() > deadline
  return false
end

-- Child snippets: `mark(path)` creates an empty file; `tid()` is the OS
-- thread id the child runs on.
R.CHILD_MARK = "local function mark(p) local f = io.open(p, 'wb') if f then f:close() end end "
R.CHILD_TID = "local function tid() local f = io.open('/proc/thread-self/stat', 'r') "
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

function R.gate()
  local p = R.tmpname()
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
R.GATE_WAIT = "do local g = ... local f = io.open(g, 'r') if f then f:close() end end "

---------------------------------------------------------------------------
-- Sub-processes
---------------------------------------------------------------------------

local function has_timeout_cmd()
  local p = io.popen("command -v timeout 2>/dev/null")
  local out = p:read("*a")
  p:close()
  return out:match("%S") ~= nil
end
local TIMEOUT = has_timeout_cmd() and "timeout -k 5 " or nil

-- Runs a Lua script in a fresh interpreter of the flavour under test (same
-- environment: LUA_CPATH is inherited). Returns exit status, output (stdout
-- and stderr together, the inner shell's crash report included).
-- `limit` (seconds, default 60) turns a hang into exit status 124.
function R.run_lua(source, limit)
  local path = R.tmpname() .. ".lua"
  tmp_files[#tmp_files + 1] = path
  R.write_file(path, source)
  local inner = (TIMEOUT and (TIMEOUT .. (limit or 60) .. " ") or "")
    .. R.lua .. " " .. path .. " 2>&1; echo EXIT:$?"
  local p = assert(io.popen("sh -c '" .. inner .. "' 2>&1"))
  local out = p:read("*a")
  p:close()
  local code = tonumber(out:match("EXIT:(%d+)%s*$"))
  return code, out
end

function R.crashed(code, out)
  return code == nil or code >= 128
    or out:find("Segmentation", 1, true) ~= nil
    or out:find("Aborted", 1, true) ~= nil
    or out:find("core dumped", 1, true) ~= nil
    or out:find("panicked", 1, true) ~= nil
end

---------------------------------------------------------------------------
-- Assertions that say what went wrong
---------------------------------------------------------------------------

local function show(v)
  if type(v) == "string" then return ("%q"):format(v) end
  return tostring(v)
end
R.show = show

function R.show_pack(p)
  local t = {}
  for i = 1, p.n do t[i] = show(p[i]) end
  return "(" .. table.concat(t, ", ") .. ")"
end

-- Raises `fmt` formatted with the rest (packed results are shown as lists)
-- when `cond` is false. The message is only built on failure: these checks
-- sit in loops that run thousands of times.
function R.expect(cond, fmt, ...)
  if cond then return end
  local args = R.pack(...)
  for i = 1, args.n do
    local v = args[i]
    if type(v) == "table" and type(v.n) == "number" then args[i] = R.show_pack(v) else args[i] = tostring(v) end
  end
  error(fmt:format(R.unpack(args, 1, args.n)), 2)
end

-- pcall(f, ...) must fail with a string error containing every plain
-- `needles` entry (a string or list of strings). Returns the message.
function R.assert_error(needles, f, ...)
  local r = R.pack(pcall(f, ...))
  R.expect(not r[1], "expected an error, got %s", r)
  local msg = r[2]
  R.expect(type(msg) == "string", "expected a string error message, got %s", msg)
  if type(needles) == "string" then needles = { needles } end
  for _, n in ipairs(needles or {}) do
    if not msg:find(n, 1, true) then error(("error %s does not contain %q"):format(show(msg), n), 2) end
  end
  return msg
end

-- A packed result must be exactly (nil, msg).
function R.assert_nil_msg(p, msg)
  if not (p.n == 2 and p[1] == nil and p[2] == msg) then
    error(("expected (nil, %q), got %s"):format(msg, R.show_pack(p)), 2)
  end
end

return R
