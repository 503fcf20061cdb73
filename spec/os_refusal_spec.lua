-- Regression: when the OS refuses to create a thread, start() must give
-- nil, <system error text> and leave the object as it was, so that start()
-- can be tried again later. (An early version handed the child state over
-- before the thread existed, so the retry answered "Thread already started.")
local H = require "spec.helper"

-- Run in a child process with a small address-space limit: every thread needs
-- its 8 MiB stack mapped, so after a few dozen live threads the OS says no.
local SCRIPT = [=[
local llthreads = require "llthreads"
local fifo = os.tmpname()
os.remove(fifo)
assert(os.execute("mkfifo " .. fifo))
-- Opened read-write, the FIFO has a writer at once: the children's open() does
-- not block, their read blocks until this handle closes.
local gate = assert(io.open(fifo, "r+"))
-- Each child says it has the FIFO open before it blocks reading it; the gate
-- may only close once all have, or a late one would wait for a writer forever.
local marks = os.tmpname()
local CHILD = [[
  local fifo, marks = ...
  local f = assert(io.open(fifo))
  local m = assert(io.open(marks, "a")) m:write("x") m:close()
  f:read("*a") f:close()
  return "released"
]]

local running, refused, err = {}, nil, nil
for _ = 1, 5000 do
  local t = llthreads.new(CHILD, fifo, marks)
  local started, msg = t:start()
  if not started then refused, err = t, msg break end
  running[#running + 1] = t
end
print("STARTED " .. #running)
print("REFUSED " .. tostring(err))
print("FLAGS", refused and refused:started(), refused and refused:joinable())
local function opened()
  local m = io.open(marks) local n = #m:read("*a") m:close() return n
end
for _ = 1, 1000 do
  if opened() == #running then break end
  os.execute("sleep 0.01")
end
print("OPENED " .. opened())
gate:close()
for _, t in ipairs(running) do assert(select(2, t:join()) == "released") end
if refused then
  -- The same object, started again now that threads are free; it blocks on a
  -- new round of the gate like the others did.
  gate = assert(io.open(fifo, "r+"))
  local same = assert(refused:start()) == refused
  while opened() < #running + 1 do os.execute("sleep 0.01") end
  gate:close()
  print("RETRY", same, refused:join())
end
os.remove(marks)
os.remove(fifo)
]=]

describe("start() when the OS refuses a thread", function()
  it("returns nil and the system's message, and can be retried later", function()
    local path = H.tmpname() .. ".lua"
    H.write_file(path, SCRIPT)
    local code, out = H.run("ulimit -v 400000; " .. H.lua_env() .. " " .. H.shq(H.lua) .. " " .. H.shq(path))
    os.remove(path)
    assert(not H.crashed(code, out), out)
    assert.are.equal(0, code, out)
    local started = tonumber(out:match("STARTED (%d+)"))
    assert(started and started > 0, out)
    local err = out:match("REFUSED ([^\n]*)")
    assert(err and err ~= "nil" and err ~= "", "no start was refused:\n" .. out)
    assert.is_nil(err:find("os error", 1, true), "Rust's suffix leaked into: " .. err)
    assert.truthy(out:find("OPENED " .. started, 1, true), out)
    assert.truthy(out:find("FLAGS\tfalse\tfalse", 1, true), out)
    assert.truthy(out:find("RETRY\ttrue\ttrue\treleased", 1, true), out)
  end)
end)
