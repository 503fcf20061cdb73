-- LuaRocks configuration for LuaJIT: Debian's luarocks never picks LuaJIT by itself.
-- Give LuaJIT a tree of its own: LuaJIT and PUC Lua 5.1 share lib/lua/5.1, and a
-- LuaJIT build of this module does not load in lua5.1. From the repository root:
--
--   LUAROCKS_CONFIG=$PWD/tools/luarocks-luajit.lua luarocks --tree "$HOME/.luarocks-jit" make
--   eval "$(LUAROCKS_CONFIG=$PWD/tools/luarocks-luajit.lua luarocks --tree "$HOME/.luarocks-jit" path)"
--   luajit -e 'print(require("llthreads")._VERSION)'
lua_version = "5.1"
lua_interpreter = "luajit"
variables = {
   LUA_DIR = "/usr",
   LUA_BINDIR = "/usr/bin",
   LUA_INCDIR = "/usr/include/luajit-2.1",
   LUA_LIBDIR = "/usr/lib/x86_64-linux-gnu",
}
