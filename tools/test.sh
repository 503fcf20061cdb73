#!/usr/bin/env bash
# The one test command: tools/test.sh
#
# For each Lua flavour (5.1 5.2 5.3 5.4 5.5 jit) it builds the module with cargo, runs
# the busted spec on that flavour's interpreter and runs every example; then `cargo test`,
# `cargo clippy -- -D warnings` per flavour, `cargo fmt --check`, and a luarocks install
# into a fresh tree per flavour (tools/luarocks-test.sh). Lua 5.5 has no Debian package:
# its interpreter and busted's C modules for it are built by tools/build-lua55.sh (run
# here; cached). Every check counts: a missing interpreter or tool, a failed build (the
# 5.5 interpreter's too) or a crashed interpreter is a failure, never a skip.
# The last line is "N passed, M failed"; the exit status is non-zero when M > 0.
#
# Developer shortcut (CI and the README's command run everything):
#   FLAVOURS="5.4 jit" tools/test.sh      # only these flavours
# Logs: build/logs/*.log (the failing parts are printed).
# LLTHREADS_SPEC_TIMEOUT (seconds, default 300) bounds one busted run,
# LLTHREADS_EXAMPLE_TIMEOUT (default 60) one example run.

set -u -o pipefail
# shellcheck source=tools/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$LL_ROOT" || exit 2

FLAVOURS=${FLAVOURS:-$LL_ALL_FLAVOURS}
ll_check_flavours "$FLAVOURS" || exit 2
SELECTED=()
for f in $FLAVOURS; do SELECTED+=("$(ll_flavour "$f")"); done
SPEC_TIMEOUT=${LLTHREADS_SPEC_TIMEOUT:-300}
EXAMPLE_TIMEOUT=${LLTHREADS_EXAMPLE_TIMEOUT:-60}
mkdir -p "$LL_LOGDIR"

PASSED=0
FAILED=0
SKIPPED=0
FAILED_CHECKS=()
declare -A CELL # CELL[flavour,column] -> text for the summary table

pass() { PASSED=$((PASSED + 1)); echo "  PASS $*"; }
fail() {
    FAILED=$((FAILED + 1))
    FAILED_CHECKS+=("$1")
    echo "  FAIL $1${2:+: $2}"
}
# add_counts PASSED FAILED: counts from a runner that reports many results.
add_counts() { PASSED=$((PASSED + $1)); FAILED=$((FAILED + $2)); }
section() { echo; echo "== $* =="; }
rel() { echo "${1#"$LL_ROOT"/}"; }
# show_tail FILE [N]: the last N lines of FILE, indented.
show_tail() {
    [ -s "$1" ] || return 0
    echo "    --- last ${2:-30} lines of $(rel "$1") ---"
    tail -n "${2:-30}" "$1" | sed 's/^/    | /'
}
have() { command -v "$1" >/dev/null 2>&1; }
now() { date +%s; }
T_START=$(now)

# ---------------------------------------------------------------- busted -------
BUSTED=$(command -v busted || true)

