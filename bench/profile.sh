#!/usr/bin/env bash
# Instruction-count profiles with callgrind (stable on a noisy machine):
#   bench/profile.sh [flavour] [case...]
#   flavour: 5.4 (default) or jit, 5.1, 5.2, 5.3; cases: spawn new_close array100k
#   strkeys10k nested11k string16m (default: all).
# For each case, runs bench/prof.lua CASE 0 and CASE N under callgrind and prints
# instructions per operation ((Ir(N) - Ir(0)) / N, all threads), then the top
# functions (inclusive and self) of the N run. Output files stay in $BENCH_PROF_DIR
# (default /tmp/llthreads-prof). BENCH_CPATH=DIR profiles DIR/<flavour>/llthreads.so
# instead of build/<flavour> (e.g. the C original), as in run.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
f="${1:-5.4}"; shift || true
case "$f" in
  5.1) lua=lua5.1 ;; 5.2) lua=lua5.2 ;; 5.3) lua=lua5.3 ;; 5.4) lua=lua5.4 ;; jit) lua=luajit ;;
  *) echo "unknown flavour $f" >&2; exit 2 ;;
esac
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(spawn new_close array100k strkeys10k nested11k string16m)
dir="${BENCH_PROF_DIR:-/tmp/llthreads-prof}"
mkdir -p "$dir"
if [ -n "${BENCH_CPATH:-}" ]; then cpath="$BENCH_CPATH/$f/?.so;;"; tag=other; else
  [ -f "build/$f/llthreads.so" ] || BENCH_BUILD_ONLY=1 bench/run.sh "$f" >/dev/null
  cpath="$root/build/$f/?.so;;"; tag=ours; fi

total_ir() { grep -E '^(summary|totals):' "$1" | head -1 | awk '{print $2}'; }

for c in "${cases[@]}"; do
  case "$c" in spawn|new_close) n=200 ;; string16m) n=10 ;; *) n=10 ;; esac
  out0="$dir/$tag-$f-$c-0.cg"; outn="$dir/$tag-$f-$c-$n.cg"
  LUA_CPATH="$cpath" valgrind --tool=callgrind --callgrind-out-file="$out0" "$lua" bench/prof.lua "$c" 0 2>/dev/null
  LUA_CPATH="$cpath" valgrind --tool=callgrind --callgrind-out-file="$outn" "$lua" bench/prof.lua "$c" "$n" 2>/dev/null
  i0=$(total_ir "$out0"); in=$(total_ir "$outn")
  echo "prof_${c}_instr median=$(( (in - i0) / n )) min=$(( (in - i0) / n )) max=$(( (in - i0) / n )) runs=1 flavour=$f module=$tag ops=$n file=$outn"
  if [ -n "${BENCH_PROF_VERBOSE:-}" ]; then
    callgrind_annotate --inclusive=yes "$outn" 2>/dev/null | sed -n '1,45p'
    callgrind_annotate "$outn" 2>/dev/null | sed -n '1,40p'
  fi
done
