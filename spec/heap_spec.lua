-- A child state's heap: the library gives every state it makes an allocator that
-- packs Lua's small objects (up to 256 bytes) into chunks the state owns and frees
-- them all when the state closes; larger blocks are malloc's. Lua code sees no
-- difference: every value stays as written however objects come and go, grow and
-- shrink. LLTHREADS_MALLOC=system in the environment gives every object its own
-- malloc block instead (for memory checkers), with the same results.

local H = require "spec.helper"
local llthreads = require "llthreads"

-- Builds, replaces and drops strings (every length from 0 to 299), tables (grown
-- and shrunk) and closures, then checks every survivor; returns a checksum.
local CHURN = [[
local seed, rounds = ...
local function rnd()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed
end
local keep = {}
for i = 1, rounds do
  local r = rnd()
  local k = r % 500 + 1
  local op = r % 4
  if op == 0 then
    keep[k] = string.rep(string.char(65 + k % 26), r % 300)
  elseif op == 1 then
    local t = {}
    for j = 1, r % 40 do t[j] = j * k end
    for j = r % 40, math.floor((r % 40) / 2) + 1, -1 do t[j] = nil end
    keep[k] = t
  elseif op == 2 then
    local n = k
    keep[k] = function() return n end
  else
    keep[k] = nil
    if i % 1000 == 0 then collectgarbage() end
  end
end
local sum = 0
for k, v in pairs(keep) do
  if type(v) == "string" then
    assert(v == string.rep(string.char(65 + k % 26), #v), "string changed")
    sum = sum + #v
  elseif type(v) == "table" then
    for j = 1, #v do assert(v[j] == j * k, "table changed") end
    sum = sum + #v * 7
  else
    assert(v() == k, "upvalue changed")
    sum = sum + 3
  end
end
return sum
]]
local function here(seed, rounds)
  local f = assert((loadstring or load)(CHURN))
  return f(seed, rounds)
end

describe("a child state's heap", function()
  it("keeps every value intact while objects of every size come and go", function()
    for _, seed in ipairs({ 1, 7, 12345 }) do
      local t = llthreads.new(CHURN, seed, 50000)
      H.assert_values({ true, here(seed, 50000), n = 2 }, H.pack(t:start():join()))
    end
  end)

  it("keeps values intact in many threads at once", function()
    local threads = {}
    for i = 1, 8 do threads[i] = llthreads.new(CHURN, i, 20000):start() end
    for i = 1, 8 do
      H.assert_values({ true, here(i, 20000), n = 2 }, H.pack(threads[i]:join()))
    end
  end)

  it("gives the same results with LLTHREADS_MALLOC=system", function()
    local script = "local llthreads = require 'llthreads'\n"
      .. "local t = llthreads.new(" .. string.format("%q", CHURN) .. ", 7, 50000)\n"
      .. "local ok, v = t:start():join()\n"
      .. "io.write(tostring(ok), ' ', tostring(v))\n"
    for _, env in ipairs({ "LLTHREADS_MALLOC=system", "" }) do
      local code, out = H.run_lua(script, env)
      assert.are.equal(0, code, out)
      assert.are.equal("true " .. tostring(here(7, 50000)), out)
    end
  end)

  it("closes states without keeping their memory: a thousand threads leave the process as it was", function()
    local function cycle(n)
      for _ = 1, n do
        assert(llthreads.new(CHURN, 3, 2000):start():join())
      end
      collectgarbage()
    end
    cycle(200)
    local before = H.rss_kb()
    cycle(1000)
    local grown = H.rss_kb() - before
    -- Each state held about 100 kB; keeping even a tenth of that per thread would
    -- show as 10 MB here.
    assert(grown < 8 * 1024, "the process grew by " .. grown .. " kB over 1,000 threads")
  end)
end)
