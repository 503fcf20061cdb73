#!/usr/bin/env bash
# Memory check on lua5.4 under valgrind memcheck, in two parts:
#
# 1. A user's own run: `valgrind --leak-check=full lua5.4 tools/valgrind-exit.lua`
#    with valgrind's default settings and no suppressions (a script that starts,
#    joins and interrupts threads in every mode, then exits). It must report
#    "ERROR SUMMARY: 0 errors": nothing of the module may be left at exit, not even
#    the thread-local storage of parked pool threads ("possibly lost"). It runs twice:
#    as users run it (child states pack small objects into chunks of their own heap,
#    src/heap.rs) and with LLTHREADS_MALLOC=system (every Lua object its own malloc
#    block). Takes seconds.
# 2. The busted specs, with LLTHREADS_MALLOC=system, so that memcheck sees each Lua
#    object of a child state and catches a read of one already freed (inside the
#    packed heap it is still memory of a live chunk). The heap itself is checked by
#    part 1 and by its unit tests (cargo test):
#
#   tools/valgrind.sh                                   # every spec in spec/
#   tools/valgrind.sh spec/copy_spec.lua spec/faults_spec.lua   # only these
#   LLTHREADS_VALGRIND_SPECS=0 tools/valgrind.sh        # part 1 only
#
# For the specs memcheck runs with --leak-check=full --errors-for-leak-kinds=definite,indirect
# --error-exitcode=99 --suppressions=tools/valgrind.supp --fair-sched=yes, at the
# modest stress size (LLTHREADS_STRESS=1). Sub-processes the specs start (the exit tests) run natively.
# It reports memcheck's errors and the bytes definitely and indirectly lost, and
# exits non-zero when there is any of them, when a spec fails or when the run did
# not complete. The whole spec folder takes about 6 minutes on 2 cores.
#
# Uses build/lua54/llthreads.so made by tools/test.sh; builds it the same way
# (tools/lib.sh ll_build) when it is missing, or always with LLTHREADS_REBUILD=1.
# LLTHREADS_VALGRIND_TIMEOUT (seconds, default 3600) bounds the run.
# Logs: build/logs/valgrind/ (exit.<heap>.memcheck.log and exit.<heap>.out for part 1;
# memcheck.<pid>.log per process and spec.tap for part 2).

set -u -o pipefail
# shellcheck source=tools/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LL_ROOT" || exit 2

TIMEOUT=${LLTHREADS_VALGRIND_TIMEOUT:-3600}
LOGDIR="$LL_LOGDIR/valgrind"
INTERP=lua5.4

