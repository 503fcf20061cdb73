-- The channel workloads of bench/chanlib.lua on Lua Lanes (tested with 4.0.0): a queue
-- is one slot of its own linda, bounded with linda:limit; threads are lanes.
--   LANES_CPATH=DIR lua5.4 bench/peers/lanes_channel.lua
-- DIR as tools/build-peers.sh leaves it (DIR/<flavour>/lanes_core.so + lanes.lua), or
-- unset to use a Lanes that Lua finds by itself. Not part of the test suite.
local here = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = here .. "/../?.lua;" .. package.path
local C = require "chanlib"
local loaded_from = C.use_peer_build("LANES_CPATH", "lanes_core.so")
local lanes = require("lanes").configure()

local SLOT = "q"

-- Lane bodies: no upvalues, so Lanes copies nothing but the code.
local function producer(ctl, data, kind, bytes)
  local payload = kind == "string" and string.rep("x", bytes) or nil
  while true do
    local _, n = ctl:receive("q")
    if n == 0 then return end
    if payload then
      for _ = 1, n do data:send("q", payload) end
    else
      for i = 1, n do data:send("q", i) end
    end
  end
end

local function consumer(ctl, done, data)
  while true do
    local _, n = ctl:receive("q")
    if n == 0 then return end
    local v
    for _ = 1, n do
      local _k
      _k, v = data:receive("q")
    end
    done:send("q", v)
  end
end

local function pinger(ctl, done, a, b)
  while true do
    local _, n = ctl:receive("q")
    if n == 0 then return end
    for i = 1, n do
      a:send("q", i)
      b:receive("q")
    end
    done:send("q", true)
  end
end

local function ponger(a, b)
  while true do
    local _, v = a:receive("q")
    if v == false then return end
    b:send("q", v)
  end
end

local gens = {
  producer = lanes.gen("*", producer),
  consumer = lanes.gen("*", consumer),
  pinger = lanes.gen("*", pinger),
  ponger = lanes.gen("*", ponger),
}

C.main({
  name = "lanes",
  describe = function()
    return string.format("module=lanes version=%s from=%s", tostring(lanes.ABOUT and lanes.ABOUT.version),
      tostring(loaded_from or "package.cpath"))
  end,
  notes = { "queue = a slot of its own linda (all lindas share Lanes' one keeper state, the default); bounded by linda:limit" },
  channel = function(capacity)
    local l = lanes.linda()
    if capacity then assert(l:limit(SLOT, capacity) ~= nil, "linda:limit failed") end
    return l
  end,
  send = function(q, v)
    local ok, err = q:send(SLOT, v)
    if ok ~= true then error("linda:send failed: " .. tostring(err)) end
  end,
  receive = function(q)
    local _, v = q:receive(SLOT)
    return v
  end,
  spawn = function(role, ...)
    return gens[role](...)
  end,
  join = function(h)
    local ok, err = h:join()
    if ok == nil then error("lane failed: " .. tostring(err), 0) end
  end,
})
