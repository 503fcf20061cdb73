#!/usr/bin/env bash
# Installs the rock with `luarocks make` into a fresh temporary tree for each flavour,
# then runs tools/rock-roundtrip.lua from outside the repository with the paths
# `luarocks path` prints, so only the installed files can be loaded.
# Called by tools/test.sh; runs alone too:  FLAVOURS="5.4" tools/luarocks-test.sh
# Last line: "N passed, M failed" (two checks per flavour: install, round trip).
# The rockspec builds into target/<feature> with the cargo command line of tools/lib.sh's
# ll_build, so after tools/test.sh's build of a flavour its luarocks build compiles
# nothing; run alone, it builds (or reuses) the same target/<feature>.

set -u -o pipefail
# shellcheck source=tools/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LL_ROOT" || exit 2

FLAVOURS=${FLAVOURS:-$LL_ALL_FLAVOURS}
ll_check_flavours "$FLAVOURS" || exit 2
ROCKSPEC=llthreads-rs-scm-0.rockspec
mkdir -p "$LL_LOGDIR"
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
show_tail() {
    [ -s "$1" ] || return 0
    echo "  --- last ${2:-30} lines of ${1#"$LL_ROOT"/} ---"
    tail -n "${2:-30}" "$1" | sed 's/^/  | /'
}

for f in $FLAVOURS; do
    flavour=$(ll_flavour "$f")
    feature=$(ll_feature "$flavour")
    interp=$(ll_interp "$flavour")
    log="$LL_LOGDIR/luarocks-$feature.log"
    # luarocks for this flavour: --lua-version for PUC Lua, a config file for LuaJIT,
    # tools/luarocks55 (--lua-version 5.5, a config file and a module path) for 5.5.
    if [ "$flavour" = jit ]; then
        lr=(env LUAROCKS_CONFIG="$LL_ROOT/tools/luarocks-luajit.lua" luarocks)
    elif [ "$flavour" = 5.5 ]; then
        lr=("$LL_ROOT/tools/luarocks55")
        if ! ll_prepare 5.5 "$LL_LOGDIR/build-lua5.5.log"; then
            fail "luarocks 5.5 install: no 5.5 interpreter: tools/build-lua55.sh failed (${LL_LOGDIR#"$LL_ROOT"/}/build-lua5.5.log)"
            fail "luarocks 5.5 round trip: not run"
            continue
        fi
    else
        lr=(env -u LUAROCKS_CONFIG luarocks --lua-version "$flavour")
    fi
    if ! command -v luarocks >/dev/null 2>&1; then
        fail "luarocks $flavour install: luarocks not found (Debian: apt-get install luarocks)"
        fail "luarocks $flavour round trip: not run"
        continue
    fi
    if ! command -v "$interp" >/dev/null 2>&1; then
        fail "luarocks $flavour install: interpreter $interp not found: $(ll_interp_hint "$flavour")"
        fail "luarocks $flavour round trip: not run"
        continue
    fi
    tree=$(mktemp -d "${TMPDIR:-/tmp}/llthreads-rock-$feature.XXXXXX")
    if "${lr[@]}" --tree "$tree" make "$ROCKSPEC" </dev/null >"$log" 2>&1; then
        libdir=$(find "$tree/lib/lua" -mindepth 1 -maxdepth 1 -type d | head -n 1)
        if [ -f "$libdir/llthreads.so" ] && [ ! -L "$libdir/llthreads.so" ] &&
            [ -f "$libdir/llthreads2.so" ] && [ ! -L "$libdir/llthreads2.so" ]; then
            pass "luarocks $flavour install: ${libdir#"$tree"/}/llthreads.so and llthreads2.so"
        else
            fail "luarocks $flavour install: llthreads.so and llthreads2.so not both in $tree/lib/lua/*/"
            find "$tree" -name '*.so' | sed 's/^/  | /'
        fi
    else
        fail "luarocks $flavour install: ${lr[*]} --tree $tree make failed (${log#"$LL_ROOT"/})"
        show_tail "$log" 30
        fail "luarocks $flavour round trip: not run"
        continue
    fi
    rlog="$LL_LOGDIR/luarocks-roundtrip-$feature.log"
    # A subshell: the paths luarocks prints, an empty working directory outside the
    # repository, and nothing of build/ on the path.
    (
        paths=$("${lr[@]}" --tree "$tree" path) || exit 3
        eval "$paths"
        work=$(mktemp -d "${TMPDIR:-/tmp}/llthreads-rock-run.XXXXXX") && cd "$work" || exit 3
        timeout -k 5 60 "$interp" "$LL_ROOT/tools/rock-roundtrip.lua" "$tree" </dev/null
        rc=$?
        cd / && rm -rf "$work"
        exit $rc
    ) >"$rlog" 2>&1
    rc=$?
    last=$(grep -v '^[[:space:]]*$' "$rlog" | tail -n 1)
    if [ "$rc" -eq 0 ] && [ "${last#OK:}" != "$last" ]; then
        pass "luarocks $flavour round trip on $interp: $last"
        rm -rf "$tree"
    else
        fail "luarocks $flavour round trip on $interp: exit $rc (${rlog#"$LL_ROOT"/}; tree kept: $tree)"
        show_tail "$rlog" 30
    fi
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
