-- Fixed work for instruction-count profiles (bench/profile.sh runs it under
-- callgrind): `prof.lua CASE COUNT` does COUNT operations of CASE and nothing else
-- (no clock), so (instructions(COUNT) - instructions(0)) / COUNT is the cost of one.
--   spawn      new("return 1"):start():join()
--   new_close  new("return 1"), never started, collected
--   array100k / strkeys10k / nested11k / string16m   copy round trip of that value
local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
package.path = dir .. "/?.lua;" .. package.path
local llthreads = require(os.getenv("BENCH_MODULE") or "llthreads")

local case, count = arg[1] or "spawn", tonumber(arg[2] or "100")

local function make_nested(depth, fan)
  if depth == 0 then return {} end
  local t = {}
  for i = 1, fan do t[i] = make_nested(depth - 1, fan) end
  return t
end

local payloads = {
  array100k = function() local t = {}; for i = 1, 100000 do t[i] = i end; return t end,
  strkeys10k = function() local t = {}; for i = 1, 10000 do t["k" .. i] = i end; return t end,
  nested11k = function() return make_nested(4, 10) end,
  string16m = function() return string.rep("x", 16 * 1024 * 1024) end,
}

if case == "spawn" then
  for _ = 1, count do assert(llthreads.new("return 1"):start():join()) end
elseif case == "new_close" then
  for _ = 1, count do llthreads.new("return 1") end
  collectgarbage()
elseif payloads[case] then
  local v = payloads[case]()
  collectgarbage()
  for _ = 1, count do
    local ok, r = llthreads.new("return ...", v):start():join()
    assert(ok and r)
  end
else
  error("unknown case " .. case)
end
collectgarbage()
