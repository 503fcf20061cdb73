# shellcheck shell=bash
# Helpers shared by tools/test.sh, tools/luarocks-test.sh, tools/run-example.sh and
# .ci/run. Source it; do not run it.

LL_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The script that sourced this file, for messages: .ci/run, tools/run-example.sh, ...
LL_PROG=${0#"$LL_ROOT"/}
LL_PROG=${LL_PROG#./}
LL_ALL_FLAVOURS="5.1 5.2 5.3 5.4 jit"
# shellcheck disable=SC2034 # used by the scripts that source this file
LL_LOGDIR="$LL_ROOT/build/logs"

# Cargo may live in ~/.cargo/bin without being on PATH (CI strips the environment).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# Environment variables that would change which module or init code Lua loads.
unset LUA_INIT LUA_INIT_5_2 LUA_INIT_5_3 LUA_INIT_5_4 \
      LUA_CPATH_5_2 LUA_CPATH_5_3 LUA_CPATH_5_4 \
      LUA_PATH_5_2 LUA_PATH_5_3 LUA_PATH_5_4

# ll_flavour NAME: canonical flavour (5.1 5.2 5.3 5.4 jit) from 5.4, lua54, lua5.4, 54, jit, luajit.
ll_flavour() {
    case "$1" in
        5.1 | 51 | lua51 | lua5.1) echo 5.1 ;;
        5.2 | 52 | lua52 | lua5.2) echo 5.2 ;;
        5.3 | 53 | lua53 | lua5.3) echo 5.3 ;;
        5.4 | 54 | lua54 | lua5.4) echo 5.4 ;;
        jit | luajit) echo jit ;;
        *) return 1 ;;
    esac
}

# ll_feature FLAVOUR: the cargo feature (lua51 .. lua54, luajit).
ll_feature() {
    case "$1" in
        jit) echo luajit ;;
        *) echo "lua${1/./}" ;;
    esac
}

# ll_interp FLAVOUR: the interpreter command (lua5.1 .. lua5.4, luajit).
ll_interp() {
    case "$1" in
        jit) echo luajit ;;
        *) echo "lua$1" ;;
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
