#!/usr/bin/env bash
# Run one example:  tools/run-example.sh [EXAMPLE] [FLAVOUR]
#   EXAMPLE  examples/scatter_gather.lua (default), or just its name: scatter_gather
#   FLAVOUR  5.1 5.2 5.3 5.4 (default) 5.5 or jit
# Installs the interpreter when it is missing (Debian/Ubuntu: apt-get, as root or
# through sudo; for 5.5, which Debian lacks, tools/build-lua55.sh builds it), builds the module for that flavour (cargo build --release, cached in
# target/<feature>), copies it into build/<feature>/ as llthreads.so and llthreads2.so,
# and runs the example with that folder on LUA_CPATH. The example's exit status is
# returned. Needs a Rust toolchain (cargo; https://rustup.rs).
set -u -o pipefail
# shellcheck source=tools/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LL_ROOT" || exit 2

usage() { sed -n '2,/^[^#]/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2; exit 2; }
[ $# -le 2 ] || usage
case "${1:-}" in -h | --help) usage ;; esac

example=${1:-examples/scatter_gather.lua}
if [ ! -f "$example" ]; then
    for candidate in "examples/$example" "examples/$example.lua"; do
        [ -f "$candidate" ] && example=$candidate && break
    done
fi
if [ ! -f "$example" ]; then
    echo "error: no example '$example'; there are:" >&2
    ls examples/*.lua >&2
    exit 2
fi
flavour=$(ll_flavour "${2:-5.4}") || { echo "error: unknown flavour '$2' (use: $LL_ALL_FLAVOURS)" >&2; exit 2; }
interp=$(ll_interp "$flavour")
feature=$(ll_feature "$flavour")
if [ "$flavour" = 5.5 ]; then
    echo "$LL_PROG: tools/build-lua55.sh (the 5.5 interpreter; cached)" >&2
    if ! ll_prepare 5.5 "$LL_LOGDIR/build-lua5.5.log"; then
        echo "error: tools/build-lua55.sh failed; the end of $LL_LOGDIR/build-lua5.5.log:" >&2
        tail -n 20 "$LL_LOGDIR/build-lua5.5.log" >&2
        exit 2
    fi
elif ! command -v "$interp" >/dev/null 2>&1; then
    # The Debian package has the interpreter's name: lua5.1 .. lua5.4, luajit.
    echo "$LL_PROG: $interp not found: installing it" >&2
    ll_install_packages "$interp" || exit 2 # it said what to install by hand
    if ! command -v "$interp" >/dev/null 2>&1; then
        echo "error: apt-get installed $interp but it is not on PATH ($PATH)" >&2
        exit 2
    fi
fi

log="$LL_LOGDIR/build-$feature.log"
echo "building llthreads for Lua $flavour (cargo build --release --features $feature) ..." >&2
if ! dir=$(ll_build "$flavour" "$log"); then
    echo "error: the build failed; the end of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
fi
echo "running: LUA_CPATH=\"${dir#"$LL_ROOT"/}/?.so;;\" $interp $example" >&2
LUA_CPATH="$dir/?.so;;" exec "$interp" "$example"
