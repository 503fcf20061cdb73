-- Defect: `coroutine.resume` on a coroutine that died by an error was handed to the
-- stock function, which leaves the refusal to lua_resume: on 5.3, 5.4 and 5.5 that
-- creates "cannot resume dead coroutine" inside the dead coroutine, outside any
-- protected call. With the memory limit reached the string cannot be made; a dead
-- coroutine has no error handler, so Lua rethrows the memory error in the main
-- thread, past the switch back of the coroutine that made the call. The interrupt
-- bookkeeping is left naming that coroutine, which is then collected: the next
-- interrupt is lost (`join: nil timeout`), and under valgrind --fair-sched=yes its
-- signal handler reads the freed lua_State (lua_gethook in on_signal).
--
-- How: the heap is filled to 16 bytes below the limit, counted (the collector's
-- count is what the allocator counts), so that the refusal's message is the first
-- thing that does not fit. Nothing else in the call may need memory: the collector
-- is stopped (a cycle shrinks stacks and CallInfo lists, which the call would then
-- grow again), no error is caught in between (a caught error shrinks them too), no
-- garbage is left (the emergency collection of the failing allocation would free
-- it), and the call site runs once before the fill with a C function that allocates
-- nothing, so its stack room and CallInfo exist already. The message itself is
-- never made before: an existing one would be reused.
--
-- Flavours: 5.3, 5.4, 5.5. 5.2 refuses inside a protected call and 5.1's stock
-- resume refuses in the caller: there the memory error is an ordinary error (5.2:
-- resume gives false + "not enough memory"; 5.1: the calling coroutine fails with
-- it). LuaJIT has no memory limit.
local llthreads = require "llthreads"
if jit then print("not applicable on LuaJIT") return end
local out = os.tmpname()
local LIMIT = 2000000
llthreads.set_memory_limit(LIMIT)
local t = llthreads.new([[
  local out, LIMIT = ...
  local dead = coroutine.create(function() error("dead by its error", 0) end)
  coroutine.resume(dead)
  -- 128 KiB of pseudo-random bytes: substrings taken at different offsets are
  -- distinct strings (5.1 interns every string), each made in one allocation.
  local blocks, x = {}, 12345
  for b = 1, 32 do
    local bytes = {}
    for i = 1, 4096 do x = (x * 1103515245 + 12345) % 2147483648; bytes[i] = x % 256 end
    blocks[b] = string.char((table.unpack or unpack)(bytes))
  end
  -- A copy of the concatenation (which 5.5 keeps as an "external" string, whose
  -- bytes the collector's count leaves out).
  local src = table.concat(blocks):sub(2)
  blocks = nil
  local CHUNK = 32768
  local hog, n = {}, 0
  for i = 1, 128 do hog[i] = false end     -- room made first: filling never grows it
  local left, refused, text   -- set by outer; assigning them allocates nothing
  local outer = coroutine.create(function()
    local used = function() return collectgarbage("count") * 1024 end
    collectgarbage(); collectgarbage()
    collectgarbage("stop")
    -- What a string costs beyond its bytes: the smaller of two measures (on 5.1 the
    -- string table may grow during one). The probes are kept: no garbage.
    local header
    for _ = 1, 2 do
      local before = used()
      n = n + 1; hog[n] = src:sub(n, n + 99)
      header = math.min(header or math.huge, used() - before - 100)
    end
    -- The same call site twice: first with rawequal (allocates nothing), which
    -- readies the stack and CallInfo; then, with the heap full, the refusal.
    local f, a, b = rawequal, dead, dead
    for round = 1, 2 do
      if round == 2 then
        f, a, b = coroutine.resume, dead, nil
        refused, text = nil, nil
        left = LIMIT - used()
        while left > CHUNK + header + 8192 do
          n = n + 1; hog[n] = src:sub(n, n + CHUNK - 1)
          left = LIMIT - used()
        end
        n = n + 1; hog[n] = src:sub(n, n + left - header - 16 - 1)
        left = LIMIT - used()
      end
      refused, text = f(a, b)
    end
    hog = nil                 -- room again for what follows
    collectgarbage("restart")
    collectgarbage()
    return "outer returned"
  end)
  -- The memory error rethrown in the main thread (before the fix) lands here.
  local ok, resumed, result = pcall(coroutine.resume, outer)
  outer, hog = nil, nil
  collectgarbage("restart")
  collectgarbage(); collectgarbage()  -- frees the coroutine the library may still name
  local f = io.open(out, "w")
  f:write("left before the refusal: ", ("%d"):format(left or -1), " bytes\n",
    "pcall(coroutine.resume, outer): ", tostring(ok), " ", tostring(resumed), " ",
    tostring(result), "\n",
    "coroutine.resume(dead): ", tostring(refused), " ", tostring(text), "\n", "end\n")
  f:close()
  local y = 0
  while true do y = y + 1 end
]], out, LIMIT)
t:start()
-- Waits (up to 60 s) for the child to report, then interrupts its endless loop.
local deadline, text = os.time() + 60
repeat
  local f = io.open(out)
  if f then text = f:read("*a"); f:close() end
until (text and text:find("end\n", 1, true)) or os.time() > deadline
io.write(text or "no report\n")
os.remove(out)
t:interrupt(true)
print("join after interrupt(true):", t:join(3000))
io.stdout:flush()
os.exit(0) -- the attached thread may never end; do not wait for it at exit
