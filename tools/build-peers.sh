#!/usr/bin/env bash
# Builds the two peers that bench/channels.sh compares our channels with, outside the
# repository: Lua Lanes 4.0.0 (lindas) and effil 1.2-0 (channels). Neither is part of
# this project, neither is a Debian package, and neither is on a registry reachable
# here, so this script downloads nothing: it takes their source folders.
#
#   tools/build-peers.sh --lanes LANES_SRC --effil EFFIL_SRC [--sol SOL_SRC] --out OUT [flavour...]
#
#   LANES_SRC  a checkout of LuaLanes/lanes at tag v4.0.0 (the folder holding src/lanes.cpp)
#   EFFIL_SRC  a checkout of effil/effil at tag v1.2-0 (the folder holding src/cpp/)
#   SOL_SRC    sol2 at the commit effil pins as its submodule libs/sol
#              (345a398cdc7748427214644bf1606ae4324abb24 for v1.2-0); default EFFIL_SRC/libs/sol
#   OUT        where the builds go: OUT/<flavour>/lanes_core.so + lanes.lua, OUT/<flavour>/effil.so
#   flavour    5.1 5.2 5.3 5.4 jit; default: 5.4 jit 5.3
#              (effil is skipped on 5.4: effil 1.2-0 does not build there)
#
# Getting the sources: any copy of the three GitHub repositories at those commits works:
# a clone of LuaLanes/lanes checked out at v4.0.0; a recursive clone of effil/effil at
# v1.2-0 with its submodules updated (that puts sol2 in libs/sol); or, where only
# mirrors can be reached, `git archive` of each (ThePhD/sol2 at the commit above, given
# with --sol or unpacked into EFFIL_SRC/libs/sol).
#
# Needs: Debian's Lua headers (liblua5.X-dev, libluajit-5.1-dev) and clang 16, with
# libc++ for Lanes (it uses C++20 <format>, which GCC 12's libstdc++ lacks)
#   apt-get install clang-16 libc++-16-dev libc++abi-16-dev
# Environment: JOBS (parallel compiles, default 1), NICE (default 19), LANES_CXX
# (default clang++-16), EFFIL_CXX (default clang++-16, with GCC's libstdc++: g++ 12 finds
# sol2's char32_t overloads ambiguous).
#
# Never called by tools/test.sh or CI: the peers are for benchmarks only.
set -euo pipefail

lanes_src="" effil_src="" sol_src="" out=""
flavours=()
while [ $# -gt 0 ]; do
  case "$1" in
    --lanes) lanes_src="$2"; shift 2 ;;
    --effil) effil_src="$2"; shift 2 ;;
    --sol) sol_src="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) flavours+=("$1"); shift ;;
  esac
done
[ -n "$out" ] || { echo "usage: $0 --lanes DIR --effil DIR [--sol DIR] --out DIR [flavour...]" >&2; exit 2; }
[ -n "$lanes_src$effil_src" ] || { echo "give --lanes and/or --effil" >&2; exit 2; }
[ ${#flavours[@]} -gt 0 ] || flavours=(5.4 jit 5.3)
jobs="${JOBS:-1}"
nice_cmd=(nice -n "${NICE:-19}")
lanes_cxx="${LANES_CXX:-clang++-16}"
effil_cxx="${EFFIL_CXX:-clang++-16}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

include_dir() {
  case "$1" in
    5.1) echo /usr/include/lua5.1 ;;
    5.2) echo /usr/include/lua5.2 ;;
    5.3) echo /usr/include/lua5.3 ;;
    5.4) echo /usr/include/lua5.4 ;;
    jit) echo /usr/include/luajit-2.1 ;;
    *) echo "unknown flavour: $1 (use 5.1 5.2 5.3 5.4 jit)" >&2; return 2 ;;
  esac
}

