-- Defect: a memory error raised by lua_resume itself, between interrupt::switch_to
-- and interrupt::switch_back in coroutine.rs `resume`, longjmps past switch_back.
-- The interrupt bookkeeping (Hooks::current) is left pointing at a coroutine that
-- is then collected; the next interrupt's signal handler calls lua_gethook /
-- lua_sethook on the freed lua_State (use after free), and the interrupt is lost.
--
-- How: lua_resume refuses to nest deeper than LUAI_MAXCCALLS with
-- resume_error("C stack overflow"), which creates that string. coroutine.rs keeps
-- it interned in a registry table so that creating it never allocates, but the
-- child can drop that table (debug.getregistry(); it is the only table value whose
-- [1] is "C stack overflow"). Under set_memory_limit, with the heap filled to the
-- byte, creating the message fails; the coroutine being resumed has no error
-- handler, so Lua rethrows in the main thread, unwinding every l_resume frame.
--
-- Flavour: 5.4 (5.1-5.3 have the same path; on 5.1 the throw has no handler and
-- ends the process through the panic function; not demonstrated here).
-- Observed: the parent's interrupt(true) is lost: `join: nil timeout`; under
--   valgrind --fair-sched=yes: "Invalid read of size 8 at lua_gethook",
--   "Invalid write of size 8 at lua_sethook by llthreads::interrupt::on_signal
--   (interrupt.rs:650)", the block being a freed 208-byte lua_State.
local llthreads = require "llthreads"
if jit then -- no memory limit; and unbounded coroutine nesting crashes stock LuaJIT itself
  print("not applicable on LuaJIT") return
end
-- How deep coroutines nest before lua_resume says "C stack overflow" (probed in
-- another state: probing in the attacking one would keep the message alive).
local _, LIMIT = llthreads.new([[
  local LIMIT
  local function probe(d)
    local ok = coroutine.resume(coroutine.create(probe), d + 1)
    if not ok and not LIMIT then LIMIT = d end
  end
  probe(0)
  return LIMIT
]]):start():join()
local out = os.tmpname()
llthreads.set_memory_limit(4e6)
local t = llthreads.new([[
  local out, LIMIT = ...
  local reg = debug.getregistry()
  for k, v in pairs(reg) do   -- drop the library's interned messages
    if type(k) == "userdata" and type(v) == "table" and type(v[1]) == "string"
       and v[1]:sub(1, 7) == "C stack" then reg[k] = nil end
  end
  collectgarbage(); collectgarbage()
  local hog = {}
  for i = 1, 100000 do hog[i] = false end
  local n, sizes = 0, {}
  do local z = 1048576 while z >= 48 do sizes[#sizes + 1] = z; z = math.floor(z / 2) end end
  local function fillrep(size) while true do n = n + 1; hog[n] = string.rep("x", size) end end
  local function filltab() while true do n = n + 1; hog[n] = {} end end
  local function fillstr() while true do n = n + 1; hog[n] = tostring(n) end end
  local K = 3
  local function chain(d)
    if d < LIMIT - K then
      local ok, e = coroutine.resume(coroutine.create(chain), d + 1)
      if not ok then error(e, 0) end
      return
    end
    -- the last K levels are made and run up to a yield first (so that resuming
    -- them allocates nothing), then the heap is filled, then they nest.
    local last = coroutine.create(function() end)
    local cos = {}
    for i = K, 1, -1 do
      local nxt = cos[i + 1]
      cos[i] = coroutine.create(function()
        coroutine.yield()
        coroutine.resume(nxt or last)   -- the deepest: resume_error must allocate
      end)
      coroutine.resume(cos[i])
    end
    for _, size in ipairs(sizes) do pcall(fillrep, size) end
    pcall(filltab)
    pcall(fillstr)
    coroutine.resume(cos[1])
  end
  local ok, e = pcall(chain, 0)  -- the rethrow in the main thread lands here
  hog = nil
  collectgarbage(); collectgarbage()  -- frees the coroutine the library still names
  local f = io.open(out, "w"); f:write("pcall(chain): ", tostring(ok), " ", tostring(e)); f:close()
  local x = 0
  while true do x = x + 1 end
]], out, LIMIT)
t:start()
local t0 = os.clock() while os.clock() - t0 < 1.5 do end
local f = io.open(out); print(f and f:read("*a")); if f then f:close() end
os.remove(out)
t:interrupt(true)
print("join after interrupt(true):", t:join(3000))
io.stdout:flush()
os.exit(0)
