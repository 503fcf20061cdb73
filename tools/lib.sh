# shellcheck shell=bash
# Helpers shared by tools/test.sh, tools/luarocks-test.sh, tools/run-example.sh and
# .ci/run. Source it; do not run it.

LL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The script that sourced this file, for messages: .ci/run, tools/run-example.sh, ...
LL_PROG=${0#"$LL_ROOT"/}
LL_PROG=${LL_PROG#./}
LL_ALL_FLAVOURS="5.1 5.2 5.3 5.4 5.5 jit"
# shellcheck disable=SC2034 # used by the scripts that source this file
LL_LOGDIR="$LL_ROOT/build/logs"

# Cargo may live in ~/.cargo/bin without being on PATH (CI strips the environment).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# Environment variables that would change which module or init code Lua loads.
unset LUA_INIT LUA_INIT_5_2 LUA_INIT_5_3 LUA_INIT_5_4 LUA_INIT_5_5 \
      LUA_CPATH_5_2 LUA_CPATH_5_3 LUA_CPATH_5_4 LUA_CPATH_5_5 \
      LUA_PATH_5_2 LUA_PATH_5_3 LUA_PATH_5_4
# Lua 5.5 has no Debian packages: busted's Lua parts (plain Lua, the same for every
# version) are taken from Debian's 5.4 folder, after the copies of the few files that
# tools/build-lua55.sh adapted for 5.5; its C parts are in build/lua5.5, on the 5.5
# interpreter's default cpath. `;;` keeps the defaults.
export LUA_PATH_5_5="$LL_ROOT/build/lua5.5/share/lua/5.5/?.lua;$LL_ROOT/build/lua5.5/share/lua/5.5/?/init.lua;/usr/share/lua/5.4/?.lua;/usr/share/lua/5.4/?/init.lua;;"
# The 5.5 interpreter tools/build-lua55.sh builds.
LL_LUA55="$LL_ROOT/build/lua5.5/bin/lua5.5"

# ll_flavour NAME: canonical flavour (5.1 5.2 5.3 5.4 5.5 jit) from 5.4, lua54, lua5.4, 54, jit, luajit.
ll_flavour() {
    case "$1" in
        5.1 | 51 | lua51 | lua5.1) echo 5.1 ;;
        5.2 | 52 | lua52 | lua5.2) echo 5.2 ;;
        5.3 | 53 | lua53 | lua5.3) echo 5.3 ;;
        5.4 | 54 | lua54 | lua5.4) echo 5.4 ;;
        5.5 | 55 | lua55 | lua5.5) echo 5.5 ;;
        jit | luajit) echo jit ;;
        *) return 1 ;;
    esac
}

# ll_feature FLAVOUR: the cargo feature (lua51 .. lua55, luajit).
ll_feature() {
    case "$1" in
        jit) echo luajit ;;
        *) echo "lua${1/./}" ;;
    esac
}

# ll_interp FLAVOUR: the interpreter command (lua5.1 .. lua5.4, luajit; for 5.5 the
# path of the one tools/build-lua55.sh builds: see ll_prepare).
ll_interp() {
    case "$1" in
        jit) echo luajit ;;
        5.5) echo "$LL_LUA55" ;;
        *) echo "lua$1" ;;
    esac
}

# ll_prepare FLAVOUR LOGFILE: makes the flavour's interpreter ready. Debian packages
# the others; for 5.5 it runs tools/build-lua55.sh (cached: quick when built), its
# messages to LOGFILE. Non-zero when the interpreter cannot be had.
ll_prepare() {
    local flavour=$1 log=$2
    [ "$flavour" = 5.5 ] || return 0
    mkdir -p "$(dirname "$log")"
    bash "$LL_ROOT/tools/build-lua55.sh" >"$log" 2>&1 && [ -x "$LL_LUA55" ]
}

# ll_interp_hint FLAVOUR: how to get the flavour's interpreter, for messages.
ll_interp_hint() {
    case "$1" in
        5.5) echo "tools/build-lua55.sh builds it (needs cargo, cc, and apt deb-src entries: .ci/run adds them)" ;;
        *) echo "install it (Debian: apt-get install $(ll_interp "$1"))" ;;
    esac
}

# ll_check_flavours LIST: fail with a message when LIST names an unknown flavour.
ll_check_flavours() {
    local f
    for f in $1; do
        if ! ll_flavour "$f" >/dev/null; then
            echo "error: unknown flavour '$f' (use: $LL_ALL_FLAVOURS)" >&2
            return 1
        fi
    done
}

