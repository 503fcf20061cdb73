-- How soon interrupt() ends a wait: ms from thread:interrupt() until join() returns,
-- for a child blocked in each kind of wait (median of BENCH_INTERRUPT_N = 20).
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local B = require "common"
local llthreads = B.llthreads
local sys = require "system"

local N = B.getenv_number("BENCH_INTERRUPT_N", 20)

local WAITS = {
  { "receive", "hold:receive()" },
  { "send_full", "local ch = llthreads.channel(1) ch:send(1) ready:send(true) ch:send(2)" },
  { "send_rendezvous", "ready:send(true) llthreads.channel(0):send(1)" },
  { "select", "ready:send(true) llthreads.select({ hold, llthreads.channel() })" },
  { "sleep", "ready:send(true) llthreads.sleep(1e9)" },
  { "join", "local g = llthreads.new('local hold = ... hold:receive()', hold):start(true, true) ready:send(true) g:join()" },
}

B.header("interrupt_wait.lua")
for _, w in ipairs(WAITS) do
  local body = w[2]
  if w[1] == "receive" then body = "ready:send(true) " .. body end
  local code = "local llthreads = require 'llthreads' llthreads.set_logger(function() end) local ready, hold = ... " .. body
  local xs = {}
  for i = 1, N do
    local ready, hold = llthreads.channel(), llthreads.channel()
    local t = llthreads.new(code, ready, hold):start()
    ready:receive()
    llthreads.sleep(20)
    local t0 = sys.monotime()
    t:interrupt()
    local ok = t:join()
    xs[i] = (sys.monotime() - t0) * 1000
    assert(ok == false)
    hold:close()
  end
  B.report("interrupt_" .. w[1] .. "_ms", xs)
end
