-- Table of bench/channels.sh results: lua5.4 bench/chantable.lua DIR
-- DIR holds <impl>-<flavour>.txt files (impl: ours, base, lanes, effil), each the output of
-- one or more runs of bench/channel.lua or bench/peers/*_channel.lua. Several runs of
-- the same figure are merged as BENCHMARKS.md merges them: median of the medians,
-- smallest min, largest max. Prints a Markdown table.
local dir = assert(arg[1], "usage: chantable.lua DIR")

local ALL_IMPLS = { "base", "ours", "lanes", "effil" }
local TITLES = { base = "ours, base build", ours = "ours", lanes = "Lanes 4.0 linda", effil = "effil 1.2 channel" }
local PEERS = { lanes = true, effil = true }
local FLAVOURS = { "5.4", "jit", "5.3", "5.2", "5.1" }
local ROWS = {
  { "numbers_100k", "100,000 one-number messages, 1 → 1", "≤ 25 ms" },
  { "strings_1k_10k", "10,000 × 1 KiB string, 1 → 1", "≤ 6 ms" },
  { "pingpong_rtt", "ping-pong round trip (batch mean)", "≤ 20 µs (aim)" },
  { "pingpong_p50", "ping-pong round trip, median of each timed", "≤ 20 µs (aim)" },
  { "pingpong_p90", "ping-pong round trip, 90th percentile", "" },
  { "mpmc_8x8_cap64", "8 × 8 on one channel of 64", "no collapse vs 1 × 1" },
  { "mpmc_1x1_cap64", "1 × 1 on one channel of 64", "" },
  { "mem_queued_per_msg", "heap per queued number (1,000,000 queued)", "≤ 64 B" },
  { "mem_after_drain", "RSS above start, all received", "≈ 0" },
  { "mem_after_collect", "RSS above start, channel collected", "≈ 0" },
}
local HIGHER_IS_BETTER = { ["msg/s"] = true }

local function median(xs)
  table.sort(xs)
  local n = #xs
  if n == 0 then return nil end
  if n % 2 == 1 then return xs[(n + 1) / 2] end
  return (xs[n / 2] + xs[n / 2 + 1]) / 2
end

local function fmt(x)
  if x == nil then return "–" end
  local ax = math.abs(x)
  if ax >= 1e6 then return string.format("%.2f M", x / 1e6) end
  if ax >= 1e4 then return string.format("%.0f k", x / 1e3) end
  if ax >= 100 then return string.format("%.0f", x) end
  if ax >= 10 then return string.format("%.1f", x) end
  return string.format("%.2f", x)
end

-- results[flavour][impl][name] = { medians = {...}, min, max, unit }
local results, notes, present = {}, {}, {}
for _, f in ipairs(FLAVOURS) do
  for _, impl in ipairs(ALL_IMPLS) do
    local fh = io.open(dir .. "/" .. impl .. "-" .. f .. ".txt", "r")
    if fh then
      results[f] = results[f] or {}
      present[impl] = true
      local r = {}
      results[f][impl] = r
      for line in fh:lines() do
        local name, med, unit, lo, hi = line:match("^([%w_]+) (%S+) (%S+) %((%S+)\226\128\147(%S+)%)")
        if name then
          local e = r[name] or { medians = {}, unit = unit }
          r[name] = e
          e.medians[#e.medians + 1] = tonumber(med)
          lo, hi = tonumber(lo), tonumber(hi)
          if not e.min or lo < e.min then e.min = lo end
          if not e.max or hi > e.max then e.max = hi end
        elseif line:match("^# channels:") then
          notes[impl .. "-" .. f] = line
        elseif line:match("^!") then
          notes[impl .. "-" .. f .. "!"] = line
        end
      end
      fh:close()
    end
  end
end

local function cell(e)
  if not e then return "–" end
  local m, lo, hi, unit = median(e.medians), e.min, e.max, e.unit
  if unit == "KiB" and m >= 1024 then
    m, lo, hi, unit = m / 1024, lo / 1024, hi / 1024, "MiB"
  end
  return string.format("%s %s (%s–%s)", fmt(m), unit, fmt(lo), fmt(hi))
end

local IMPLS = {}
for _, impl in ipairs(ALL_IMPLS) do
  if present[impl] then IMPLS[#IMPLS + 1] = impl end
end
local any_peer = present.lanes or present.effil

local header = { "workload", "Lua", "target" }
for _, impl in ipairs(IMPLS) do header[#header + 1] = TITLES[impl] end
if present.base then header[#header + 1] = "ours vs base" end
if any_peer then header[#header + 1] = "ours vs best peer" end

-- "1.23× better" when `mine` beats `other` (by `unit`'s direction), else "× worse".
local function ratio(mine, other, unit)
  if not (mine and other and mine > 0 and other > 0) then return "–" end
  local x = HIGHER_IS_BETTER[unit] and mine / other or other / mine
  return string.format("%.2f× %s", x, x >= 1 and "better" or "worse")
end
print("| " .. table.concat(header, " | ") .. " |")
print("|" .. string.rep("---|", #header))
for _, row in ipairs(ROWS) do
  local name, title, target = row[1], row[2], row[3]
  for _, f in ipairs(FLAVOURS) do
    local rf = results[f]
    if rf then
      local cells = { title, f == "jit" and "LuaJIT" or f, target }
      local any = false
      local mine, base, best, unit
      for _, impl in ipairs(IMPLS) do
        local e = rf[impl] and rf[impl][name]
        if e then
          any = true
          unit = e.unit
          local m = median(e.medians)
          if impl == "ours" then
            mine = m
          elseif impl == "base" then
            base = m
          elseif not PEERS[impl] then
            error("unknown implementation " .. impl)
          elseif not best or (HIGHER_IS_BETTER[unit] and m > best) or (not HIGHER_IS_BETTER[unit] and m < best) then
            best = m
          end
        end
        cells[#cells + 1] = cell(e)
      end
      if present.base then cells[#cells + 1] = ratio(mine, base, unit) end
      if any_peer then cells[#cells + 1] = ratio(mine, best, unit) end
      if any then print("| " .. table.concat(cells, " | ") .. " |") end
    end
  end
end
print()
print("Median of the per-run medians (min–max over all runs); ours vs X: X's figure over")
print("ours (times, bytes) or ours over X's (msg/s); > 1 means ours is better.")
local lf = io.open(dir .. "/load.txt", "r")
if lf then
  for line in lf:lines() do print("    " .. line) end
  lf:close()
end
local keys = {}
for k in pairs(notes) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do print("    " .. notes[k]) end
