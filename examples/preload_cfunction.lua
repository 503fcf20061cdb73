-- Passing a C function to a child: the child preloads a module with it.
-- Values copied to a child may be C functions (without upvalues). Here the parent
-- passes luaopen_llthreads, the module's own opener, taken with package.loadlib.
-- The child empties package.cpath, so the only way it can get the module is the
-- function it was given: it registers it as package.preload.threads, requires
-- "threads" and uses it to run a grandchild.
--
--   tools/run-example.sh examples/preload_cfunction.lua [flavour]

-- Where does `require "llthreads"` find the library? (package.searchpath is not in 5.1)
local function searchpath(name, path)
   for template in path:gmatch("[^;]+") do
      local file = template:gsub("%?", name)
      local f = io.open(file, "rb")
      if f then
         f:close()
         return file
      end
   end
end
local lib = assert(searchpath("llthreads", package.cpath), "llthreads not found on package.cpath")
local open_threads = assert(package.loadlib(lib, "luaopen_llthreads"))
print("luaopen_llthreads from " .. lib .. ": " .. type(open_threads))

local llthreads = require "llthreads"
local child = llthreads.new([[
   local open_threads = ...
   package.cpath = "" -- prove the module comes from the function, not from a file
   package.preload.threads = open_threads
   local threads = require "threads"
   local grandchild = threads.new("return 'hello from the grandchild', ...", 42)
   local ok, text, n = grandchild:start():join()
   return ok, text, n, threads.interrupted_error
]], open_threads)

local ok, gok, text, n, interrupted_error = child:start():join()
assert(ok == true, "child failed: " .. tostring(gok))
assert(gok == true and text == "hello from the grandchild" and n == 42, tostring(text))
print(("the child required \"threads\" through package.preload and its grandchild said: %s, %d")
   :format(text, n))
print("in the child, threads.interrupted_error = " .. tostring(interrupted_error))
print("OK: a C function passed to a child preloaded a module there")
