#!/usr/bin/env bash
# Channels side by side: this module's (bench/channel.lua), Lua Lanes lindas and effil
# channels (bench/peers/), alternating ours, Lanes, effil, ours, Lanes, effil, ... in
# one invocation, then one table (bench/chantable.lua).
#   LANES_CPATH=DIR EFFIL_CPATH=DIR bench/channels.sh [flavour...]     (default: 5.4 jit)
# DIR: the --out folder of tools/build-peers.sh (DIR/<flavour>/lanes_core.so, lanes.lua,
# effil.so); see that script for getting and building the peers. A peer whose build is
# missing for a flavour is left out (effil has none for 5.4). Our module is built with
# cargo (tools/lib.sh ll_build) unless BENCH_CPATH=DIR gives DIR/<flavour>/llthreads.so.
# Environment:
#   BENCH_CHAN_ROUNDS=3      how many times each implementation runs per flavour
#   BENCH_CHAN_BASE=DIR      also run another build of our module, DIR/<flavour>/llthreads.so
#                            (e.g. the commit before a change), as "base", right before
#                            ours in every round: before/after from the same run
#   BENCH_CHAN_PEERS=0       leave the peers out (ours, and base when given, only)
#   BENCH_CHAN_OUT=DIR       where the raw outputs go (default build/bench-channels/<time>)
#   BENCH_CHAN_TIMEOUT=900   seconds before one script run is killed (a hang is a result too)
#   BENCH_CHAN_ONLY, BENCH_RUNS, BENCH_MIN_BATCH_MS, ...: see bench/chanlib.lua
# Not part of tools/test.sh or CI: it needs the peers, built by hand.
set -euo pipefail
# shellcheck source=tools/lib.sh disable=SC1091
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tools/lib.sh"
cd "$LL_ROOT"

flavours=()
for a in "$@"; do flavours+=("$(ll_flavour "$a")"); done
[ ${#flavours[@]} -gt 0 ] || flavours=(5.4 jit)
rounds=${BENCH_CHAN_ROUNDS:-3}
peers=${BENCH_CHAN_PEERS:-1}
out=${BENCH_CHAN_OUT:-build/bench-channels/$(date +%Y%m%d-%H%M%S)}
limit=${BENCH_CHAN_TIMEOUT:-900}
mkdir -p "$out"

interpreter() {
    case "$1" in
        jit) echo luajit ;;
        *) echo "lua$1" ;;
    esac
}

# peer_dir ENV_VALUE FLAVOUR FILE: the folder holding FILE for FLAVOUR, or nothing.
peer_dir() {
    local root=$1 f=$2 file=$3
    [ -n "$root" ] || return 0
    if [ -f "$root/$f/$file" ]; then echo "$root/$f"; elif [ -f "$root/$file" ]; then echo "$root"; fi
}

declare -A cpath impls
for f in "${flavours[@]}"; do
    lua=$(interpreter "$f")
    command -v "$lua" >/dev/null || { echo "$lua not found" >&2; exit 1; }
    if [ -n "${BENCH_CPATH:-}" ]; then
        cpath[$f]="$BENCH_CPATH/$f/?.so;;"
    else
        echo "# building our module for $f (cargo, release; log $LL_LOGDIR/bench-channels-$f.log)" >&2
        d=$(ll_build "$f" "$LL_LOGDIR/bench-channels-$f.log") || {
            echo "build failed for $f; see $LL_LOGDIR/bench-channels-$f.log" >&2
            exit 1
        }
        cpath[$f]="$d/?.so;;"
    fi
    impls[$f]=ours
    if [ -n "${BENCH_CHAN_BASE:-}" ]; then
        if [ ! -f "$BENCH_CHAN_BASE/$f/llthreads.so" ]; then
            echo "BENCH_CHAN_BASE=$BENCH_CHAN_BASE: no $f/llthreads.so there" >&2
            exit 1
        fi
        cpath[base-$f]="$(cd "$BENCH_CHAN_BASE/$f" && pwd)/?.so;;"
        impls[$f]="base ours"
    fi
    if [ "$peers" = 0 ]; then
        continue
    fi
    if [ -n "$(peer_dir "${LANES_CPATH:-}" "$f" lanes_core.so)" ]; then
        impls[$f]+=" lanes"
    else
        echo "# lanes: no build for $f under LANES_CPATH='${LANES_CPATH:-}': left out" >&2
    fi
    if [ -n "$(peer_dir "${EFFIL_CPATH:-}" "$f" effil.so)" ]; then
        impls[$f]+=" effil"
    else
        echo "# effil: no build for $f under EFFIL_CPATH='${EFFIL_CPATH:-}': left out" >&2
    fi
done

script_of() {
    case "$1" in
        ours | base) echo bench/channel.lua ;;
        lanes) echo bench/peers/lanes_channel.lua ;;
        effil) echo bench/peers/effil_channel.lua ;;
    esac
}

echo "# channels: flavours=${flavours[*]} rounds=$rounds out=$out host=$(nproc)cpu load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo "start: $(uptime)" >"$out/load.txt"
for ((r = 1; r <= rounds; r++)); do
    for f in "${flavours[@]}"; do
        for impl in ${impls[$f]}; do
            file="$out/$impl-$f.txt"
            echo "# round $r/$rounds: $impl on $f, load=$(cut -d' ' -f1-3 /proc/loadavg)" >&2
            echo "# round=$r load=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$file"
            rc=0
            cp=${cpath[$f]}
            [ "$impl" = base ] && cp=${cpath[base-$f]}
            LUA_CPATH="$cp" LANES_CPATH="${LANES_CPATH:-}" EFFIL_CPATH="${EFFIL_CPATH:-}" \
                timeout "$limit" "$(interpreter "$f")" "$(script_of "$impl")" >>"$file" 2>"$out/stderr.tmp" || rc=$?
            if [ "$rc" -ne 0 ]; then
                msg=$(tail -n 3 "$out/stderr.tmp" | tr '\n' ' ')
                [ "$rc" -eq 124 ] && msg="killed after ${limit}s (hang?) $msg"
                echo "! round $r: exit $rc: $msg" >>"$file"
                echo "# $impl on $f: exit $rc: $msg" >&2
            fi
            cat "$out/stderr.tmp" >>"$out/stderr.txt"
        done
    done
done
rm -f "$out/stderr.tmp"
echo "end: $(uptime)" >>"$out/load.txt"
lua=$(command -v lua5.4 || command -v luajit || command -v lua)
"$lua" bench/chantable.lua "$out" | tee "$out/table.md"
echo "# raw outputs: $out" >&2
