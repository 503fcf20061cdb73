-- Defect: calling a function made by `coroutine.wrap` whose coroutine died by an
-- error was handed to the stock wrapper, which leaves the refusal to lua_resume: on
-- 5.3, 5.4 and 5.5 that creates "cannot resume dead coroutine" inside the dead
-- coroutine, outside any protected call. With the memory limit reached the string
-- cannot be made; a dead coroutine has no error handler, so Lua rethrows the memory
-- error in the main thread, past the switch back of the coroutine that made the
-- call. The interrupt bookkeeping is left naming that coroutine, which is then
-- collected: the next interrupt is lost (`join: nil timeout`). The same defect as
-- resume_dead_oom_longjmp_stale_interrupt_state.lua, through the other door.
--
-- How: as in that script, the heap is filled to 16 bytes below the limit, counted,
-- with the collector stopped, no garbage, no error caught in between and the call
-- site run once before with rawequal (allocates nothing). The refusal must then be
-- the first thing that does not fit, and once the library has interned it, nothing
-- else may need memory either: the stock wrapper puts the caller's position before
-- it ("x:1: "). So the call site is compiled with the name "x", which keeps the
-- position and the whole message short strings (interned, as every string on 5.1),
-- and they, the pieces the wrapper builds them from and a concatenation buffer long
-- enough (5.1, 5.2) are made beforehand: finding them allocates nothing. The
-- refusal alone is never made before: an existing one would be reused.
--
-- Flavours: the lost interrupt on 5.3, 5.4, 5.5. On 5.1 (refusal made in the
-- caller) and 5.2 (inside a protected call, then the position added in the caller)
-- the memory error was an ordinary error of the calling coroutine, "not enough
-- memory" instead of the refusal. LuaJIT has no memory limit.
local llthreads = require "llthreads"
if jit then print("not applicable on LuaJIT") return end
local out = os.tmpname()
local LIMIT = 2000000
llthreads.set_memory_limit(LIMIT)
local t = llthreads.new([[
  local out, LIMIT = ...
  local gone = coroutine.wrap(function() error("dead by its error", 0) end)
  pcall(gone)
  local site = (loadstring or load)("local f, a, b = ... return (f(a, b))", "=x")
  -- What the wrapper's refusal is made of: the stock message's pieces (5.1 builds it
  -- in the caller), the position's pieces ("%s:%d: " with "x" and 1), the position.
  local pieces = { "cannot resume ", "dead", " coroutine", "", "x", ":", "1", ": ", "x:1: " }
  local expected   -- "x:1: cannot resume dead coroutine", made after the last collection
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
  local left                -- set by outer; assigning it allocates nothing
  local outer = coroutine.create(function()
    local used = function() return collectgarbage("count") * 1024 end
    collectgarbage(); collectgarbage()
    collectgarbage("stop")
    -- Made with the collector stopped, so that 5.1 keeps the concatenation buffer
    -- (its collector halves it) and 5.2 too (its collector frees it).
    expected = pieces[9] .. pieces[1] .. pieces[2] .. pieces[3]
    -- What a string costs beyond its bytes: the smaller of two measures (on 5.1 the
    -- string table may grow during one). The probes are kept: no garbage.
    local header
    for _ = 1, 2 do
      local before = used()
      n = n + 1; hog[n] = src:sub(n, n + 99)
      header = math.min(header or math.huge, used() - before - 100)
    end
    -- The same call site twice: first with rawequal, which readies the stack and
    -- CallInfo; then, with the heap full, the dead coroutine's wrapper, which raises.
    local f = rawequal
    for round = 1, 2 do
      if round == 2 then
        f = gone
        left = LIMIT - used()
        while left > CHUNK + header + 8192 do
          n = n + 1; hog[n] = src:sub(n, n + CHUNK - 1)
          left = LIMIT - used()
        end
        n = n + 1; hog[n] = src:sub(n, n + left - header - 16 - 1)
        left = LIMIT - used()
      end
      site(f, nil, nil)
    end
    return "outer returned"   -- not reached: the wrapper raises
  end)
  -- The wrapper's error ends outer (resume gives it); the memory error rethrown in
  -- the main thread (before the fix, 5.3 - 5.5) lands in this pcall.
  local ok, resumed, result = pcall(coroutine.resume, outer)
  outer, hog = nil, nil
  collectgarbage("restart")
  collectgarbage(); collectgarbage()  -- frees the coroutine the library may still name
  local f = io.open(out, "w")
  f:write("left before the refusal: ", ("%d"):format(left or -1), " bytes\n",
    "pcall(coroutine.resume, outer): ", tostring(ok), " ", tostring(resumed), " ",
    tostring(result), "\n",
    "the refusal is the one expected: ", tostring(result == expected), "\n", "end\n")
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
