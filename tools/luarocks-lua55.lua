-- LuaRocks configuration for Lua 5.5, whose interpreter, headers and library this
-- project builds itself (tools/build-lua55.sh, into build/lua5.5): Debian has no
-- lua5.5 package, so luarocks would find none. tools/luarocks55 runs
-- `luarocks --lua-version 5.5` with this file and the module path Debian's luarocks
-- needs for a version it has no folder of:
--
--   tools/luarocks55 --tree ./rocks-5.5 make llthreads-rs-scm-0.rockspec
--   eval "$(tools/luarocks55 --tree ./rocks-5.5 path)"
--   build/lua5.5/bin/lua5.5 -e 'print(require("llthreads")._VERSION)'
--
-- The prefix is LLTHREADS_LUA55_DIR (tools/luarocks55 sets it), or build/lua5.5 under
-- the current directory.
local prefix = os_getenv("LLTHREADS_LUA55_DIR") or ((os_getenv("PWD") or ".") .. "/build/lua5.5")
lua_version = "5.5"
lua_interpreter = "lua5.5"
variables = {
   LUA_DIR = prefix,
   LUA_BINDIR = prefix .. "/bin",
   LUA_INCDIR = prefix .. "/include",
   LUA_LIBDIR = prefix .. "/lib",
}