# Compiles every .cpp of $1 into objects under $2 with the compiler command in $3...,
# JOBS at a time; prints the object paths.
compile_all() {
  local src="$1" obj="$2"; shift 2
  mkdir -p "$obj"
  local f
  # shellcheck disable=SC2016 # $1, $@ and $OBJ are the inner shell's
  for f in "$src"/*.cpp; do printf '%s\n' "$f"; done |
    OBJ="$obj" xargs -P "$jobs" -I{} sh -c 's=$1; shift; exec "$@" -c "$s" -o "$OBJ/$(basename "$s" .cpp).o"' sh {} "$@" >&2 \
      || return 1
  ls "$obj"/*.o
}

build_lanes() {
  local f="$1" inc="$2" dest="$out/$1" obj="$out/obj/lanes-$1"
  [ -f "$lanes_src/src/lanes.cpp" ] || { echo "not a Lanes source folder: $lanes_src" >&2; return 1; }
  command -v "$lanes_cxx" >/dev/null || { echo "$lanes_cxx not found (apt-get install clang-16 libc++-16-dev libc++abi-16-dev)" >&2; return 1; }
  echo "# lanes $f: $lanes_cxx, headers $inc" >&2
  rm -rf "$obj"
  mkdir -p "$obj"
  # Four things its own makefile gets from GCC/MSVC and clang needs told: <format> is
  # "experimental" in libc++ 16; <unistd.h> (geteuid) is not pulled in by libc++'s
  # headers; and on 5.1/LuaJIT, where lua_pushlstring returns void, clang rejects the
  # 5.2+ branch of an `if constexpr` in compat.hpp (GCC lets it pass), so a forced
  # include makes lua_pushlstring an expression that also yields the pushed string.
  # Debian's Lua 5.4.4 predates lua_closethread (5.4.6); lua_resetthread is the same call.
  local shim="$obj/lanes-clang-shim.h"
  {
    echo '#include <unistd.h>'
    echo 'extern "C" {'
    echo '#include "lua.h"'
    echo '}'
    echo '#if LUA_VERSION_NUM == 501'
    echo '#define lua_pushlstring(L, s, l) (lua_pushlstring((L), (s), (l)), lua_tolstring((L), -1, nullptr))'
    echo '#endif'
    echo '#if LUA_VERSION_NUM == 504 && LUA_VERSION_RELEASE_NUM < 50406'
    echo '#define lua_closethread(L, from) lua_resetthread(L)'
    echo '#endif'
  } > "$shim"
  local objs
  objs=$(compile_all "$lanes_src/src" "$obj" "${nice_cmd[@]}" "$lanes_cxx" -std=c++20 -stdlib=libc++ \
    -fexperimental-library -include "$shim" -Wno-invalid-noreturn -O2 -DNDEBUG -D_GNU_SOURCE -fPIC -I"$inc") || return 1
  mkdir -p "$dest"
  # shellcheck disable=SC2086
  "${nice_cmd[@]}" "$lanes_cxx" -shared -stdlib=libc++ -fexperimental-library $objs -lpthread \
    -o "$dest/lanes_core.so.tmp"
  mv -f "$dest/lanes_core.so.tmp" "$dest/lanes_core.so"
  cp "$lanes_src/src/lanes.lua" "$dest/lanes.lua"
}

build_effil() {
  local f="$1" inc="$2" dest="$out/$1"
  local sol="${sol_src:-$effil_src/libs/sol}"
  [ -d "$effil_src/src/cpp" ] || { echo "not an effil source folder: $effil_src" >&2; return 1; }
  [ -f "$sol/single/sol/sol.hpp" ] || { echo "sol2 not found at $sol (give --sol, at the commit effil pins)" >&2; return 1; }
  if [ "$f" = 5.4 ]; then echo "# effil $f: skipped (effil 1.2-0 does not build for Lua 5.4)" >&2; return 0; fi
  echo "# effil $f: $effil_cxx, headers $inc" >&2
  local obj="$out/obj/effil-$1" objs
  rm -rf "$obj"
  objs=$(compile_all "$effil_src/src/cpp" "$obj" "${nice_cmd[@]}" "$effil_cxx" -std=c++14 -O3 -DNDEBUG \
    -DSOL_EXCEPTIONS_SAFE_PROPAGATION -fPIC -I"$effil_src/src/cpp" -I"$sol/single/sol" -I"$inc") || return 1
  mkdir -p "$dest"
  # shellcheck disable=SC2086
  "${nice_cmd[@]}" "$effil_cxx" -shared $objs -lpthread -ldl -o "$dest/effil.so.tmp"
  mv -f "$dest/effil.so.tmp" "$dest/effil.so"
}

status=0
for f in "${flavours[@]}"; do
  inc=$(include_dir "$f") || exit 2
  [ -f "$inc/lua.h" ] || { echo "no Lua headers at $inc" >&2; status=1; continue; }
  if [ -n "$lanes_src" ]; then build_lanes "$f" "$inc" || { echo "# lanes $f: FAILED" >&2; status=1; }; fi
  if [ -n "$effil_src" ]; then build_effil "$f" "$inc" || { echo "# effil $f: FAILED" >&2; status=1; }; fi
done
ls -l "$out"/*/*.so >&2 || true
echo "# use: LANES_CPATH=$out EFFIL_CPATH=$out bench/channels.sh" >&2
exit $status
