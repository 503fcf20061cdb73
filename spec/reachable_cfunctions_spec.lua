-- Every C function of this library that Lua code can reach, called with
-- arguments it does not expect: the process survives, on every flavour.
--
-- Issue 9, point 1. A C function of ours that Lua can reach must never trust
-- its arguments: Lua code gets hold of more than the documented API. Every
-- chunk runs under the library's own protected-call trampoline with its
-- message handler below it, and every child has `debug`, so the chunk reaches
-- both through `debug.getinfo` and `debug.getlocal`; on 5.1 and LuaJIT the
-- trampoline is also cached in the registry, which `debug.getregistry()`
-- hands to any Lua code, the parent's included. The C original has the same
-- kind of hole; a drop-in must not.
--
-- A walker collects every C function reachable from a state: the module
-- tables, the registry (followed through tables, metatables, upvalues and
-- environments), the metatables of thread objects and, inside a child, the
-- frames above the chunk on the child's call stack and the values in their
-- stack slots. The standard library's own functions are left out: they are
-- not this library's to fix, and some of them block or exit. Each function
-- left is then called under pcall with no arguments, with junk, with a thread
-- object of ours (fresh, running, joined, collected) as self, and with
-- another library's userdata as self. An error is fine; a crash is not.
--
-- A crash would take busted down with it, so every walk runs in a
-- sub-process with a time limit. Before each call the sub-process appends a
-- line naming it to a log file, so a crash names the call that caused it.

local H = require "spec.helper"

-- Seconds a walk may take before it counts as a hang.
local LIMIT = 60

