#!/usr/bin/env bash
# Full-size stress run: spec/stress_spec.lua with LLTHREADS_STRESS=20 (20,000
# sequential spawn+join, 1,000 threads alive at once, 4,000 objects collected per
# start mode, 400-thread interrupt storms, 6,000 end races per kind, 20 runs of each
# process-exit case) on lua5.4 and luajit.
#
#   tools/stress-full.sh                        # lua5.4 and luajit, full size
#   FLAVOURS="5.4 5.1" tools/stress-full.sh     # other flavours
#   LLTHREADS_STRESS=5 tools/stress-full.sh     # another size (1 = what tools/test.sh runs)
#
# It uses the libraries tools/test.sh leaves in build/<feature>/ (llthreads.so and
# llthreads2.so) and builds them the same way (tools/lib.sh ll_build) only when they
# are missing, or always with LLTHREADS_REBUILD=1.
# LLTHREADS_STRESS_TIMEOUT (seconds, default 3600) bounds one busted run.
# Logs: build/logs/stress-full-<feature>.tap and .stderr.log.
# The last line is "N passed, M failed"; the exit status is non-zero on any failure.

set -u -o pipefail
# shellcheck source=tools/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LL_ROOT" || exit 2

FLAVOURS=${FLAVOURS:-"5.4 jit"}
SCALE=${LLTHREADS_STRESS:-20}
TIMEOUT=${LLTHREADS_STRESS_TIMEOUT:-3600}
ll_check_flavours "$FLAVOURS" || exit 2
mkdir -p "$LL_LOGDIR"

BUSTED=$(command -v busted || true)
if [ -z "$BUSTED" ]; then
    echo "busted not found: install it (Debian: apt-get install lua-busted)" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

PASSED=0
FAILED=0
for f in $FLAVOURS; do
    flavour=$(ll_flavour "$f")
    feature=$(ll_feature "$flavour")
    interp=$(ll_interp "$flavour")
    dir="$LL_ROOT/build/$feature"
    echo "== Lua $flavour ($interp), LLTHREADS_STRESS=$SCALE =="
    if ! command -v "$interp" >/dev/null 2>&1; then
        echo "  FAIL: interpreter $interp not found"
        FAILED=$((FAILED + 1))
        continue
    fi
    if [ "${LLTHREADS_REBUILD:-0}" = 1 ] || [ ! -f "$dir/llthreads.so" ] || [ ! -f "$dir/llthreads2.so" ]; then
        echo "  building $feature (cargo build --release --locked --features $feature --target-dir target/$feature)"
        if ! dir=$(ll_build "$flavour" "$LL_LOGDIR/build-$feature.log"); then
            echo "  FAIL: build failed, see build/logs/build-$feature.log"
            tail -n 20 "$LL_LOGDIR/build-$feature.log" | sed 's/^/    | /'
            FAILED=$((FAILED + 1))
            continue
        fi
    else
        newer=$(find src Cargo.toml Cargo.lock -newer "$dir/llthreads.so" 2>/dev/null | head -n 1)
        [ -n "$newer" ] && echo "  WARNING: $newer is newer than build/$feature/llthreads.so (LLTHREADS_REBUILD=1 rebuilds)"
    fi
    tap="$LL_LOGDIR/stress-full-$feature.tap"
    err="$LL_LOGDIR/stress-full-$feature.stderr.log"
    t0=$(date +%s)
    LUA_CPATH="$dir/?.so;;" LLTHREADS_LUA=$(command -v "$interp") LLTHREADS_FLAVOUR=$flavour \
        LLTHREADS_STRESS=$SCALE timeout -k 10 "$TIMEOUT" "$interp" "$BUSTED" -o TAP spec/stress_spec.lua \
        </dev/null >"$tap" 2>"$err"
    rc=$?
    ok=$(grep -c '^ok ' "$tap")
    nok=$(grep -c '^not ok ' "$tap")
    plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$tap")
    PASSED=$((PASSED + ok))
    FAILED=$((FAILED + nok))
    echo "  $ok passed, $nok failed in $(($(date +%s) - t0)) s (exit $rc, ${tap#"$LL_ROOT"/})"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "  FAIL: timed out after ${TIMEOUT}s"
        FAILED=$((FAILED + 1))
    elif [ -z "$plan" ] || [ "$plan" -ne $((ok + nok)) ]; then
        echo "  FAIL: incomplete TAP (plan '${plan:-none}', exit $rc): the interpreter crashed?"
        tail -n 20 "$err" | sed 's/^/    | /'
        FAILED=$((FAILED + 1))
    elif [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
        echo "  FAIL: busted exited $rc with no failing test"
        FAILED=$((FAILED + 1))
    fi
    awk '/^not ok [0-9]+ / { on = 1; print; next } /^(ok [0-9]+ |1\.\.)/ { on = 0; next } on && /^#/ { print }' \
        "$tap" | head -n 80 | sed 's/^/    | /'
    grep '^ok ' "$tap" | sed 's/^/    /'
done
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