# ll_install_packages PKG...: apt-get update, then apt-get install PKG... (Debian and
# Ubuntu), as root or through sudo. Progress and errors go to stderr; apt's output goes
# to build/logs/apt.log and its end is shown when apt fails. Returns non-zero, with a
# message naming what to install by hand, when there is no apt-get, when neither root
# nor sudo is available, or when apt fails.
ll_install_packages() {
    local log="$LL_LOGDIR/apt.log" sudo=() s
    [ $# -gt 0 ] || return 0
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$LL_PROG: no apt-get on this machine: install these yourself: $*" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "$LL_PROG: not root and no sudo: install these yourself (as root: apt-get install $*)" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    mkdir -p "$LL_LOGDIR"
    s="${sudo[*]}${sudo[*]:+ }"
    echo "$LL_PROG: ${s}apt-get update; ${s}apt-get install $*  (log: ${log#"$LL_ROOT"/})" >&2
    # env inside sudo: sudo drops DEBIAN_FRONTEND from the caller's environment.
    if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; then
        return 0
    fi
    echo "$LL_PROG: apt-get failed (install these yourself: $*); the end of ${log#"$LL_ROOT"/}:" >&2
    tail -n 15 "$log" | sed 's/^/  | /' >&2
    return 1
}

# ll_enable_deb_src: makes sure apt knows source packages (tools/build-lua55.sh gets
# busted's C modules from them): when apt has no Sources index, adds a `deb-src` twin
# of each `deb` entry (/etc/apt/sources.list.d/llthreads-deb-src.*) and runs apt-get
# update, as root or through sudo. Returns non-zero, with a message, when it cannot.
ll_enable_deb_src() {
    local sudo=() f tmp log="$LL_LOGDIR/apt-deb-src.log"
    command -v apt-get >/dev/null 2>&1 || { echo "$LL_PROG: no apt-get: cannot add deb-src entries" >&2; return 1; }
    # shellcheck disable=SC2016 # $(CREATED_BY) is apt's field name, not the shell's
    if apt-get indextargets --format '$(CREATED_BY)' 2>/dev/null | grep -qx Sources; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || {
            echo "$LL_PROG: not root and no sudo: add deb-src entries to apt yourself" >&2
            return 1
        }
        sudo=(sudo)
    fi
    mkdir -p "$LL_LOGDIR"
    tmp=$(mktemp -d)
    # deb822 files: the same entries with `Types: deb-src`; one-line files: deb-src lines.
    for f in /etc/apt/sources.list.d/*.sources; do
        if [ ! -f "$f" ] || [ "${f##*/}" = llthreads-deb-src.sources ]; then continue; fi
        sed -n 's/^Types:.*\bdeb\b.*$/Types: deb-src/; p' "$f" >>"$tmp/deb-src.sources"
        echo >>"$tmp/deb-src.sources"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        if [ ! -f "$f" ] || [ "${f##*/}" = llthreads-deb-src.list ]; then continue; fi
        sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >>"$tmp/deb-src.list"
    done
    echo "$LL_PROG: adding deb-src entries for apt (/etc/apt/sources.list.d/llthreads-deb-src.*), apt-get update" >&2
    for f in "$tmp"/deb-src.*; do
        [ -s "$f" ] && "${sudo[@]}" cp "$f" "/etc/apt/sources.list.d/llthreads-${f##*/}"
    done
    rm -rf "$tmp"
    if ! "${sudo[@]}" apt-get update -q >"$log" 2>&1; then
        echo "$LL_PROG: apt-get update failed; the end of ${log#"$LL_ROOT"/}:" >&2
        tail -n 15 "$log" | sed 's/^/  | /' >&2
        return 1
    fi
}

# ll_build FLAVOUR LOGFILE: release build for FLAVOUR into target/<feature>, then copy
# the library into build/<feature>/ as llthreads.so and llthreads2.so (two real files).
# Prints the build folder on stdout; cargo's output goes to LOGFILE.
# The rockspec's build_command runs this very cargo command line in the same target
# dir, so `luarocks make` after ll_build (tools/luarocks-test.sh) compiles nothing:
# change both together.
ll_build() {
    local flavour=$1 log=$2 feature dir lib name
    feature=$(ll_feature "$flavour")
    dir="$LL_ROOT/build/$feature"
    lib="$LL_ROOT/target/$feature/release/libllthreads.so"
    mkdir -p "$dir" "$(dirname "$log")"
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install a Rust toolchain (https://rustup.rs), then run again" >"$log"
        return 1
    fi
    (cd "$LL_ROOT" && cargo build --release --locked --features "$feature" --target-dir "target/$feature") >"$log" 2>&1 || return 1
    [ -f "$lib" ] || { echo "cargo succeeded but $lib is missing" >>"$log"; return 1; }
    # Copy through a temporary name and rename, so a process that has the old
    # library mapped never sees it change under it.
    for name in llthreads llthreads2; do
        cp "$lib" "$dir/.$name.so.tmp" && mv -f "$dir/.$name.so.tmp" "$dir/$name.so" || return 1
    done
    echo "$dir"
}
