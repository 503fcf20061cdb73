-- Round trip through an installed rock. tools/luarocks-test.sh runs it from outside
-- the repository, with the paths `luarocks --tree TREE path` prints:
--   <interpreter> tools/rock-roundtrip.lua TREE
-- Prints "OK: ..." as its last line when every check holds; raises an error otherwise.
local tree = assert(arg and arg[1], "usage: rock-roundtrip.lua TREE")

local function searchpath(name, path)
   local file_part = name:gsub("%.", "/")
   for template in path:gmatch("[^;]+") do
      local file = template:gsub("%?", file_part)
      local f = io.open(file, "rb")
      if f then
         f:close()
         return file
      end
   end
end

-- The module must come from the tree, not from the repository's build/ folder.
for _, name in ipairs({ "llthreads", "llthreads2" }) do
   local file = searchpath(name, package.cpath)
   assert(file and file:sub(1, #tree) == tree,
      ("%s resolves to %s, not to a file inside %s"):format(name, tostring(file), tree))
   print(("%-11s -> %s"):format(name, file))
end

local llthreads = require "llthreads"
local llthreads2 = require "llthreads2"
local ex = require "llthreads.ex"
local ex2 = require "llthreads2.ex"
for name, m in pairs({ llthreads = llthreads, llthreads2 = llthreads2,
                       ["llthreads.ex"] = ex, ["llthreads2.ex"] = ex2 }) do
   assert(type(m) == "table" and type(m.new) == "function", name .. " has no new()")
end
print("loaded llthreads " .. tostring(llthreads._VERSION) .. " on " .. (jit and jit.version or _VERSION))

-- Values there and back, one thread from each copy of the library, both running at once.
local code = "local n, s, t = ... return n * 2, s .. '!', t.x, { y = t.x }"
local t1 = llthreads.new(code, 21, "hi", { x = "one" })
local t2 = llthreads2.new(code, 4, "ho", { x = "two" })
assert(t1:start() == t1, "start() must return the thread object")
assert(t2:start() == t2, "start() must return the thread object")
local ok, n, s, x, tab = t1:join()
assert(ok == true and n == 42 and s == "hi!" and x == "one" and tab.y == "one",
   "llthreads round trip: " .. tostring(n))
ok, n, s, x, tab = t2:join()
assert(ok == true and n == 8 and s == "ho!" and x == "two" and tab.y == "two",
   "llthreads2 round trip: " .. tostring(n))
print("llthreads.new / llthreads2.new: start, join, values back")

-- An error in the child comes back through join.
local t3 = llthreads.new("error('boom from the child')"):start()
local ok3, msg = t3:join()
assert(ok3 == false and tostring(msg):find("boom from the child", 1, true), tostring(msg))

-- .ex with a Lua function (sent as string.dump) and with source text.
local w = ex.new(function(a, b) return a + b, type(arg) end, 2, 3)
assert(w:start() == w, "ex start() must return the wrapper")
local okw, sum, argtype = w:join()
assert(okw == true and sum == 5 and argtype == "table", "llthreads.ex round trip")
local w2 = ex2.new("local a = ... return a .. ' from llthreads2.ex'", "hello"):start()
local okw2, text = w2:join()
assert(okw2 == true and text == "hello from llthreads2.ex", "llthreads2.ex round trip")
print("llthreads.ex / llthreads2.ex: function and source chunks")

print("OK: installed rock round trip passed")
