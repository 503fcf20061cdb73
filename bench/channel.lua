-- The channel workloads of bench/chanlib.lua on this module's channels (issue 10):
-- llthreads.channel([capacity]) (nil: unbounded), ch:send(v), ch:receive(), channels
-- handed to llthreads.new as arguments. Run by bench/channels.sh next to the peers
-- (bench/peers/); alone:
--   LUA_CPATH="build/5.4/?.so;;" lua5.4 bench/channel.lua
-- BENCH_MODULE picks the module name (llthreads by default; llthreads2 is the same).
local here = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = here .. "/?.lua;" .. package.path
local C = require "chanlib"
local B = C.B
local llthreads = B.llthreads

local function where()
  local search = package.searchpath
  return search and search(B.module_name, package.cpath) or package.cpath
end

if type(llthreads.channel) ~= "function" then
  io.stderr:write(string.format(
    "bench/channel.lua: module %q (%s) has no llthreads.channel: this build has no channels " ..
    "(issue 10), nothing to measure\n", B.module_name, tostring(where())))
  os.exit(2)
end

-- Thread bodies, run by llthreads.new with the channels as arguments.
local CODE = {
  producer = [[
local ctl, data, kind, bytes = ...
local payload = kind == "string" and string.rep("x", bytes) or nil
while true do
  local n = assert(ctl:receive())
  if n == 0 then return end
  if payload then
    for _ = 1, n do data:send(payload) end
  else
    for i = 1, n do data:send(i) end
  end
end
]],
  consumer = [[
local ctl, done, data = ...
while true do
  local n = assert(ctl:receive())
  if n == 0 then return end
  local v
  for _ = 1, n do v = data:receive() end
  done:send(v)
end
]],
  pinger = [[
local ctl, done, a, b = ...
while true do
  local n = assert(ctl:receive())
  if n == 0 then return end
  for i = 1, n do
    a:send(i)
    b:receive()
  end
  done:send(true)
end
]],
  ponger = [[
local a, b = ...
while true do
  local v = a:receive()
  if v == false then return end
  b:send(v)
end
]],
}

C.main({
  name = "ours",
  describe = function()
    return string.format("module=%s version=%s from=%s", B.module_name, tostring(llthreads._VERSION),
      tostring(where()))
  end,
  channel = function(capacity)
    return llthreads.channel(capacity)
  end,
  send = function(q, v)
    local ok, err = q:send(v)
    if ok ~= true then error("send failed: " .. tostring(err)) end
  end,
  receive = function(q)
    local v, err = q:receive()
    if v == nil then error("receive failed: " .. tostring(err)) end
    return v
  end,
  spawn = function(role, ...)
    local t, err = llthreads.new(CODE[role], ...):start()
    if not t then error("start failed: " .. tostring(err)) end
    return t
  end,
  join = function(t)
    local ok, err = t:join()
    if not ok then error("thread failed: " .. tostring(err), 0) end
  end,
})
