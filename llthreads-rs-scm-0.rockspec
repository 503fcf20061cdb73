-- LuaRocks build of the Rust llthreads module (a drop-in for lua-llthreads2).
--
--   luarocks --lua-version 5.4 --tree ./rocks make      (also 5.1, 5.2, 5.3)
--   LUAROCKS_CONFIG=tools/luarocks-luajit.lua luarocks --tree ./rocks-jit make
--
-- Needs a Rust toolchain (cargo) on PATH. The cargo feature is picked by asking
-- the interpreter luarocks targets, $(LUA), which Lua it is. One library file is
-- installed twice, as llthreads.so and llthreads2.so; it also serves
-- require "llthreads.ex" and "llthreads2.ex" (Lua's all-in-one C loader).
rockspec_format = "3.0"
package = "llthreads-rs"
version = "scm-0"

source = {
   -- `luarocks make` builds the checked-out directory and ignores this URL.
   url = "git+https://github.com/example/llthreads-rs.git",
}

description = {
   summary = "Run Lua code on native OS threads: a Rust drop-in replacement for lua-llthreads2",
   detailed = [[
      llthreads-rs starts Lua chunks in fresh Lua states on OS threads and copies
      values between the states. It loads as "llthreads" and "llthreads2" (and their
      ".ex" helpers) on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT.
   ]],
   license = "MIT",
}

dependencies = {
   "lua >= 5.1, < 5.6",
}

-- Shell snippet printing the cargo feature for $(LUA): luajit, lua51 .. lua54.
-- Backticks, not $(...): luarocks deletes every $(NAME) it does not know.
local feature = [[`"$(LUA)" -e "if jit then io.write('luajit') else io.write('lua' .. (_VERSION:gsub('%D', ''))) end"`]]

-- The cargo target dir is fixed inside the source tree, one per flavour, so a
-- repeated `luarocks make` only rebuilds what changed. It is target/<feature>, with
-- the very cargo command line tools/lib.sh's ll_build runs: when tools/test.sh (or
-- tools/run-example.sh) has built the flavour already, cargo finds nothing to do.
-- Keep the two command lines identical, or each builds the crate again.
build = {
   type = "command",
   build_command = "F=" .. feature .. [[ && test -n "$F" && ]]
      .. [[cargo build --release --locked --features "$F" --target-dir "target/$F"]],
   install_command = "F=" .. feature .. [[ && test -n "$F" && mkdir -p "$(LIBDIR)" && ]]
      .. [[cp "target/$F/release/libllthreads.so" "$(LIBDIR)/llthreads.so" && ]]
      .. [[cp "target/$F/release/libllthreads.so" "$(LIBDIR)/llthreads2.so"]],
}
