#!/usr/bin/env bash
# Side by side in one run: the same bench script against several builds, taking turns
# (A B A B ...), so that every build sees the same machine load on average.
#   bench/alternate.sh FLAVOUR ROUNDS OUTDIR NAME=CPATH_DIR [NAME=CPATH_DIR ...]
#     CPATH_DIR/<flavour>/llthreads.so is the build named NAME (as BENCH_CPATH)
#   e.g. bench/alternate.sh 5.4 8 /tmp/alt ours=/tmp/ours c=/tmp/cll
# Environment: BENCH_SCRIPT (spawn), plus the script's own knobs (BENCH_RUNS, ...);
# ALT_SUMMARY_ONLY=1 only prints the summary of OUTDIR's files (builds in the order given).
# Writes OUTDIR/<name>-<round>.txt (bench/run.sh's format) and prints, for each figure,
# every build's median of round medians with the range of all runs, and the median
# (with the range) over rounds of the first build's figure divided by this build's
# figure of the same round.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 4 ] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
flavour=$1 rounds=$2 out=$3
shift 3
# shellcheck source=tools/lib.sh
. "$root/tools/lib.sh"
flavour=$(ll_flavour "$flavour") || { echo "unknown flavour: $1" >&2; exit 2; }
lua=$(ll_interp "$flavour")
script=${BENCH_SCRIPT:-spawn}
mkdir -p "$out"
names=()
for spec in "$@"; do names+=("${spec%%=*}"); done
for r in $(seq 1 "$rounds"); do
  [ -n "${ALT_SUMMARY_ONLY:-}" ] && break
  for spec in "$@"; do
    name=${spec%%=*} dir=${spec#*=}
    {
      echo "# round=$r build=$name load=$(cut -d' ' -f1-3 /proc/loadavg)"
      LUA_CPATH="$dir/$flavour/?.so;;" "$lua" "$root/bench/$script.lua" | sed "/^[a-z]/s/\$/ flavour=$flavour/"
    } >"$out/$name-$r.txt"
  done
done
lua5.4 - "$out" "$rounds" "${names[@]}" <<'EOF'
local out, rounds = arg[1], tonumber(arg[2])
local names = { table.unpack(arg, 3) }
local function median(xs)
  table.sort(xs)
  local n = #xs
  if n == 0 then return 0 / 0 end
  return n % 2 == 1 and xs[(n + 1) / 2] or (xs[n / 2] + xs[n / 2 + 1]) / 2
end
local figs, order = {}, {} -- figs[fig][name][round] = { med, min, max }
for _, name in ipairs(names) do
  for r = 1, rounds do
    for line in io.lines(out .. "/" .. name .. "-" .. r .. ".txt") do
      local fig, med, mn, mx = line:match("^(%S+) median=(%S+) min=(%S+) max=(%S+)")
      if fig then
        if not figs[fig] then figs[fig] = {}; order[#order + 1] = fig end
        figs[fig][name] = figs[fig][name] or {}
        figs[fig][name][r] = { tonumber(med), tonumber(mn), tonumber(mx) }
      end
    end
  end
end
local base = names[1]
for _, fig in ipairs(order) do
  local cells = {}
  for _, name in ipairs(names) do
    local meds, lo, hi = {}, math.huge, -math.huge
    for r = 1, rounds do
      local v = figs[fig][name] and figs[fig][name][r]
      if v then meds[#meds + 1] = v[1]; lo = math.min(lo, v[2]); hi = math.max(hi, v[3]) end
    end
    local cell = ("%s %.1f (%.1f-%.1f)"):format(name, median(meds), lo, hi)
    if name ~= base then
      local ratios = {}
      for r = 1, rounds do
        local a, b = figs[fig][base] and figs[fig][base][r], figs[fig][name] and figs[fig][name][r]
        if a and b then ratios[#ratios + 1] = a[1] / b[1] end
      end
      local m = median(ratios) -- sorts
      cell = cell .. (" %s/%s=%.2f (%.2f-%.2f)"):format(base, name, m, ratios[1] or 0 / 0, ratios[#ratios] or 0 / 0)
    end
    cells[#cells + 1] = cell
  end
  print(fig .. ": " .. table.concat(cells, "; "))
end
EOF
