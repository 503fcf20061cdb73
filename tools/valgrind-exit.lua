-- A user's own memcheck run: starts, joins and interrupts threads in every start
-- mode, some of whose children load the module themselves, then ends normally.
--
--   LUA_CPATH="build/lua54/?.so;;" valgrind --leak-check=full lua5.4 tools/valgrind-exit.lua
--
-- With valgrind's default settings this must report "ERROR SUMMARY: 0 errors": no
-- OS thread of the module's pool may still be parked when the process exits
-- (tools/valgrind.sh runs it and fails otherwise). Prints "valgrind-exit: ok" at the
-- end. Plain Lua with no other module, so that the run shows only the module.

local llthreads = require "llthreads"

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p
end

local function exists(path)
  local f = io.open(path)
  if f then f:close() return true end
  return false
end

-- Waits (up to a minute: memcheck is slow) for a file a child writes.
local function wait_file(path)
  for _ = 1, 6000 do
    if exists(path) then os.remove(path) return end
    os.execute("sleep 0.01")
  end
  error("a child never wrote " .. path)
end

local function check(cond, ...)
  if not cond then error(table.concat({ ... }, " "), 2) end
end

-- The child writes `mark` from its logger, which runs after its chunk failed.
local QUIET = [[
  local mark = ...
  require("llthreads").set_logger(function()
    local f = io.open(mark, "w") f:close()
  end)
]]
local SPIN = QUIET .. "while true do end"
local ADD = "local a, b = ... return a + b"
local INTERRUPTED = llthreads.interrupted_error

-- start(detached, joinable), as in the README's mode table
local MODES = {
  { false, false }, { false, true }, { true, false }, { true, true },
}

for _, m in ipairs(MODES) do
  local detached, joinable = m[1], m[2]

  -- A finished chunk.
  local t = llthreads.new(ADD, 1, 2)
  check(t:start(detached, joinable))
  if joinable or not detached then
    local r = { t:join() }
    check(r[1] == true, "join gave", tostring(r[1]), tostring(r[2]))
    if joinable and not detached then check(r[2] == 3, "result", tostring(r[2])) end
  end

  -- A child that loads the module, starts a grandchild and joins it.
  local g = llthreads.new([[
    local llthreads = require "llthreads"
    return llthreads.new("return 40 + ...", 2):start():join()
  ]])
  check(g:start(detached, joinable))
  if joinable or not detached then check(g:join() == true, "grandchild run failed") end

  -- An endless loop, interrupted while it runs.
  local mark = tmpname()
  local s = llthreads.new(SPIN, mark)
  check(s:start(detached, joinable))
  os.execute("sleep 0.05")
  s:interrupt()
  if joinable or not detached then
    local ok, err = s:join()
    if joinable and not detached then
      check(ok == false and tostring(err):find(INTERRUPTED, 1, true), "join gave", tostring(ok), tostring(err))
    end
  end
  -- Its logger ran: the chunk has ended.
  wait_file(mark)

  -- An interrupt asked for before start (where join can wait for the end: it may
  -- come before the chunk installs its logger, so the error goes to stderr).
  if joinable or not detached then
    local e = llthreads.new("while true do end")
    e:interrupt()
    check(e:start(detached, joinable))
    e:join()
  end
end

-- Attached threads still running when their objects are collected: collection
-- waits for them.
for _ = 1, 4 do
  llthreads.new("local n = 0 for i = 1, 1e5 do n = n + i end return n"):start()
end

-- spawn with a closure and options, and a pool of warm states, made, used and
-- closed from this (the host's main) thread.
do
  local k = 6
  local ok, v = llthreads.spawn({ name = "vg-spawn" }, function(x) return x * k end, 7):join()
  assert(ok and v == 42, "spawn gave " .. tostring(v))
  local pool = llthreads.pool{ size = 2, init = function() BASE = 40 end, max_tasks = 3 }
  local tasks = {}
  for i = 1, 8 do tasks[i] = pool:submit(function(i) return BASE + i end, i) end
  for i = 1, 8 do
    local done, got = tasks[i]:join()
    assert(done and got == 40 + i, "task gave " .. tostring(got))
  end
  assert(pool:close())
end

-- The detached non-joinable children have written their marks; give their OS
-- threads a moment to go back to the pool before the state closes.
os.execute("sleep 0.3")
collectgarbage()
collectgarbage()
io.stdout:write("valgrind-exit: ok\n")
