-- Summarises bench/run.sh outputs against the targets of the benchmark issue.
--   lua bench/compare.lua ours1.txt [ours2.txt ...] [-- c1.txt c2.txt ...]
-- Files after `--` are runs of another module (e.g. the C original, BENCH_CPATH=...)
-- shown side by side. Several files of one side (repeated run.sh invocations) are
-- merged: median of their medians, smallest min, largest max.
-- Prints a Markdown table.
local ours_files, other_files, side = {}, {}, nil
for _, a in ipairs(arg) do
  if a == "--" then side = other_files
  else table.insert(side or ours_files, a) end
end

-- The C original measured on a 2-core Linux box (the issue's figures), and the
-- targets for this module: ratio = ours / C figure, goal is the largest ratio allowed
-- (or, for speedups, the smallest speedup allowed).
local targets = {
  { "spawn_join_us",          "create+start+join (µs)",   { ["5.4"] = 303,  jit = 268 },  "max_ratio", 0.5 },
  { "spawn_join_cpu_us",      "create+start+join, process CPU time (µs)", nil, nil, nil },
  { "new_close_us",           "new() never started, collected (µs)", nil, nil, nil },
  { "spawn_batch16_us",       "16 started, then 16 joined (µs per thread)", nil, nil, nil },
  { "mem_rss_kib_per_thread", "memory per live thread (KiB)", { ["5.4"] = 35.6, jit = 57.9 }, "max_ratio", 1.0 },
  { "copy_baseline_ms",       "round trip with no argument (ms)", nil, nil, nil },
  { "copy_array100k_ms",      "100k-number array round trip (ms)", { ["5.4"] = 18.2, jit = 16.8 }, "max_ratio", 1.0 },
  { "copy_strkeys10k_ms",     "10k string-key table round trip (ms)", nil, nil, nil },
  { "copy_nested11k_ms",      "11,111 nested tables round trip (ms)", { ["5.4"] = 32.4, jit = 25.9 }, "max_ratio", 1.0 },
  { "copy_string16m_ms",      "16 MiB string round trip (ms)", { ["5.4"] = 27.6, jit = 17.0 }, "max_ratio", 1.0 },
  { "scaling_speedup_quiet_T2", "2-thread CPU speedup, quiet rounds (2 cores)", { ["5.4"] = "1.67-2.0", jit = "1.67-2.0" }, "min_value", 1.95 },
  { "scaling_speedup_T2",     "2-thread CPU speedup, all rounds (2 cores)", nil, nil, nil },
  { "scaling_process_speedup_P2", "control: 2 processes, no threads (2 cores)", nil, nil, nil },
  { "scaling_speedup_quiet_T16", "16-thread CPU speedup, quiet rounds (2 cores here)", nil, nil, nil },
}

local function load(files)
  local acc = {}
  for _, path in ipairs(files) do
    for line in io.lines(path) do
      local name, med, mn, mx, rest = line:match("^(%S+) median=(%S+) min=(%S+) max=(%S+) (.*)$")
      local fl = rest and rest:match("flavour=(%S+)")
      if name and fl and tonumber(med) then
        local key = fl .. " " .. name
        local e = acc[key] or { meds = {}, min = math.huge, max = -math.huge }
        acc[key] = e
        e.meds[#e.meds + 1] = tonumber(med)
        e.min = math.min(e.min, tonumber(mn))
        e.max = math.max(e.max, tonumber(mx))
      end
    end
  end
  for _, e in pairs(acc) do
    table.sort(e.meds)
    local n = #e.meds
    e.median = n % 2 == 1 and e.meds[(n + 1) / 2] or (e.meds[n / 2] + e.meds[n / 2 + 1]) / 2
  end
  return acc
end

local function fmt(x)
  if type(x) ~= "number" then return tostring(x) end
  if math.abs(x) >= 100 then return string.format("%.0f", x) end
  if math.abs(x) >= 10 then return string.format("%.1f", x) end
  return string.format("%.2f", x)
end

local ours, other = load(ours_files), load(other_files)
local has_other = #other_files > 0
print("| figure | flavour | ours: median (min–max) |" .. (has_other and " C original here: median (min–max) | ours / C here |" or "")
  .. " issue's C figure | target for ours | ours / issue's C | met |")
print("|---|---|---|" .. (has_other and "---|---|" or "") .. "---|---|---|---|")
for _, fl in ipairs({ "5.4", "jit" }) do
  for _, t in ipairs(targets) do
    local name, label, cfig, kind, goal = t[1], t[2], t[3], t[4], t[5]
    local e = ours[fl .. " " .. name]
    if e then
      local row = { label, fl == "jit" and "LuaJIT" or "Lua " .. fl,
        string.format("%s (%s–%s)", fmt(e.median), fmt(e.min), fmt(e.max)) }
      if has_other then
        local o = other[fl .. " " .. name]
        row[#row + 1] = o and string.format("%s (%s–%s)", fmt(o.median), fmt(o.min), fmt(o.max)) or "–"
        row[#row + 1] = o and string.format("%.2f", e.median / o.median) or "–"
      end
      local c = cfig and cfig[fl]
      if kind == "max_ratio" then
        local ratio = e.median / c
        row[#row + 1] = fmt(c)
        row[#row + 1] = string.format("≤ %s (%.2f× C)", fmt(c * goal), goal)
        row[#row + 1] = string.format("%.2f", ratio)
        row[#row + 1] = ratio <= goal and "yes" or "**no**"
      elseif kind == "min_value" then
        row[#row + 1] = c
        row[#row + 1] = "≥ " .. fmt(goal)
        row[#row + 1] = "–"
        row[#row + 1] = e.median >= goal and "yes" or "**no**"
      else
        row[#row + 1] = "–"; row[#row + 1] = "–"; row[#row + 1] = "–"; row[#row + 1] = "–"
      end
      print("| " .. table.concat(row, " | ") .. " |")
    end
  end
end