# run_spec FLAVOUR INTERP BUILD_DIR
run_spec() {
    local flavour=$1 interp=$2 dir=$3 feature tap err rc counts ok nok skip plan anomaly=""
    feature=$(ll_feature "$flavour")
    tap="$LL_LOGDIR/spec-$feature.tap"
    err="$LL_LOGDIR/spec-$feature.stderr.log"
    if [ -z "$BUSTED" ]; then
        fail "spec $flavour" "busted not found: install it (Debian: apt-get install lua-busted)"
        CELL[$flavour,spec]="no busted"
        return
    fi
    if [ ! -d spec ]; then
        fail "spec $flavour" "no spec/ folder"
        CELL[$flavour,spec]="no spec/"
        return
    fi
    LUA_CPATH="$dir/?.so;;" LLTHREADS_LUA=$(command -v "$interp") LLTHREADS_FLAVOUR=$flavour \
        timeout -k 10 "$SPEC_TIMEOUT" "$interp" "$BUSTED" -o TAP --verbose spec </dev/null >"$tap" 2>"$err"
    rc=$?
    counts=$(awk '
        /^ok [0-9]+ - # SKIP/ { skip++; next }
        /^ok [0-9]+ /         { ok++; next }
        /^not ok [0-9]+ /     { nok++; next }
        /^1\.\.[0-9]+$/       { plan = substr($0, 4) }
        END { printf "%d %d %d %s\n", ok, nok, skip, (plan == "" ? "-" : plan) }' "$tap")
    read -r ok nok skip plan <<<"$counts"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        anomaly="busted timed out after ${SPEC_TIMEOUT}s (LLTHREADS_SPEC_TIMEOUT)"
    elif [ "$plan" = "-" ]; then
        anomaly="no TAP plan: the interpreter crashed or busted failed (exit $rc)"
    elif [ "$plan" -ne $((ok + nok + skip)) ]; then
        anomaly="TAP plan says $plan, $((ok + nok + skip)) results seen (exit $rc)"
    elif [ "$rc" -ne 0 ] && [ "$nok" -eq 0 ]; then
        anomaly="busted exited $rc with no failing test"
    elif [ $((ok + nok)) -eq 0 ]; then
        anomaly="no test ran"
    fi
    add_counts "$ok" "$nok"
    SKIPPED=$((SKIPPED + skip))
    CELL[$flavour,spec]="$ok/$nok"
    [ "$skip" -gt 0 ] && CELL[$flavour,spec]+=" +${skip} pending"
    if [ "$nok" -eq 0 ] && [ -z "$anomaly" ]; then
        echo "  PASS spec $flavour: $ok passed ($(rel "$tap"))"
        if [ "$skip" -gt 0 ]; then
            echo "  WARNING: $skip pending test(s) on $flavour, not counted as passed"
        fi
        return
    fi
    if [ "$nok" -gt 0 ]; then
        FAILED_CHECKS+=("spec $flavour ($nok test(s))")
        echo "  FAIL spec $flavour: $ok passed, $nok failed ($(rel "$tap"), stderr: $(rel "$err"))"
        # Each failing result with the '#' lines busted writes under it (at most 25
        # lines each); "# FILE @ LINE: NAME" lines (--verbose) announce the next test.
        awk '/^not ok [0-9]+ / { on = 1; n = 0; print; next }
             /^(ok [0-9]+ |1\.\.)/ || /^# .* @ [0-9]+: / { on = 0; next }
             on && /^#/ && n++ < 25 { print }' "$tap" | head -n 300 | sed 's/^/    | /'
    fi
    if [ -n "$anomaly" ]; then
        fail "spec $flavour (run)" "$anomaly"
        CELL[$flavour,spec]+=" CRASH"
        # --verbose announces each test as it starts: name the one that never ended.
        last_start=$(awk '/^# .* @ [0-9]+: / { s = $0; next }
                          /^(not )?ok [0-9]+ / { s = "" }
                          END { print substr(s, 3) }' "$tap")
        [ -n "$last_start" ] && echo "    the test running when it stopped: $last_start"
        show_tail "$tap" 15
        show_tail "$err" 30
    fi
}

# ---------------------------------------------------------------- examples -----
# Convention: an example exits 0 and the last line it prints on stdout starts "OK:".
EXAMPLES=()
for ex in examples/*.lua; do [ -f "$ex" ] && EXAMPLES+=("$ex"); done

# run_examples FLAVOUR INTERP BUILD_DIR
run_examples() {
    local flavour=$1 interp=$2 dir=$3 feature ex name out log rc last good=0 bad=0
    feature=$(ll_feature "$flavour")
    if [ ${#EXAMPLES[@]} -eq 0 ]; then
        fail "examples $flavour" "no examples/*.lua found"
        CELL[$flavour,examples]="none"
        return
    fi
    for ex in "${EXAMPLES[@]}"; do
        name=$(basename "$ex" .lua)
        log="$LL_LOGDIR/example-$name-$feature.log"
        out="$LL_LOGDIR/example-$name-$feature.stdout"
        LUA_CPATH="$dir/?.so;;" timeout -k 5 "$EXAMPLE_TIMEOUT" "$interp" "$ex" </dev/null >"$out" 2>"$log.stderr"
        rc=$?
        { echo "\$ $interp $ex  (exit $rc)"; cat "$out"; echo "--- stderr ---"; cat "$log.stderr"; } >"$log"
        rm -f "$log.stderr"
        last=$(grep -v '^[[:space:]]*$' "$out" | tail -n 1)
        if [ "$rc" -eq 0 ] && [ "${last#OK:}" != "$last" ]; then
            good=$((good + 1))
            pass "example $name $flavour: $last"
        else
            bad=$((bad + 1))
            if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
                fail "example $name $flavour" "timed out after ${EXAMPLE_TIMEOUT}s"
            elif [ "$rc" -ne 0 ]; then
                fail "example $name $flavour" "exit status $rc"
            else
                fail "example $name $flavour" "last line is not 'OK: ...': '$last'"
            fi
            show_tail "$log" 25
        fi
    done
    CELL[$flavour,examples]="$good/$bad"
}

# ---------------------------------------------------------------- checks -------
section "cargo fmt --check"
if ! have cargo; then
    fail "fmt" "cargo not found: install a Rust toolchain (https://rustup.rs)"
    FMT="no cargo"
elif ! cargo fmt --version >/dev/null 2>&1; then
    fail "fmt" "rustfmt not found: rustup component add rustfmt"
    FMT="no rustfmt"
elif cargo fmt --check >"$LL_LOGDIR/fmt.log" 2>&1; then
    pass "cargo fmt --check"
    FMT=ok
else
    fail "fmt" "cargo fmt --check wants changes (run cargo fmt)"
    show_tail "$LL_LOGDIR/fmt.log" 40
    FMT=FAIL
fi

for flavour in "${SELECTED[@]}"; do
    feature=$(ll_feature "$flavour")
    interp=$(ll_interp "$flavour")
    section "Lua $flavour: build (--features $feature), spec on $(rel "$interp"), examples"
    t0=$(now)
    dir=""
    if [ "$flavour" = 5.5 ]; then
        ilog="$LL_LOGDIR/build-lua5.5.log"
        if ll_prepare 5.5 "$ilog"; then
            pass "5.5 interpreter and busted's C modules: $(rel "$interp") (tools/build-lua55.sh)"
            if [ -s "$LL_ROOT/build/lua5.5/STAND-INS" ]; then
                echo "  NOTE: built with stand-ins for sources the apt mirror lacks:"
                sed 's/^/    /' "$LL_ROOT/build/lua5.5/STAND-INS"
            fi
        else
            fail "interpreter 5.5" "tools/build-lua55.sh failed ($(rel "$ilog"))"
            show_tail "$ilog" 20
        fi
    fi
    blog="$LL_LOGDIR/build-$feature.log"
    if dir=$(ll_build "$flavour" "$blog"); then
        pass "build $feature -> $(rel "$dir")/llthreads.so, llthreads2.so"
        CELL[$flavour,build]=ok
    else
        fail "build $flavour" "cargo build --release --locked --features $feature failed ($(rel "$blog"))"
        show_tail "$blog" 40
        CELL[$flavour,build]=FAIL
        dir=""
    fi
    if ! have "$interp"; then
        fail "spec $flavour" "interpreter $(rel "$interp") not found: $(ll_interp_hint "$flavour")"
        CELL[$flavour,spec]="no $(basename "$interp")"
        fail "examples $flavour" "interpreter $(rel "$interp") not found"
        CELL[$flavour,examples]="no $(basename "$interp")"
    elif [ -z "$dir" ]; then
        fail "spec $flavour" "not run: the build failed"
        CELL[$flavour,spec]="not run"
        fail "examples $flavour" "not run: the build failed"
        CELL[$flavour,examples]="not run"
    else
        run_spec "$flavour" "$interp" "$dir"
        run_examples "$flavour" "$interp" "$dir"
    fi
    echo "  ($(($(now) - t0)) s)"
done

section "cargo test --locked --features lua54"
TEST_CELL=""
if ! have cargo; then
    fail "cargo test" "cargo not found: install a Rust toolchain (https://rustup.rs)"
    TEST_CELL="no cargo"
else
    tlog="$LL_LOGDIR/cargo-test.log"
    cargo test --locked --features lua54 --target-dir target/lua54 >"$tlog" 2>&1
    rc=$?
    read -r tp tf < <(awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/) p += $(i - 1)
                if ($(i) ~ /^failed;?$/) f += $(i - 1)
            }
        } END { printf "%d %d\n", p, f }' "$tlog")
    add_counts "$tp" "$tf"
    TEST_CELL="$tp passed, $tf failed"
    if [ "$rc" -eq 0 ]; then
        echo "  PASS cargo test: $tp passed, $tf failed"
    else
        [ "$tf" -gt 0 ] && FAILED_CHECKS+=("cargo test ($tf test(s))")
        if [ "$tf" -eq 0 ]; then
            fail "cargo test" "exit status $rc without a failing test (build error?)"
            TEST_CELL+=", exit $rc"
        else
            echo "  FAIL cargo test: $tp passed, $tf failed"
        fi
        grep -E '^(test .* FAILED|error(\[|:)|---- )' "$tlog" | head -n 40 | sed 's/^/    | /'
        show_tail "$tlog" 30
    fi
fi

section "cargo clippy -- -D warnings"
for flavour in "${SELECTED[@]}"; do
    feature=$(ll_feature "$flavour")
    clog="$LL_LOGDIR/clippy-$feature.log"
    if ! have cargo; then
        fail "clippy $flavour" "cargo not found: install a Rust toolchain (https://rustup.rs)"
        CELL[$flavour,clippy]="no cargo"
    elif ! cargo clippy --version >/dev/null 2>&1; then
        fail "clippy $flavour" "clippy not found: rustup component add clippy"
        CELL[$flavour,clippy]="no clippy"
    elif cargo clippy --locked --features "$feature" --target-dir "target/$feature" -- -D warnings >"$clog" 2>&1; then
        pass "clippy --features $feature"
        CELL[$flavour,clippy]=ok
    else
        fail "clippy $flavour" "cargo clippy --features $feature -- -D warnings ($(rel "$clog"))"
        grep -E -A 6 '^(error|warning)' "$clog" | head -n 60 | sed 's/^/    | /'
        CELL[$flavour,clippy]=FAIL
    fi
done

section "luarocks make into a fresh tree, round trip from the installed files"
for flavour in "${SELECTED[@]}"; do
    feature=$(ll_feature "$flavour")
    rlog="$LL_LOGDIR/luarocks-test-$feature.out"
    FLAVOURS=$flavour bash "$LL_ROOT/tools/luarocks-test.sh" 2>&1 | tee "$rlog" | sed 's/^/  /'
    last=$(tail -n 1 "$rlog")
    if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        add_counts "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
        CELL[$flavour,luarocks]="${BASH_REMATCH[1]}/${BASH_REMATCH[2]}"
        [ "${BASH_REMATCH[2]}" -gt 0 ] && FAILED_CHECKS+=("luarocks $flavour")
        # The rockspec shares ll_build's target dir and cargo command line: after a
        # good build above, cargo must find nothing to compile.
        if [ "${CELL[$flavour,build]:-}" = ok ] &&
            grep -q '^ *Compiling ' "$LL_LOGDIR/luarocks-$feature.log" 2>/dev/null; then
            echo "  WARNING: luarocks compiled crates again for $flavour; the rockspec's cargo" \
                "command or environment no longer matches ll_build's ($(rel "$LL_LOGDIR/luarocks-$feature.log"))"
        fi
    else
        fail "luarocks $flavour" "tools/luarocks-test.sh ended without a count line ($(rel "$rlog"))"
        CELL[$flavour,luarocks]=FAIL
    fi
done

# ---------------------------------------------------------------- summary ------
section "summary ($(($(now) - T_START)) s)"
printf '  %-7s %-6s %-22s %-9s %-7s %s\n' flavour build "spec pass/fail" examples clippy luarocks
for flavour in "${SELECTED[@]}"; do
    printf '  %-7s %-6s %-22s %-9s %-7s %s\n' "$flavour" "${CELL[$flavour,build]:--}" \
        "${CELL[$flavour,spec]:--}" "${CELL[$flavour,examples]:--}" \
        "${CELL[$flavour,clippy]:--}" "${CELL[$flavour,luarocks]:--}"
done
echo "  cargo test: ${TEST_CELL}"
echo "  cargo fmt --check: $FMT"
read -r -a ALL <<<"$LL_ALL_FLAVOURS"
if [ "${#SELECTED[@]}" -lt "${#ALL[@]}" ]; then
    echo "  NOTE: FLAVOURS=\"$FLAVOURS\" ran only some flavours; the full run is plain tools/test.sh"
fi
[ "$SKIPPED" -gt 0 ] && echo "  WARNING: $SKIPPED pending spec(s), not counted as passed"
if [ "${#FAILED_CHECKS[@]}" -gt 0 ]; then
    joined=$(printf '%s; ' "${FAILED_CHECKS[@]}")
    echo "  failed: ${joined%; }"
fi
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
