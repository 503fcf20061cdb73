-- Channel throughput and latency, one producer thread and one consumer thread.
--   numbers_ms    BENCH_CHANNEL_N (100,000) messages of one number through an
--                 unbounded channel: ms from "go" until the consumer has them all
--   strings_ms    BENCH_CHANNEL_S (10,000) messages of a 1 KiB string, the same way
--   pingpong_us   one number sent back and forth through two channels: µs per round
--                 trip (median of BENCH_CHANNEL_PP = 10,000 round trips)
--   queued_bytes  RSS growth per message with BENCH_CHANNEL_Q (1,000,000) one-number
--                 messages queued in an unbounded channel; drained_kb: what is left
--                 of that growth once they are received
-- Both threads wait on a start channel, so the figure covers the transfer only (not
-- thread creation). Time comes from luasystem's monotonic clock when it is installed
-- (busted depends on it), else from common.lua's wall clock.
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads

local N = B.getenv_number("BENCH_CHANNEL_N", 100000)
local S = B.getenv_number("BENCH_CHANNEL_S", 10000)
local PP = B.getenv_number("BENCH_CHANNEL_PP", 10000)
local Q = B.getenv_number("BENCH_CHANNEL_Q", 1000000)

local has_sys, sys = pcall(require, "system")
local function time_ms(fn)
  if has_sys and sys.monotime then
    local t0 = sys.monotime()
    fn()
    return (sys.monotime() - t0) * 1000
  end
  return B.time_ms(fn)
end

local PRODUCER = [[
local llthreads = require "llthreads"
local go, ch, n, payload = ...
go:receive()
if payload then
  for _ = 1, n do ch:send(payload) end
else
  for i = 1, n do ch:send(i) end
end
]]

local CONSUMER = [[
local llthreads = require "llthreads"
local go, ch, n, done = ...
go:receive()
local last
for _ = 1, n do last = ch:receive() end
done:send(last)
]]

-- One transfer of `n` messages (`payload`, or the numbers 1..n).
local function transfer(n, payload)
  local go, ch, done = llthreads.channel(), llthreads.channel(), llthreads.channel()
  local p = llthreads.new(PRODUCER, go, ch, n, payload):start()
  local c = llthreads.new(CONSUMER, go, ch, n, done):start()
  -- let both threads reach their wait on `go`
  llthreads.sleep(20)
  local ms = time_ms(function()
    go:send(true)
    go:send(true)
    assert(done:receive() ~= nil)
  end)
  assert(p:join())
  assert(c:join())
  return ms
end

local PONG = [[
local llthreads = require "llthreads"
local ping, pong = ...
while true do
  local v = ping:receive()
  if v == nil then return end
  pong:send(v)
end
]]

-- Median round trip in µs between this thread and a child.
local function pingpong(rounds)
  local ping, pong = llthreads.channel(), llthreads.channel()
  local t = llthreads.new(PONG, ping, pong):start()
  for i = 1, 100 do ping:send(i) pong:receive() end -- warm-up
  local xs = {}
  local clock = has_sys and sys.monotime
  if clock then
    for i = 1, rounds do
      local t0 = clock()
      ping:send(i)
      pong:receive()
      xs[i] = (clock() - t0) * 1e6
    end
  else
    local ms = B.time_ms(function()
      for i = 1, rounds do ping:send(i) pong:receive() end
    end)
    xs[1] = ms * 1000 / rounds
  end
  ping:close()
  assert(t:join())
  return B.stats(xs).median
end

B.header("channel.lua")
local runs = B.runs
local xs = {}
for r = 1, runs do xs[r] = transfer(N) end
B.report("numbers_ms", xs, ("messages=%d"):format(N))
local payload = ("x"):rep(1024)
xs = {}
for r = 1, runs do xs[r] = transfer(S, payload) end
B.report("strings_ms", xs, ("messages=%d bytes=1024"):format(S))
xs = {}
for r = 1, runs do xs[r] = pingpong(PP) end
B.report("pingpong_us", xs, ("round_trips=%d"):format(PP))

collectgarbage()
collectgarbage()
local before = B.proc_status_kb("VmRSS")
local ch = llthreads.channel()
for i = 1, Q do ch:send(i) end
local queued = B.proc_status_kb("VmRSS") - before
for _ = 1, Q do ch:receive() end
local drained = B.proc_status_kb("VmRSS") - before
B.report("queued_bytes", { queued * 1024 / Q }, ("messages=%d drained_kb=%d"):format(Q, drained))