-- Loaded in the parent sub-process and, as a chunk argument, in children:
-- returns the walker table. Must run unchanged on 5.1 .. 5.4 and LuaJIT.
local WALKER = [==[
local W = {}

local unpack = table.unpack or unpack
local getinfo, getupvalue, getlocal = debug.getinfo, debug.getupvalue, debug.getlocal
local getmetatable, getfenv, getuservalue = debug.getmetatable, debug.getfenv, debug.getuservalue
local registry = debug.getregistry()

-- Deep enough for registry -> _LOADED -> module -> metatable -> __index -> fn -> upvalue.
W.MAX_DEPTH = 12

local function is_c(f)
  local info = getinfo(f, "S")
  return info ~= nil and info.what == "C"
end
W.is_c = is_c

-- Calls on_function(f, label) once for each function reachable from `roots`
-- ({ { label, value }, ... }), breadth first so that a label is the shortest
-- path to the function. `skip(t, k, v)` names table entries not to follow.
function W.walk(roots, on_function, skip)
  local seen, queue, head, tail = {}, {}, 1, 0
  local lud_names, luds = {}, 0
  local function push(v, label, depth)
    local tv = type(v)
    if (tv == "table" or tv == "function" or tv == "userdata" or tv == "thread")
      and not seen[v] and depth <= W.MAX_DEPTH then
      seen[v] = true
      tail = tail + 1
      queue[tail] = { v, label, depth }
    end
  end
  -- without calling any __tostring
  local function key_label(k)
    local tk = type(k)
    if tk == "string" then return "." .. k end
    if tk == "number" or tk == "boolean" then return "[" .. tostring(k) .. "]" end
    if tk == "userdata" and getmetatable(k) == nil then
      if not lud_names[k] then luds = luds + 1 lud_names[k] = luds end
      return "[light userdata " .. lud_names[k] .. "]"
    end
    return "[" .. tk .. "]"
  end
  for _, root in ipairs(roots) do push(root[2], root[1], 0) end
  while head <= tail do
    local v, label, depth = unpack(queue[head])
    queue[head] = nil
    head = head + 1
    local tv, d = type(v), depth + 1
    if tv == "function" then
      on_function(v, label)
      local i = 1
      while true do
        local name, up = getupvalue(v, i)
        if name == nil then break end
        push(up, label .. "/upvalue " .. i, d)
        i = i + 1
      end
    elseif tv == "table" then
      for k, val in next, v do
        if not (skip and skip(v, k, val)) then
          push(val, label .. key_label(k), d)
          push(k, label .. key_label(k) .. "/key", d)
        end
      end
    end
    local mt = getmetatable(v)
    if mt ~= nil then push(mt, label .. "/metatable", d) end
    if getfenv then
      local env = getfenv(v)
      if env ~= nil then push(env, label .. "/environment", d) end
    end
    if tv == "userdata" and getuservalue then
      for n = 1, 8 do
        -- 5.4 numbers the user values and says when n is past the last;
        -- 5.2 and 5.3 have one and ignore n.
        local uv, more = getuservalue(v, n)
        if uv ~= nil then push(uv, label .. "/user value " .. n, d) end
        if more ~= true then break end
      end
    end
  end
end

-- Lua's own libraries key the registry with strings and integers (5.3 adds
-- one table under a light userdata); a function stored straight at a light
-- userdata key is a C module's cache, on 5.1 and LuaJIT our trampoline, which
-- a child's registry holds before its chunk starts.
local function module_cache(t, k, v)
  return rawequal(t, registry) and type(k) == "userdata" and type(v) == "function"
end

-- The set of functions Lua's standard library makes reachable. Call it
-- before requiring the module.
function W.standard()
  local set = {}
  -- Lua's own functions made on demand: the metatable of lauxlib's buffer boxes
  -- (5.3: "LUABOX", 5.4+: "_UBOX*"), whose __gc and __close take any call as a
  -- box, comes with the first string buffer that outgrows the C stack. Make it now
  -- (on 5.5 it appeared during the walk) so the registry walk below finds it.
  local _ = table.concat({ string.rep("x", 131072), "y" })
  local roots = {
    { "_G", _G }, { "registry", registry }, { "string metatable", getmetatable("") },
    { "io.stdout", io.stdout }, { "io.stderr", io.stderr },
  }
  W.walk(roots, function(f) set[f] = true end, module_cache)
  -- iterators and closures the standard library makes on demand
  for _, f in ipairs({ (ipairs({})), (pairs({})), (string.gmatch("", "")), coroutine.wrap(function() end) }) do
    set[f] = true
  end
  return set
end

function W.found()
  return { list = {}, label = {} }
end

-- Adds a C function to `found` (first label wins).
function W.add(found, f, label)
  if type(f) ~= "function" or not is_c(f) or found.label[f] then return false end
  found.label[f] = label
  found.list[#found.list + 1] = f
  return true
end

-- Adds every C function reachable from `roots` and not in `standard`.
-- Returns the light userdata met as registry keys (junk for the calls).
function W.collect(found, roots, standard)
  W.walk(roots, function(f, label)
    if not standard[f] then W.add(found, f, label) end
  end)
  local lud = {}
  for k in next, registry do
    if type(k) == "userdata" and getmetatable(k) == nil then lud[#lud + 1] = k end
  end
  return lud
end

-- The C functions on the stack above the chunk that calls this: the frames'
-- functions and the functions in their stack slots (debug.getlocal reads a C
-- frame's slots as temporaries: the message handler sits there). Labels give
-- the level as the chunk's own code numbers it.
function W.above_chunk(found, standard)
  local chunk, n = nil, 0
  for level = 2, 200 do
    local info = getinfo(level, "fS")
    if info == nil then break end
    if chunk == nil then
      if info.what == "main" then chunk = level end
    else
      local rel = level - chunk + 1
      if info.func ~= nil and info.what == "C"
        and W.add(found, info.func, ("child: debug.getinfo(%d, 'f').func, as the chunk counts levels"):format(rel)) then
        n = n + 1
      end
      for i = 1, 250 do
        local name, v = getlocal(level, i)
        if name == nil then break end
        if type(v) == "function" and not standard[v]
          and W.add(found, v, ("child: debug.getlocal(%d, %d), as the chunk counts levels"):format(rel, i)) then
          n = n + 1
        end
      end
    end
  end
  return n
end

-- What the calls get. `modules`: { { name, module table }, ... } loaded in this state;
-- `lud`: light userdata to pass as junk; `log_path`: where each call is named
-- before it is made.
function W.context(modules, lud, log_path)
  local ctx = { modules = modules, calls = 0 }
  ctx.log = assert(io.open(log_path, "a"))
  ctx.log:setvbuf("no")
  local junk = {
    { "nil", nil }, { "false", false }, { "true", true }, { "0", 0 }, { "1", 1 }, { "-1", -1 },
    { "0.5", 0.5 }, { "1e308", 1e308 }, { "math.huge", math.huge }, { "-math.huge", -math.huge },
    { "NaN", 0 / 0 }, { "2^63", 2 ^ 63 }, { "-2^63", -(2 ^ 63) }, { "2^53+1", 2 ^ 53 + 1 },
    { "'x'", "x" }, { "''", "" }, { "'return'", "return" }, { "a 64 KiB string", ("x"):rep(65536) },
    { "a table", {} }, { "a Lua function", function() end }, { "a C function (print)", print },
    { "a coroutine", coroutine.create(function() end) }, { "io.stdout", io.stdout },
  }
  if math.maxinteger then
    junk[#junk + 1] = { "math.maxinteger", math.maxinteger }
    junk[#junk + 1] = { "math.mininteger", math.mininteger }
  end
  for i = 1, math.min(#lud, 4) do junk[#junk + 1] = { "a light userdata (registry key " .. i .. ")", lud[i] } end
  ctx.junk = junk
  local ll = modules[1][2]
  local mt = getmetatable(ll.new("return"))
  ctx.selves = {}
  for _, m in ipairs(modules) do
    ctx.selves[#ctx.selves + 1] = { "a fresh thread object of " .. m[1], function() return m[2].new("return") end }
  end
  local more = {
    { "a started thread object", function() return ll.new("return"):start() end },
    { "a joined thread object", function() local t = ll.new("return") t:start() t:join() return t end },
    { "a detached thread object", function() return ll.new("return"):start(true) end },
    { "a collected thread object", function() local t = ll.new("return") mt.__gc(t) return t end },
    { "a table with the thread metatable", function() return setmetatable({}, mt) end },
    { "another library's userdata (io.stdout)", function() return io.stdout end },
  }
  for _, s in ipairs(more) do ctx.selves[#ctx.selves + 1] = s end
  return ctx
end

-- A probe may set a memory limit that would starve the next one's `new`.
local function reset(ctx)
  for _, m in ipairs(ctx.modules) do pcall(m[2].set_memory_limit, nil) end
end

local function call(ctx, f, label, what, ...)
  ctx.log:write(label, " (", what, ")\n")
  pcall(f, ...)
  reset(ctx)
  ctx.calls = ctx.calls + 1
end

-- Calls `f` with no arguments, with junk, and with each kind of wrong self.
function W.probe(ctx, f, label)
  local junk = ctx.junk
  call(ctx, f, label, "no arguments")
  for i, j in ipairs(junk) do
    call(ctx, f, label, j[1], j[2])
    local j2, j3 = junk[i % #junk + 1], junk[(i + 1) % #junk + 1]
    call(ctx, f, label, j[1] .. ", " .. j2[1] .. ", " .. j3[1], j[2], j2[2], j3[2])
  end
  for _, s in ipairs(ctx.selves) do
    local ok, self = pcall(s[2])
    if ok then
      call(ctx, f, label, "self: " .. s[1], self)
      for _, j in ipairs(junk) do
        ok, self = pcall(s[2])
        if ok then call(ctx, f, label, "self: " .. s[1] .. ", " .. j[1], self, j[2], j[2]) end
      end
    end
  end
  -- collects what the calls made, so the __gc of odd objects runs here too
  collectgarbage()
  collectgarbage()
end

-- Probes every function in `found`; returns how many. `sleep` is left out:
-- it blocks for as long as it is asked (the junk includes 1e308 ms), by
-- design; wait_interrupt_spec.lua gives it its bad input.
function W.probe_all(ctx, found)
  local blocking = {}
  for _, m in ipairs(ctx.modules) do
    if m[2].sleep then blocking[m[2].sleep] = true end
  end
  local n = 0
  for _, f in ipairs(found.list) do
    if not blocking[f] then
      W.probe(ctx, f, found.label[f])
      n = n + 1
    end
  end
  return n
end

return W
]==]

-- In a child: the walk from inside. Arguments: WALKER, the log path.
local CHILD_WALK = [==[
local WALKER, LOG = ...
local W = assert((loadstring or load)(WALKER, "=walker"))()
local standard = W.standard()
local found = W.found()
local above = W.above_chunk(found, standard)
local llthreads = require "llthreads"
local llthreads2 = require "llthreads2"
local ex = require "llthreads.ex"
-- one protected call per module copy in this state (caches its trampoline on 5.1/LuaJIT)
assert(llthreads.new("return 1"):start():join())
assert(llthreads2.new("return 1"):start():join())
local t = llthreads.new("return")
local lud = W.collect(found, {
  { "child: llthreads", llthreads }, { "child: llthreads2", llthreads2 }, { "child: llthreads.ex", ex },
  { "child: thread metatable", debug.getmetatable(t) },
  { "child: llthreads2 thread metatable", debug.getmetatable(llthreads2.new("return")) },
  { "child: registry", debug.getregistry() },
}, standard)
local ctx = W.context({ { "llthreads", llthreads }, { "llthreads2", llthreads2 } }, lud, LOG)
return W.probe_all(ctx, found), above, ctx.calls
]==]

-- In a child: the issue's reproducer, `debug.getinfo(2, "f").func()`, for
-- each level above the chunk. Arguments: the log path, the module name.
local CHILD_REPRODUCER = [==[
local LOG, NAME = ...
local log = assert(io.open(LOG, "a"))
log:setvbuf("no")
local found = 0
for level = 2, 100 do
  local info = debug.getinfo(level, "fS")
  if info == nil then break end
  if info.func ~= nil and info.what == "C" then
    found = found + 1
    log:write(("%s child: debug.getinfo(%d, 'f').func() (no arguments)\n"):format(NAME, level))
    pcall(info.func)
  end
end
return found
]==]

local function script(body, vars)
  local head = {}
  for name, value in pairs(vars) do
    head[#head + 1] = ("local %s = %s\n"):format(name, ("%q"):format(value))
  end
  return table.concat(head) .. body
end

-- Shared head of the parent scripts: the walker, the standard set taken
-- before the module is loaded, the modules, and one protected call per module
-- copy (on 5.1 and LuaJIT that caches its trampoline in the registry).
local PARENT_HEAD = [==[
local W = assert((loadstring or load)(WALKER, "=walker"))()
local LOG = assert(os.getenv("WALK_LOG"))
local standard = W.standard()
local llthreads = require "llthreads"
local llthreads2 = require "llthreads2"
local ex = require "llthreads.ex"
assert(llthreads.new("return 1"):start():join())
assert(llthreads2.new("return 1"):start():join())
]==]

local PARENT_WALK = PARENT_HEAD .. [==[
local found = W.found()
local roots = {
  { "llthreads", llthreads }, { "llthreads2", llthreads2 }, { "llthreads.ex", ex },
  { "thread metatable", debug.getmetatable(llthreads.new("return")) },
  { "llthreads2 thread metatable", debug.getmetatable(llthreads2.new("return")) },
  { "llthreads.ex thread", ex.new("return") },
  { "registry", debug.getregistry() },
}
-- package.loadlib reaches the exported luaopen_ functions too.
for _, sym in ipairs({ "luaopen_llthreads", "luaopen_llthreads2", "luaopen_llthreads_ex", "luaopen_llthreads2_ex" }) do
  local f = package.loadlib(MODULE_FILE, sym)
  if f then roots[#roots + 1] = { "package.loadlib(" .. sym .. ")", f } end
end
local lud = W.collect(found, roots, standard)
local ctx = W.context({ { "llthreads", llthreads }, { "llthreads2", llthreads2 } }, lud, LOG)
print(("PROBED %d CALLS %d"):format(W.probe_all(ctx, found), ctx.calls))
print("OK")
]==]

-- Only what the registry holds beyond the module tables and thread metatables.
local PARENT_REGISTRY = PARENT_HEAD .. [==[
local api = W.found()
W.collect(api, {
  { "llthreads", llthreads }, { "llthreads2", llthreads2 }, { "llthreads.ex", ex },
  { "thread metatable", debug.getmetatable(llthreads.new("return")) },
  { "llthreads2 thread metatable", debug.getmetatable(llthreads2.new("return")) },
}, standard)
local not_api = setmetatable({}, { __index = function(_, f) return standard[f] or api.label[f] ~= nil end })
local found = W.found()
local lud = W.collect(found, { { "registry", debug.getregistry() } }, not_api)
local ctx = W.context({ { "llthreads", llthreads }, { "llthreads2", llthreads2 } }, lud, LOG)
print(("PROBED %d CALLS %d"):format(W.probe_all(ctx, found), ctx.calls))
print("OK")
]==]

local PARENT_CHILD_WALK = [==[
local llthreads = require "llthreads"
local LOG = assert(os.getenv("WALK_LOG"))
local r = { llthreads.new(CHILD_WALK, WALKER, LOG):start():join() }
if r[1] ~= true then error("the child failed: " .. tostring(r[2]), 0) end
print(("PROBED %d ABOVE %d CALLS %d"):format(r[2], r[3], r[4]))
print("OK")
]==]

local PARENT_REPRODUCER = [==[
local LOG = assert(os.getenv("WALK_LOG"))
local ex = require "llthreads.ex"
local starts = {
  { "llthreads", function(...) return require("llthreads").new(...) end },
  { "llthreads2", function(...) return require("llthreads2").new(...) end },
  { "llthreads.ex", function(...) return ex.new(...) end },
}
for _, s in ipairs(starts) do
  local r = { s[2](CHILD_REPRODUCER, LOG, s[1]):start():join() }
  if r[1] ~= true then error(s[1] .. ": the child failed: " .. tostring(r[2]), 0) end
  print(("FOUND %s %d"):format(s[1], r[2]))
end
print("OK")
]==]

local SIGNALS = {
  [4] = "SIGILL", [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE",
  [9] = "SIGKILL", [11] = "SIGSEGV", [13] = "SIGPIPE", [15] = "SIGTERM",
}

-- The probes interrupt thread objects of their own; what those children
-- report is noise next to a crash.
local NOISE = "^Error from thread: llthreads2?: thread was interrupted$"

local function last_lines(s, n)
  local lines = {}
  for line in (s or ""):gmatch("[^\n]+") do
    if not line:find(NOISE) then lines[#lines + 1] = line end
  end
  if #lines == 0 then return "(none)" end
  return table.concat(lines, "\n", math.max(1, #lines - n + 1))
end

local function describe_exit(code)
  if code == nil then return "no exit status reported" end
  if code == 124 then return ("timed out after %d s (a hang)"):format(LIMIT) end
  if code > 128 then
    local sig = code - 128
    return ("killed by signal %d (%s)"):format(sig, SIGNALS[sig] or "?")
  end
  return "exit status " .. code
end

-- Runs a walk script in a sub-process; fails the test, naming the call that
-- was running, unless it exited normally and printed OK. Returns its output.
local function survive(source)
  local log = H.tmpname()
  H.write_file(log, "")
  local code, out = H.run_lua(source, "WALK_LOG=" .. H.shq(log), LIMIT)
  local ok_line = out:find("\nOK\n", 1, true) or out:find("^OK\n")
  if code == 0 and ok_line and not H.crashed(code, out) then return out end
  local calls = H.read_file(log) or ""
  local last = last_lines(calls, 1)
  error(("the walk did not survive: %s\nlast call made: %s\nlast lines of output:\n%s"):format(
    describe_exit(code), last, last_lines(out, 15)), 0)
end

describe("C functions reachable from Lua", function()
  after_each(H.cleanup)

  it("from the parent (module tables, thread metatables, registry, upvalues) survive no arguments, junk and a wrong self",
    function()
      local module_file = assert(H.find_module_file("llthreads"), "llthreads not found on package.cpath")
      local out = survive(script(PARENT_WALK, { WALKER = WALKER, MODULE_FILE = module_file }))
      local probed = tonumber(out:match("PROBED (%d+)"))
      -- at least new, set_logger, version, set_memory_limit and the thread
      -- metatable's seven methods, __gc and __tostring
      assert(probed and probed >= 13, "too few C functions found from the parent: " .. tostring(probed))
    end)

  it("from inside a child (its stack above the chunk, its registry, module tables, upvalues) survive the same calls",
    function()
      local out = survive(script(PARENT_CHILD_WALK, { WALKER = WALKER, CHILD_WALK = CHILD_WALK }))
      local probed, above = out:match("PROBED (%d+) ABOVE (%d+)")
      probed, above = tonumber(probed), tonumber(above)
      assert(probed and probed >= 13, "too few C functions found in the child: " .. tostring(probed))
      -- The chunk used to run inside the library's protected call, whose
      -- trampoline (a frame above the chunk) crashed when called from Lua. Now
      -- the chunk is called from its state's base level: nothing of ours is
      -- above it for debug.getinfo to hand out.
      assert.are.equal(0, above, "C functions found on the child's stack above the chunk")
    end)

  it("debug.getinfo(2, 'f').func() inside a child: every C function above the chunk survives a call with no arguments",
    function()
      local out = survive(script(PARENT_REPRODUCER, { CHILD_REPRODUCER = CHILD_REPRODUCER }))
      for _, name in ipairs({ "llthreads", "llthreads2", "llthreads.ex" }) do
        local n = tonumber(out:match("FOUND " .. name:gsub("%.", "%%.") .. " (%d+)"))
        assert(n, "no count printed for a child started by " .. name)
        -- A plain chunk is the bottom frame of its state (see above); ex's
        -- bootstrap is Lua code, so nothing above an ex chunk is C either.
        assert.are.equal(0, n, "C functions above the chunk of a child started by " .. name)
      end
    end)

  -- On 5.1 and LuaJIT the registry caches the trampoline once a join has
  -- run in the parent; on 5.2+ the registry holds only the thread metatable.
  it("in the parent's registry beyond the module's API (the cached trampoline on 5.1 and LuaJIT) survive the same calls",
    function()
      local out = survive(script(PARENT_REGISTRY, { WALKER = WALKER }))
      assert(out:match("PROBED (%d+)"), "no count printed")
    end)
end)
