#!/usr/bin/env bash
# Builds the Lua 5.5 flavour's tools into build/lua5.5/:  tools/build-lua55.sh
#
#   bin/lua5.5                 the interpreter: tools/lua55/host.c (our own small host)
#                              linked with Lua 5.5's library, its API exported
#   include/                   lua.h, luaconf.h, lualib.h, lauxlib.h (for luarocks, C modules)
#   lib/liblua5.5.a            the library
#   share/lua/5.5/             Debian's Lua files that 5.5 refuses as they are (loop
#                              variables assigned to), adapted (tools/lua55/overlay.lua)
#   lib/lua/5.5/lfs.so, system/core.so, term/core.so
#                              the C parts of busted (LuaFileSystem, luasystem, lua-term),
#                              compiled for 5.5 from Debian's source packages
#
# Debian has no lua5.5 package. Lua's sources come from the `lua-src` crate on
# crates.io (through cargo, pinned below); busted's C modules from the `.orig` tarballs
# of the Debian source packages of the installed lua-filesystem, lua-system and
# lua-term (`apt-get source --download-only`: apt needs `deb-src` entries, which
# .ci/run adds). Nothing of theirs goes into the repository. busted's Lua parts are
# Debian's plain Lua files: tools/lib.sh points LUA_PATH_5_5 at build/lua5.5/share/lua/5.5
# (the adapted copies), then /usr/share/lua/5.4.
#
# Cached: when build/lua5.5/.stamp matches (same script, host, Lua version, folder),
# it does nothing. A module whose Debian source is missing from the mirror (HTTP 404)
# is replaced by our own stand-in, when there is one (tools/lua55/system_core.c for
# luasystem's system.core), with a warning and a line in build/lua5.5/STAND-INS; any
# other failure is an error. Messages go to stderr; on success the last line is the interpreter's
# path, on stdout. Needs cargo, a C compiler (cc) and ar.
set -eu -o pipefail
# shellcheck source=tools/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LL_ROOT"

LUA_SRC_VERSION=551.1.0 # the lua-src crate: Lua 5.5.1
LUA_DIR=lua-5.5.1       # its folder of Lua sources
OUT=$LL_ROOT/build/lua5.5
HOST=tools/lua55/host.c
# Debian source packages of busted's C modules: source package, files, module name,
# and a sed expression for files that refuse a Lua version they do not know (applied
# to the unpacked copy under build/, never to anything kept): LuaFileSystem 1.8.0 stops
# at 5.4 in check_file, whose luaL_Stream is unchanged in 5.5.
C_MODULES=(
    "lua-filesystem|src/lfs.c|lfs|s/LUA_VERSION_NUM <= 504/LUA_VERSION_NUM <= 505/"
    "lua-system|src/*.c|system.core|"
    "lua-term|core.c|term.core|"
)
# Our own stand-in for a module whose Debian source cannot be downloaded (a partial
# mirror): used only then, with a warning, and listed in build/lua5.5/STAND-INS.
declare -A STAND_IN=([system.core]=tools/lua55/system_core.c)
# Debian's plain-Lua packages (busted, penlight, ...), the same files for every version.
LUA_SHARE=/usr/share/lua/5.4
CC=${CC:-cc}
CFLAGS=${CFLAGS:--O2 -g -Wall}

say() { echo "build-lua55: $*" >&2; }
die() { say "error: $*"; exit 1; }

