-- The channel workloads of bench/chanlib.lua on effil (tested with 1.2-0): a queue is
-- an effil.channel(capacity); threads are effil.thread. effil's push never waits: on a
-- full bounded channel it returns false, so the producers retry at once (effil has no
-- blocking send; this busy retry is what the bounded workloads cost there).
--   EFFIL_CPATH=DIR luajit bench/peers/effil_channel.lua
-- DIR as tools/build-peers.sh leaves it (DIR/<flavour>/effil.so), or unset to use an
-- effil that Lua finds by itself. effil 1.2 builds for LuaJIT and 5.1-5.3, not 5.4.
-- Not part of the test suite.
local here = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = here .. "/../?.lua;" .. package.path
local C = require "chanlib"
local loaded_from = C.use_peer_build("EFFIL_CPATH", "effil.so")
local effil = require "effil"

-- Thread bodies: no upvalues, so effil copies nothing but the code.
local function producer(ctl, data, kind, bytes)
  local payload = kind == "string" and string.rep("x", bytes) or nil
  while true do
    local n = ctl:pop()
    if n == 0 then return end
    if payload then
      for _ = 1, n do
        while not data:push(payload) do end
      end
    else
      for i = 1, n do
        while not data:push(i) do end
      end
    end
  end
end

local function consumer(ctl, done, data)
  while true do
    local n = ctl:pop()
    if n == 0 then return end
    local v
    for _ = 1, n do v = data:pop() end
    done:push(v)
  end
end

local function pinger(ctl, done, a, b)
  while true do
    local n = ctl:pop()
    if n == 0 then return end
    for i = 1, n do
      a:push(i)
      b:pop()
    end
    done:push(true)
  end
end

local function ponger(a, b)
  while true do
    local v = a:pop()
    if v == false then return end
    b:push(v)
  end
end

local roles = {
  producer = effil.thread(producer),
  consumer = effil.thread(consumer),
  pinger = effil.thread(pinger),
  ponger = effil.thread(ponger),
}

C.main({
  name = "effil",
  describe = function()
    return string.format("module=effil version=%s from=%s", tostring(effil.version),
      tostring(loaded_from or "package.cpath"))
  end,
  notes = { "queue = effil.channel(capacity or 0); push on a full bounded channel returns false: producers retry at once",
    "effil 1.2-0 reports its version as " .. tostring(effil.version) },
  channel = function(capacity)
    return effil.channel(capacity or 0)
  end,
  send = function(q, v)
    while not q:push(v) do end
  end,
  receive = function(q)
    return q:pop()
  end,
  spawn = function(role, ...)
    return roles[role](...)
  end,
  join = function(h)
    local status, err = h:wait()
    if status ~= "completed" then error("effil thread " .. tostring(status) .. ": " .. tostring(err), 0) end
  end,
  collect = function()
    effil.gc.collect()
  end,
})
