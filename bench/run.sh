#!/usr/bin/env bash
# Runs the benchmark suite: bench/run.sh [flavour...]
#   flavours: 5.4 and jit by default; also 5.1, 5.2, 5.3 (lua5.4 / luajit / lua5.1 ... must be on PATH)
#   and 5.5 (its interpreter, build/lua5.5/bin/lua5.5, is built by tools/build-lua55.sh when missing)
# Builds build/<flavour>/llthreads.so (and llthreads2.so) with cargo when missing.
# Environment:
#   BENCH_RUNS=7            measured runs per figure (median, min, max are printed)
#   BENCH_SCRIPTS="spawn memory copy scaling"   which scripts to run
#   BENCH_CPATH=DIR         benchmark another llthreads2-compatible build instead:
#                           DIR/<flavour>/?.so is put first on LUA_CPATH, nothing is built
#   BENCH_MODULE=llthreads  module name to require (e.g. llthreads2)
#   BENCH_REBUILD=1         rebuild the module even when present
#   plus each script's own knobs (BENCH_SPAWN_N, BENCH_MEM_THREADS, BENCH_SCALING_MS,
#   BENCH_SCALING_THREADS, BENCH_COPY_ONLY, BENCH_MIN_BATCH_MS): see the scripts.
# Output: `name median=X min=Y max=Z runs=N ...` lines, '#' lines are notes.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
flavours=("$@")
[ ${#flavours[@]} -eq 0 ] && flavours=(5.4 jit)
scripts=(${BENCH_SCRIPTS:-spawn memory copy scaling})

for f in "${flavours[@]}"; do
  case "$f" in
    5.1|lua5.1|lua51) f=5.1; lua=lua5.1; feature=lua51 ;;
    5.2|lua5.2|lua52) f=5.2; lua=lua5.2; feature=lua52 ;;
    5.3|lua5.3|lua53) f=5.3; lua=lua5.3; feature=lua53 ;;
    5.4|lua5.4|lua54) f=5.4; lua=lua5.4; feature=lua54 ;;
    5.5|lua5.5|lua55) f=5.5; lua="$root/build/lua5.5/bin/lua5.5"; feature=lua55 ;;
    jit|luajit)       f=jit; lua=luajit; feature=luajit ;;
    *) echo "unknown flavour: $f (use 5.1 5.2 5.3 5.4 5.5 jit)" >&2; exit 2 ;;
  esac
  if [ "$f" = 5.5 ] && [ ! -x "$lua" ]; then
    bash tools/build-lua55.sh >&2
  fi
  command -v "$lua" >/dev/null || { echo "$lua not found" >&2; exit 1; }
  if [ -n "${BENCH_CPATH:-}" ]; then
    cpath="$BENCH_CPATH/$f/?.so;;"
  else
    so="build/$f/llthreads.so"
    if [ ! -f "$so" ] || [ -n "${BENCH_REBUILD:-}" ]; then
      echo "# building $so (cargo, release, feature $feature)" >&2
      cargo build --release --locked --features "$feature" --target-dir "target/$f" >&2
      mkdir -p "build/$f"
      cp "target/$f/release/libllthreads.so" "build/$f/llthreads.so.tmp"
      mv -f "build/$f/llthreads.so.tmp" "build/$f/llthreads.so"
      cp "build/$f/llthreads.so" "build/$f/llthreads2.so.tmp"
      mv -f "build/$f/llthreads2.so.tmp" "build/$f/llthreads2.so"
    fi
    cpath="$root/build/$f/?.so;;"
  fi
  [ -n "${BENCH_BUILD_ONLY:-}" ] && continue
  echo "# flavour=$f interpreter=$($lua -v 2>&1 | head -1) cpath=$cpath host=$(nproc)cpu load=$(cut -d' ' -f1-3 /proc/loadavg)"
  for s in "${scripts[@]}"; do
    LUA_CPATH="$cpath" "$lua" "bench/$s.lua" | sed "/^[a-z]/s/\$/ flavour=$f/"
  done
done