stamp_value() {
    {
        cat "${BASH_SOURCE[0]}" "$HOST" tools/lua55/system_core.c tools/lua55/overlay.lua
        echo "$LUA_SRC_VERSION $OUT $CC $CFLAGS"
        # Debian's Lua files, which the overlay adapts: a package upgrade rebuilds it.
        find -L "$LUA_SHARE" -name '*.lua' -printf '%p %s %T@\n' 2>/dev/null | sort
    } | sha256sum | cut -d' ' -f1
}
products_present() {
    local f
    for f in bin/lua5.5 include/lua.h include/luaconf.h include/lualib.h include/lauxlib.h \
        lib/liblua5.5.a lib/lua/5.5/lfs.so lib/lua/5.5/system/core.so lib/lua/5.5/term/core.so; do
        [ -e "$OUT/$f" ] || return 1
    done
}
want=$(stamp_value)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$want" ] && products_present; then
    say "up to date ($OUT)"
    echo "$OUT/bin/lua5.5"
    exit 0
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (https://rustup.rs)"
command -v "$CC" >/dev/null 2>&1 || die "no C compiler '$CC' (Debian: apt-get install gcc libc6-dev)"
command -v ar >/dev/null 2>&1 || die "no 'ar' (Debian: apt-get install binutils)"
rm -f "$OUT/.stamp" "$OUT/STAND-INS"
mkdir -p "$OUT"/{bin,include,lib/lua/5.5,obj,fetch/src,debsrc}

# ---- Lua 5.5's sources, from the lua-src crate --------------------------------------
# A throwaway package depending on the exact crate version makes cargo download it;
# `cargo metadata` then says where it unpacked it.
cat >"$OUT/fetch/Cargo.toml" <<EOF
[package]
name = "llthreads-lua55-sources"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
lua-src = "=$LUA_SRC_VERSION"

[workspace]
EOF
: >"$OUT/fetch/src/lib.rs"
say "fetching lua-src $LUA_SRC_VERSION (crates.io, through cargo)"
meta=$(cargo metadata --format-version 1 --manifest-path "$OUT/fetch/Cargo.toml" 2>"$OUT/fetch/cargo.log") ||
    { cat "$OUT/fetch/cargo.log" >&2; die "cargo could not fetch lua-src $LUA_SRC_VERSION"; }
manifest=$(printf '%s' "$meta" | grep -o '"manifest_path":"[^"]*/lua-src-'"$LUA_SRC_VERSION"'/Cargo.toml"' | head -n 1 |
    sed 's/^"manifest_path":"//; s/"$//')
src=$(dirname "$manifest")/$LUA_DIR
if [ -z "$manifest" ] || [ ! -f "$src/lua.h" ]; then
    die "no Lua sources found in the lua-src crate ($src)"
fi

# ---- the library, the headers and the interpreter ------------------------------------
# The default module paths put build/lua5.5's own folders first (busted's C modules
# live there), then the usual /usr/local ones.
cat >"$OUT/obj/ll_paths.h" <<EOF
#define LUA_PATH_DEFAULT "$OUT/share/lua/5.5/?.lua;$OUT/share/lua/5.5/?/init.lua;" \\
  "/usr/local/share/lua/5.5/?.lua;/usr/local/share/lua/5.5/?/init.lua;" \\
  "/usr/local/lib/lua/5.5/?.lua;/usr/local/lib/lua/5.5/?/init.lua;./?.lua;./?/init.lua"
#define LUA_CPATH_DEFAULT "$OUT/lib/lua/5.5/?.so;$OUT/lib/lua/5.5/loadall.so;" \\
  "/usr/local/lib/lua/5.5/?.so;/usr/local/lib/lua/5.5/loadall.so;./?.so"
EOF
say "compiling Lua 5.5 ($src)"
objs=()
for c in "$src"/*.c; do
    o="$OUT/obj/$(basename "$c" .c).o"
    # shellcheck disable=SC2086 # CFLAGS is a list of flags
    nice -n 10 "$CC" $CFLAGS -std=gnu99 -fPIC -DLUA_USE_LINUX -include "$OUT/obj/ll_paths.h" \
        -c "$c" -o "$o" || die "compiling $c failed"
    objs+=("$o")
done
rm -f "$OUT/lib/liblua5.5.a"
ar rcs "$OUT/lib/liblua5.5.a" "${objs[@]}"
for h in lua.h luaconf.h lualib.h lauxlib.h; do cp "$src/$h" "$OUT/include/$h"; done
# luarocks 3.8 (Debian's) accepts an include folder only when lua.h has the text
# "LUA_VERSION_NUM <number>"; 5.5's lua.h computes it from LUA_VERSION_MAJOR_N and
# LUA_VERSION_MINOR_N. A comment at the end of our copy says it in that form.
echo "/* For luarocks' header check: LUA_VERSION_NUM 505 */" >>"$OUT/include/lua.h"
if ! grep -q 'define LUA_VERSION_NUM  *(LUA_VERSION_MAJOR_N \* 100 + LUA_VERSION_MINOR_N)' "$src/lua.h" ||
    ! grep -q 'define LUA_VERSION_MINOR_N	5$' "$src/lua.h"; then
    die "lua.h does not define Lua 5.5's version as expected"
fi
# shellcheck disable=SC2086
nice -n 10 "$CC" $CFLAGS -std=gnu99 -I"$OUT/include" -c "$HOST" -o "$OUT/obj/host.o" ||
    die "compiling $HOST failed"
# --whole-archive and --export-dynamic: every API function is in the program and
# visible to the C modules it loads.
# shellcheck disable=SC2086
"$CC" $CFLAGS -o "$OUT/bin/.lua5.5.tmp" "$OUT/obj/host.o" \
    -Wl,--whole-archive "$OUT/lib/liblua5.5.a" -Wl,--no-whole-archive -Wl,-E -lm -ldl ||
    die "linking the interpreter failed"
mv -f "$OUT/bin/.lua5.5.tmp" "$OUT/bin/lua5.5"

# ---- busted's Lua parts: Debian's files, adapted where 5.5 refuses them -----------------
rm -rf "$OUT/share/lua/5.5"
mkdir -p "$OUT/share/lua/5.5"
"$OUT/bin/lua5.5" tools/lua55/overlay.lua "$LUA_SHARE" "$OUT/share/lua/5.5" >"$OUT/overlay.log" 2>&1 ||
    { cat "$OUT/overlay.log" >&2; die "adapting $LUA_SHARE's Lua files for 5.5 failed"; }
say "$(tail -n 1 "$OUT/overlay.log") into build/lua5.5/share/lua/5.5 (list: build/lua5.5/overlay.log)"

# ---- busted's C modules, from Debian's source packages --------------------------------
command -v apt-get >/dev/null 2>&1 || die "no apt-get: busted's C modules come from Debian source packages"
for entry in "${C_MODULES[@]}"; do
    IFS='|' read -r pkg files module fix <<<"$entry"
    dest="$OUT/lib/lua/5.5/${module//.//}.so"
    # The source package and version of the installed binary package, when there is one.
    srcpkg=$pkg
    srcver=""
    if info=$(dpkg-query -W -f='${source:Package} ${source:Version}' "$pkg" 2>/dev/null) && [ -n "$info" ]; then
        read -r srcpkg srcver <<<"$info"
    fi
    work="$OUT/debsrc/$srcpkg"
    mkdir -p "$work"
    orig=$(find "$work" -maxdepth 1 -name "${srcpkg}_*.orig.tar.*" | head -n 1)
    if [ -z "$orig" ]; then
        say "apt-get source --download-only $srcpkg${srcver:+=$srcver}"
        # The Debian part may fail to download while the .orig tarball (all we use)
        # arrives: what counts is the tarball, which apt checks against the index.
        (cd "$work" && { apt-get source --download-only "$srcpkg${srcver:+=$srcver}" ||
            apt-get source --download-only "$srcpkg"; }) >"$work/apt.log" 2>&1 || true
        orig=$(find "$work" -maxdepth 1 -name "${srcpkg}_*.orig.tar.*" | head -n 1)
        if [ -z "$orig" ] && [ -n "${STAND_IN[$module]:-}" ] && grep -q '404' "$work/apt.log"; then
            say "WARNING: the source of $srcpkg is not on this mirror (404); building our" \
                "stand-in ${STAND_IN[$module]} as $module instead"
            tail -n 3 "$work/apt.log" | sed 's/^/  | /' >&2
            mkdir -p "$(dirname "$dest")"
            # shellcheck disable=SC2086
            nice -n 10 "$CC" $CFLAGS -std=gnu99 -fPIC -shared -I"$OUT/include" \
                "${STAND_IN[$module]}" -o "$dest" || die "compiling ${STAND_IN[$module]} failed"
            echo "$module: ${STAND_IN[$module]} ($srcpkg's source could not be downloaded)" >>"$OUT/STAND-INS"
            continue
        fi
        if [ -z "$orig" ]; then
            tail -n 5 "$work/apt.log" >&2
            die "no source tarball for $srcpkg: apt needs deb-src entries (bash .ci/run adds" \
                "them; or add a 'deb-src' twin of your 'deb' line and run apt-get update)"
        fi
    fi
    rm -rf "$work/tree" && mkdir -p "$work/tree"
    tar -xf "$orig" -C "$work/tree" --strip-components=1 || die "cannot unpack $orig"
    if [ -n "$fix" ]; then
        # shellcheck disable=SC2086 # $files is a glob inside the unpacked tree
        (cd "$work/tree" && sed -i "$fix" $files) || die "cannot adapt $files of $srcpkg"
    fi
    mkdir -p "$(dirname "$dest")"
    say "compiling $module from $(basename "$orig")"
    # shellcheck disable=SC2086 # $files is a glob inside the unpacked tree
    (cd "$work/tree" && nice -n 10 "$CC" $CFLAGS -std=gnu99 -fPIC -shared -I"$OUT/include" \
        -Isrc $files -o "$dest.tmp") >"$work/cc.log" 2>&1 ||
        { cat "$work/cc.log" >&2; die "compiling $module from $srcpkg failed"; }
    mv -f "$dest.tmp" "$dest"
done

products_present || die "a product is missing after the build"
echo "$want" >"$OUT/.stamp"
say "built $OUT"
echo "$OUT/bin/lua5.5"