if [ $# -gt 0 ]; then
    SPECS=("$@")
else
    SPECS=()
    for s in spec/*_spec.lua; do SPECS+=("$s"); done
fi

for tool in valgrind "$INTERP" busted; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "valgrind.sh: $tool not found (Debian: apt-get install valgrind lua5.4 lua-busted)" >&2
        exit 2
    fi
done

dir="$LL_ROOT/build/lua54"
if [ "${LLTHREADS_REBUILD:-0}" = 1 ] || [ ! -f "$dir/llthreads.so" ] || [ ! -f "$dir/llthreads2.so" ]; then
    echo "building lua54 (cargo build --release --locked --features lua54 --target-dir target/lua54)"
    mkdir -p "$LL_LOGDIR"
    if ! dir=$(ll_build 5.4 "$LL_LOGDIR/build-lua54.log"); then
        echo "valgrind.sh: build failed, see build/logs/build-lua54.log" >&2
        exit 2
    fi
else
    newer=$(find src Cargo.toml Cargo.lock -newer "$dir/llthreads.so" 2>/dev/null | head -n 1)
    [ -n "$newer" ] && echo "WARNING: $newer is newer than build/lua54/llthreads.so (LLTHREADS_REBUILD=1 rebuilds)"
fi

rm -rf "$LOGDIR"
mkdir -p "$LOGDIR"

# Part 1: default settings, as a user would run it; then with every Lua object in its
# own malloc block.
problems=0
for heap in packed system; do
    exit_log="$LOGDIR/exit.$heap.memcheck.log"
    exit_out="$LOGDIR/exit.$heap.out"
    if [ "$heap" = system ]; then export LLTHREADS_MALLOC=system; else unset LLTHREADS_MALLOC; fi
    echo "valgrind memcheck (default settings), $INTERP tools/valgrind-exit.lua, $heap heap"
    LUA_CPATH="$dir/?.so;;" timeout -k 10 600 valgrind --leak-check=full --log-file="$exit_log" \
        "$INTERP" tools/valgrind-exit.lua </dev/null >"$exit_out" 2>&1
    exit_rc=$?
    exit_summary=$(grep -h 'ERROR SUMMARY' "$exit_log" 2>/dev/null | sed 's/^==[0-9]*== //' | tail -n 1)
    echo "exit script ($heap heap): ${exit_summary:-no ERROR SUMMARY} (exit $exit_rc)"
    if [ "$exit_rc" -ne 0 ] || ! grep -q 'valgrind-exit: ok' "$exit_out"; then
        echo "FAIL: tools/valgrind-exit.lua did not finish (log: ${exit_out#"$LL_ROOT"/})"
        sed 's/^/    | /' "$exit_out" | tail -n 20
        problems=1
    fi
    case "$exit_summary" in
        "ERROR SUMMARY: 0 errors "*) ;;
        *)
            echo "FAIL: memcheck found problems in the exit script; the first reports:"
            grep -E -A 20 '^==[0-9]+== ([0-9,]+ bytes in [0-9,]+ blocks are|Invalid|Conditional|Use of|Syscall param|Mismatched)' \
                "$exit_log" | head -n 80 | sed 's/^/    | /'
            problems=1
            ;;
    esac
done
if [ "${LLTHREADS_VALGRIND_SPECS:-1}" = 0 ]; then
    [ "$problems" -eq 0 ] && echo "OK: exit script clean"
    exit "$problems"
fi

# Part 2. --fair-sched=yes: valgrind runs one thread at a time, and its default lock
# lets a thread spinning in Lua code keep it, starving the parent that would
# interrupt it (the interrupt specs then see the child run to its end).
echo "valgrind memcheck, $INTERP, ${#SPECS[@]} spec file(s): ${SPECS[*]}"
t0=$(date +%s)
LUA_CPATH="$dir/?.so;;" LLTHREADS_LUA=$(command -v "$INTERP") LLTHREADS_FLAVOUR=5.4 LLTHREADS_STRESS=1 \
    LLTHREADS_MALLOC=system timeout -k 10 "$TIMEOUT" valgrind --tool=memcheck --leak-check=full --fair-sched=yes \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=99 \
    --suppressions="$LL_ROOT/tools/valgrind.supp" --num-callers=40 \
    --log-file="$LOGDIR/memcheck.%p.log" \
    "$INTERP" "$(command -v busted)" -o TAP "${SPECS[@]}" </dev/null >"$LOGDIR/spec.tap" 2>"$LOGDIR/spec.stderr.log"
rc=$?
secs=$(($(date +%s) - t0))

ok=$(grep -c '^ok ' "$LOGDIR/spec.tap")
nok=$(grep -c '^not ok ' "$LOGDIR/spec.tap")
plan=$(sed -n 's/^1\.\.\([0-9]*\)$/\1/p' "$LOGDIR/spec.tap")

# The busted process's own log is the one with the final summary; processes that
# busted forks (popen, os.execute) log only until they exec another program.
main=""
for f in "$LOGDIR"/memcheck.*.log; do
    if grep -q 'ERROR SUMMARY' "$f" && grep -q "Command: $INTERP .*busted" "$f"; then main=$f; fi
done

if [ -z "$main" ]; then
    echo "FAIL: no memcheck summary for the busted process (exit $rc): the run did not complete"
    problems=1
    errors="?" definite="?" indirect="?"
else
    errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$main" | tail -n 1 | tr -d ,)
    definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$main" | tail -n 1 | tr -d ,)
    indirect=$(sed -n 's/.*indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$main" | tail -n 1 | tr -d ,)
    possibly=$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$main" | tail -n 1 | tr -d ,)
    # with no leak at all memcheck prints "All heap blocks were freed" and no lines
    definite=${definite:-0} indirect=${indirect:-0} possibly=${possibly:-0}
    suppressed=$(sed -n 's/.*ERROR SUMMARY: .*suppressed: \([0-9,]*\) from.*/\1/p' "$main" | tail -n 1)
    echo "memcheck ($(basename "$main")): $errors errors, $definite bytes definitely lost," \
        "$indirect bytes indirectly lost ($possibly possibly lost, not counted; $suppressed suppressed)"
    if [ "$errors" != 0 ] || [ "$definite" != 0 ] || [ "$indirect" != 0 ]; then
        problems=1
        echo "FAIL: memcheck found problems; the first reports:"
        grep -E -A 30 '^==[0-9]+== (Invalid|Conditional|Use of|Syscall param|Mismatched|Source and destination|[0-9,]+ bytes in [0-9,]+ blocks are (definitely|indirectly))' \
            "$main" | head -n 120 | sed 's/^/    | /'
    fi
fi

echo "specs: $ok passed, $nok failed in ${secs} s (exit $rc; TAP: ${LOGDIR#"$LL_ROOT"/}/spec.tap)"
if [ -z "$plan" ] || [ "$plan" -ne $((ok + nok)) ]; then
    echo "FAIL: incomplete TAP (plan '${plan:-none}'): busted or the interpreter died"
    problems=1
fi
if [ "$nok" -gt 0 ]; then
    problems=1
    awk '/^not ok [0-9]+ / { on = 1; print; next } /^(ok [0-9]+ |1\.\.)/ { on = 0; next } on && /^#/ { print }' \
        "$LOGDIR/spec.tap" | head -n 60 | sed 's/^/    | /'
fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "FAIL: timed out after ${TIMEOUT}s (LLTHREADS_VALGRIND_TIMEOUT)"
    problems=1
fi
if [ "$problems" -eq 0 ]; then
    echo "OK: exit script 0 errors; specs 0 errors, 0 bytes definitely lost, 0 bytes indirectly lost"
fi
exit "$problems"
