-- Shared helpers for the llthreads specs.
--
-- The specs run under every interpreter (lua5.1 .. lua5.4, luajit) with
--   LLTHREADS_LUA      absolute path of the interpreter running busted
--   LLTHREADS_FLAVOUR  5.1 | 5.2 | 5.3 | 5.4 | jit
-- Plain Lua has no sleep and no sub-second clock, so both go through the
-- shell; child threads signal the parent through files, which keeps the specs
-- event driven instead of guessing how long a thread needs.

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
-- Lua 5.3 and 5.4 have an integer subtype of number.
H.has_integers = H.flavour == "5.3" or H.flavour == "5.4"

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

function H.sleep(sec)
  os.execute("sleep " .. tostring(sec))
end

-- Wall-clock seconds with sub-millisecond resolution.
function H.now()
  local p = assert(io.popen("date +'%s %N'"))
  local out = p:read("*a")
  p:close()
  local s, ns = out:match("(%d+)%s+(%d+)")
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

-- Polls pred every ~10 ms for at least `timeout` seconds; returns true as
-- soon as pred does. Counts polls rather than reading a clock: each poll
-- sleeps 10 ms, so the real wait is never shorter than `timeout`.
function H.wait_until(pred, timeout)
  local polls = math.ceil((timeout or 5) / 0.01)
  for _ = 1, polls do
    if pred() then return true end
    H.sleep(0.01)
  end
  return pred() and true or false
end

function H.wait_file(path, timeout)
  return H.wait_until(function() return H.exists(path) end, timeout)
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

---------------------------------------------------------------------------
-- Sub-processes
---------------------------------------------------------------------------

-- The environment a sub-process interpreter needs to find the module under
-- test: our own package.cpath, with any LUA_INIT removed.
function H.lua_env()
  local cpath = H.shq(package.cpath)
  return "env -u LUA_INIT -u LUA_INIT_5_2 -u LUA_INIT_5_3 -u LUA_INIT_5_4"
    .. " LUA_CPATH=" .. cpath
    .. " LUA_CPATH_5_2=" .. cpath
    .. " LUA_CPATH_5_3=" .. cpath
    .. " LUA_CPATH_5_4=" .. cpath
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

-- Runs a Lua script in a fresh interpreter of the flavour under test.
-- `env` is an optional string of extra VAR=value assignments.
function H.run_lua(source, env)
  local path = H.tmpname() .. ".lua"
  tmp_files[#tmp_files + 1] = path
  H.write_file(path, source)
  return H.run(H.lua_env() .. " " .. (env or "") .. " " .. H.shq(H.lua) .. " " .. H.shq(path))
end

-- Signals that mean the interpreter crashed rather than exited.
function H.crashed(code, output)
  return code == nil or code >= 128
    or output:find("Segmentation fault", 1, true)
    or output:find("Aborted", 1, true)
    or output:find("core dumped", 1, true)
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

return H
