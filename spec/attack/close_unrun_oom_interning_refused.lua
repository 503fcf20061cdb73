-- Defect: the library's `coroutine.close` (5.4, 5.5) made sure its interned messages
-- existed before every close, also for a coroutine that never ran or that returned,
-- where the stock close runs no code and creates no message. The messages are made
-- lazily (on the first coroutine switch) and Lua code can drop them; with the
-- memory limit reached, making them again fails, and close returned
-- `false, "not enough memory"` where the stock close returns `true`.
--
-- How: the first switch (resuming the coroutine that returns) makes the interned
-- table; the chunk then drops it (it is the only table in the registry, under a
-- light userdata key, whose [1] is "C stack overflow"). Each close runs with the
-- heap filled to 16 bytes below the limit, counted, as in
-- resume_dead_oom_longjmp_stale_interrupt_state.lua: collector stopped, no garbage,
-- no error caught in between, the call site run once before with rawequal. Each
-- close has a fill of its own: a failed one (before the fix) is an error caught in
-- a protected call, which shrinks the stack and may leave room for the next.
--
-- Flavours: 5.4 and 5.5; 5.1 - 5.3 have no coroutine.close (the library adds
-- none). LuaJIT has no memory limit.
local llthreads = require "llthreads"
if jit then print("not applicable on LuaJIT") return end
local LIMIT = 2000000
llthreads.set_memory_limit(LIMIT)
local t = llthreads.new([[
  local LIMIT = ...
  if coroutine.close == nil then return "coroutine.close: absent" end
  local never_ran = coroutine.create(function() end)
  local returned = coroutine.create(function() return "done" end)
  coroutine.resume(returned)
  local reg, dropped = debug.getregistry(), 0
  for k, v in pairs(reg) do
    if type(k) == "userdata" and type(v) == "table" and v[1] == "C stack overflow" then
      reg[k] = nil; dropped = dropped + 1
    end
  end
  -- 128 KiB of pseudo-random bytes: substrings taken at different offsets are
  -- distinct strings, each made in one allocation.
  local blocks, x = {}, 12345
  for b = 1, 32 do
    local bytes = {}
    for i = 1, 4096 do x = (x * 1103515245 + 12345) % 2147483648; bytes[i] = x % 256 end
    blocks[b] = string.char(table.unpack(bytes))
  end
  -- A copy of the concatenation (which 5.5 keeps as an "external" string, whose
  -- bytes the collector's count leaves out).
  local src = table.concat(blocks):sub(2)
  blocks = nil
  local CHUNK, n = 32768, 0
  local used = function() return collectgarbage("count") * 1024 end
  -- coroutine.close(co) with the heap full: bytes left, then what close gave.
  local function close_at_full(co)
    local hog = {}
    for i = 1, 128 do hog[i] = false end   -- room made first: filling never grows it
    collectgarbage(); collectgarbage()
    collectgarbage("stop")
    -- What a string costs beyond its bytes; the probes are kept: no garbage.
    local header
    for _ = 1, 2 do
      local before = used()
      n = n + 1; hog[n] = src:sub(n, n + 99)
      header = math.min(header or math.huge, used() - before - 100)
    end
    -- The same call site twice: first rawequal, which readies the stack and
    -- CallInfo, then, with the heap full, close.
    local f, left, ok, err = rawequal
    for round = 1, 2 do
      if round == 2 then
        f = coroutine.close
        left = LIMIT - used()
        while left > CHUNK + header + 8192 do
          n = n + 1; hog[n] = src:sub(n, n + CHUNK - 1)
          left = LIMIT - used()
        end
        n = n + 1; hog[n] = src:sub(n, n + left - header - 16 - 1)
        left = LIMIT - used()
      end
      ok, err = f(co, nil)
    end
    hog = nil
    collectgarbage("restart")
    collectgarbage(); collectgarbage()
    return ("%d bytes left: %s %s"):format(left, tostring(ok), tostring(err))
  end
  local a = close_at_full(never_ran)
  local b = close_at_full(returned)
  return ("interned tables dropped: %d\nclose(never ran), %s\nclose(returned), %s")
    :format(dropped, a, b)
]], LIMIT)
print(t:start():join())
