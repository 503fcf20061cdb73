-- llthreads.ex: start threads from Lua functions, source strings or files, with an
-- optional prelude and the interpreter's LUA_INIT, as lua.c would run a script.
-- Loaded by the library itself with the base module's name as its argument.

local base = ...
local llthreads = require(base)

local unpack = table.unpack or unpack

-- Runs first in every child. Fixed arguments: lua_init, prelude, source, is_file,
-- chunk name; the user's arguments follow.
local BOOT = [==[
local lua_init, prelude, source, is_file, name = ...
local loadstring = loadstring or load
local unpack = table.unpack or unpack
local function pack(...) return { n = select("#", ...), ... } end
local args = pack(select(6, ...))

-- Source or bytecode, or "@path" for a file.
local function load_code(code, name)
  if code:sub(1, 1) == "@" then
    return assert(loadfile(code:sub(2)))
  end
  return assert(loadstring(code, name))
end

if lua_init then
  load_code(lua_init, "=LUA_INIT")()
end

local main
if is_file then
  main = assert(loadfile(source))
else
  main = assert(loadstring(source, name))
end

if prelude then
  args = pack(load_code(prelude, "=prelude")(unpack(args, 1, args.n)))
end

local a = { n = args.n, [0] = name }
for i = 1, args.n do a[i] = args[i] end
arg = a

return main(unpack(args, 1, args.n))
]==]

-- What lua.c would run before a script: LUA_INIT_5_x on 5.2+, else LUA_INIT.
local function default_init()
  local major, minor = _VERSION:match("(%d+)%.(%d+)")
  local init
  if major and (major + 0) * 10 + (minor + 0) >= 52 then
    init = os.getenv("LUA_INIT_" .. major .. "_" .. minor)
  end
  return init or os.getenv("LUA_INIT")
end

local function as_source(v, what, level)
  if type(v) == "function" then
    return string.dump(v)
  elseif type(v) == "string" then
    return v
  end
  error(("bad %s (function or string expected, got %s)"):format(what, type(v)), level + 1)
end

local Thread = {}
Thread.__index = Thread

function Thread:start(...)
  local ok, err = self.thread:start(...)
  if not ok then return ok, err end
  return self
end

for _, name in ipairs({ "join", "alive", "started", "detached", "joinable", "interrupt" }) do
  Thread[name] = function(self, ...)
    return self.thread[name](self.thread, ...)
  end
end

local ex = setmetatable({}, { __index = llthreads })

function ex.new(code, ...)
  local opts = {}
  if type(code) == "table" then
    opts = code
    code = code[1] or code.source
  end

  local source = as_source(code, "argument #1 to 'new'", 2)
  local is_file, name = false, nil
  if type(code) == "function" then
    name = "=(function)"
  elseif source:sub(1, 1) == "@" then
    is_file, source = true, source:sub(2)
    name = source
  else
    name = source
  end

  local prelude = opts.prelude
  if prelude ~= nil then prelude = as_source(prelude, "prelude option", 2) end

  local lua_init = opts.lua_init
  if lua_init == nil then lua_init = default_init() end
  if lua_init ~= false and lua_init ~= nil then
    lua_init = as_source(lua_init, "lua_init option", 2)
  end

  local thread = llthreads.new(BOOT, lua_init or false, prelude or false, source, is_file, name, ...)
  return setmetatable({ thread = thread }, Thread)
end

return ex
