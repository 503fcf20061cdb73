-- Property test of value copying between states: seeded random nested values
-- round-tripped through a thread (parent -> child as arguments, child -> parent
-- as results) must come back structurally equal, with the reference graph
-- preserved (one copy per original table, the same copy everywhere).
--
-- Replay a failure with the seed printed in its message:
--   LLTHREADS_SEED=<seed> busted spec/copy_property_spec.lua
-- (on the same flavour: the generator is portable, the number edge cases are not).

local H = require "spec.helper"
local llthreads = require "llthreads"

local SEED = tonumber(os.getenv("LLTHREADS_SEED") or "") or os.time()
SEED = math.floor(SEED) % 2147483646

local MAX_DEPTH = 30 -- each top-level value is depth 1; a table's keys and values one deeper
local BATCHES = 60 -- threads
local PER_BATCH = 50 -- values per thread
local TAG = "\0tag" -- every table that may be used as a key carries a unique id

---------------------------------------------------------------------------
-- Portable PRNG (Park-Miller): exact in doubles and in 5.3+ integers, so a
-- seed gives the same shapes on every flavour.
---------------------------------------------------------------------------

local function new_rng(seed)
  local s = seed % 2147483646 + 1
  local r = {}
  function r.next()
    s = (s * 16807) % 2147483647
    return s
  end
  function r.int(a, b) return a + r.next() % (b - a + 1) end
  function r.float() return (r.next() - 1) / 2147483646 end
  function r.chance(p) return r.float() < p end
  function r.pick(list) return list[r.int(1, #list)] end
  return r
end

---------------------------------------------------------------------------
-- Scalars
---------------------------------------------------------------------------

local fzero = 0.0
local NEG_ZERO = -fzero
local NAN = fzero / fzero
local INF = math.huge

local EDGE_NUMBERS -- every one of these must survive exactly
if H.has_integers then
  local maxi, mini = math.maxinteger, math.mininteger
  EDGE_NUMBERS = {
    0, 1, -1, maxi, mini, maxi - 1, mini + 1, 2147483647, -2147483648, 4294967296,
    9007199254740992, 9007199254740993, -9007199254740993, 255, 256, 65535,
    -- floats, including integral ones that must stay floats
    0.0, NEG_ZERO, 1.0, -1.0, 2.0 ^ 53, 2.0 ^ 63, -(2.0 ^ 63), 2.0 ^ 64, 0.5, 0.1, 1 / 3,
    1e308, -1e308, 5e-324, -5e-324, 2.2250738585072014e-308, INF, -INF, NAN, math.pi,
  }
else
  EDGE_NUMBERS = {
    0, 1, -1, 2 ^ 53, -(2 ^ 53), 2 ^ 53 - 1, 2 ^ 63, -(2 ^ 63), 2 ^ 64, 2 ^ 31, 2 ^ 32, 2 ^ 31 - 1,
    NEG_ZERO, 0.5, 0.1, 1 / 3, 1e308, -1e308, 5e-324, -5e-324, 2.2250738585072014e-308,
    INF, -INF, NAN, math.pi, 255, 256, 65535,
  }
end

local function gen_number(r)
  local c = r.int(1, 6)
  if c == 1 then return r.pick(EDGE_NUMBERS) end
  if c == 2 then return r.int(-1000, 1000) end -- small integers
  if c == 3 then return r.int(-1000, 1000) + fzero end -- integral floats
  if c == 4 and H.has_integers then
    -- any 64-bit integer (integer arithmetic wraps on 5.3+)
    return r.next() * 4294967296 + r.next() * 2 + r.int(0, 1)
  end
  -- any double: random mantissa, exponent over the whole range
  local m = 1 + r.float()
  local x = m * 2.0 ^ r.int(-1074, 1023)
  if r.chance(0.5) then x = -x end
  return x
end

local function gen_string(r)
  local len
  local c = r.float()
  if c < 0.6 then len = r.int(0, 16)
  elseif c < 0.95 then len = r.int(17, 256)
  else len = r.int(257, 4096) end
  local mode = r.int(1, 4)
  local parts = {}
  for i = 1, len do
    local b
    if mode == 1 then b = 0 -- all NULs
    elseif mode == 2 then b = r.int(32, 126) -- printable
    else b = r.chance(0.2) and 0 or r.int(0, 255) end -- binary, NUL-rich
    parts[i] = string.char(b)
  end
  return table.concat(parts)
end

local function gen_scalar(r)
  local c = r.int(1, 10)
  if c <= 4 then return gen_number(r) end
  if c <= 8 then return gen_string(r) end
  if c == 9 then return r.chance(0.5) end
  return nil -- only ever a top-level value or never stored (see gen_table)
end

-- A scalar that can be a table key (not nil, not NaN). Integral floats become
-- integer keys on 5.3+, so float keys are non-integral.
local function gen_scalar_key(r)
  local c = r.int(1, 5)
  if c == 1 then return r.int(-20, 50) end
  if c == 2 then
    local x = gen_number(r)
    if x ~= x then return 0.25 end
    return x
  end
  if c == 3 then return r.int(-1000, 1000) + 0.5 end
  if c == 4 then return gen_string(r) end
  return r.chance(0.5)
end

---------------------------------------------------------------------------
-- Tables. Depth rules (the copier counts every value): a table at depth d
-- holds keys and values at depth d + 1, so a table with contents sits at
-- depth <= 29 and depth 30 holds only scalars and empty tables.
--
-- Sharing that cannot change the depth the copier sees:
--  * back references to an ancestor on the current path (the copier has
--    already cached it when it gets there), as a value or as a key;
--  * references to "pool" tables of known height h (whose contents never
--    reference tree tables), only where depth + h <= 30, whichever place
--    the copier happens to reach first.
---------------------------------------------------------------------------

local Gen = {}
Gen.__index = Gen

local function new_gen(r)
  return setmetatable({ r = r, next_id = 0, pool = {}, ancestors = {}, budget = 0 }, Gen)
end

function Gen:id()
  self.next_id = self.next_id + 1
  return self.next_id
end

-- A pool table of height 1..3 (h: its deepest contents are h levels below it).
function Gen:pool_table()
  local r = self.r
  local function build(h)
    local t = { [TAG] = self:id() }
    for _ = 1, r.int(0, 4) do
      t[gen_scalar_key(r)] = (h > 1 and r.chance(0.5)) and build(h - 1) or (gen_scalar(r) or false)
    end
    if r.chance(0.2) then t.self = t end -- a cycle inside the pool table
    return t
  end
  local h = r.int(1, 3)
  -- a sub-table built with h-1 gives height <= h; record h (an upper bound)
  local entry = { t = build(h), h = h }
  self.pool[#self.pool + 1] = entry
  return entry
end

function Gen:pool_ref(depth)
  local ok = {}
  for _, e in ipairs(self.pool) do
    if depth + e.h <= MAX_DEPTH then ok[#ok + 1] = e end
  end
  if #ok == 0 then return nil end
  return self.r.pick(ok).t
end

-- A table at `depth` (<= 29 when it gets contents). `spine`: keep going down
-- to depth 30 along one entry.
function Gen:table(depth, spine)
  local r = self.r
  if depth >= MAX_DEPTH then return {} end -- empty: nothing at depth 31
  local t = { [TAG] = self:id() }
  local anc = self.ancestors
  anc[#anc + 1] = t
  local n = r.int(0, 6)
  if self.budget <= 0 then n = 0 end
  for _ = 1, n do
    self.budget = self.budget - 1
    local k = self:key(depth + 1)
    if k ~= nil and rawget(t, k) == nil then
      local v = self:value(depth + 1)
      if v == nil then v = false end
      t[k] = v
    end
  end
  if spine then
    local child_depth = depth + 1
    local next_spine = child_depth < MAX_DEPTH
    if r.chance(0.25) and child_depth < MAX_DEPTH - 1 then
      -- go down through a key this time
      t[self:table(child_depth, next_spine)] = gen_scalar(r) or true
    else
      local v
      if child_depth == MAX_DEPTH then
        v = r.chance(0.5) and {} or (gen_scalar(r) or "bottom")
      else
        v = self:table(child_depth, next_spine)
      end
      t[#t + 1] = v
    end
  end
  anc[#anc] = nil
  return t
end

function Gen:key(depth)
  local r = self.r
  local c = r.int(1, 10)
  if c <= 7 then return gen_scalar_key(r) end
  if c == 8 and #self.ancestors > 0 then return r.pick(self.ancestors) end
  if c == 9 then
    local p = self:pool_ref(depth)
    if p then return p end
  end
  if depth < MAX_DEPTH then return self:table(depth) end -- tagged, since depth < 30
  return gen_scalar_key(r)
end

function Gen:value(depth)
  local r = self.r
  local c = r.int(1, 10)
  if c <= 5 or depth > MAX_DEPTH then return gen_scalar(r) end
  if c == 6 and #self.ancestors > 0 then return r.pick(self.ancestors) end
  if c == 7 then
    local p = self:pool_ref(depth)
    if p then return p end
  end
  if depth == MAX_DEPTH then return r.chance(0.5) and {} or gen_scalar(r) end
  return self:table(depth)
end

-- One batch: `n` top-level values sharing one pool (the copier's cache covers
-- all the values of one copy).
function Gen:batch(n)
  local r = self.r
  self.pool = {}
  for _ = 1, r.int(0, 4) do self:pool_table() end
  local vals = {}
  for i = 1, n do
    self.budget = r.int(0, 60)
    self.ancestors = {}
    local c = r.int(1, 20)
    local v
    if c <= 6 then v = gen_scalar(r)
    elseif c == 7 and #self.pool > 0 then v = r.pick(self.pool).t
    elseif c == 8 and i > 1 and type(vals[i - 1]) == "table" then v = vals[i - 1] -- same table twice
    elseif c == 9 then v = self:table(1, true) -- reaches depth 30 exactly
    else v = self:table(1) end
    vals[i] = v
  end
  return vals
end

---------------------------------------------------------------------------
-- Structural comparison with a bijection between original and copied tables.
---------------------------------------------------------------------------

local function describe_value(v)
  if type(v) == "string" then
    if #v > 40 then return ("string(len %d)"):format(#v) end
    return ("%q"):format(v)
  end
  if type(v) == "number" then
    if math.type and math.type(v) == "integer" then return ("integer(%d)"):format(v) end
    return ("%s(%s)"):format(math.type and "float" or "number", ("%.17g"):format(v))
  end
  return tostring(v)
end

local function path_key(k)
  if type(k) == "table" then return "[<table #" .. tostring(rawget(k, TAG)) .. ">]" end
  return "[" .. describe_value(k) .. "]"
end

local function new_cmp()
  return { map = {}, rmap = {} }
end

-- Returns nil when equal, else a description of the first difference.
local function compare(st, o, c, path)
  local to, tc = type(o), type(c)
  if to ~= tc then
    return ("%s: type %s became %s (%s -> %s)"):format(path, to, tc, describe_value(o), describe_value(c))
  end
  if to == "number" then
    if o ~= o then
      if c == c then return path .. ": NaN became " .. describe_value(c) end
      return nil
    end
    if o ~= c then return ("%s: %s became %s"):format(path, describe_value(o), describe_value(c)) end
    if o == 0 and 1 / o ~= 1 / c then
      return ("%s: sign of zero lost (%s -> %s)"):format(path, describe_value(o), describe_value(c))
    end
    if math.type and math.type(o) ~= math.type(c) then
      return ("%s: %s became %s"):format(path, describe_value(o), describe_value(c))
    end
    return nil
  end
  if to ~= "table" then
    if o ~= c then return ("%s: %s became %s"):format(path, describe_value(o), describe_value(c)) end
    return nil
  end
  -- tables: the bijection
  local m = st.map[o]
  if m ~= nil then
    if not rawequal(m, c) then
      return path .. ": one original table was copied to two different tables (shared/cyclic reference broken)"
    end
    return nil
  end
  if st.rmap[c] ~= nil then
    return path .. ": two different original tables were copied to the same table"
  end
  if rawequal(o, c) then return path .. ": table was not copied" end
  if getmetatable(c) ~= nil then return path .. ": copy has a metatable" end
  st.map[o], st.rmap[c] = c, o

  local nc = 0
  local by_tag = {}
  for k in pairs(c) do
    nc = nc + 1
    if type(k) == "table" then
      local tag = rawget(k, TAG)
      if tag ~= nil then by_tag[tag] = k end
    end
  end
  local no = 0
  for k, v in pairs(o) do
    no = no + 1
    local kp = path .. path_key(k)
    local ck = k
    if type(k) == "table" then
      ck = st.map[k]
      if ck == nil then
        ck = by_tag[rawget(k, TAG)]
        if ck == nil then return kp .. ": table key missing in the copy" end
        local err = compare(st, k, ck, kp .. "<key>")
        if err then return err end
      end
    end
    local cv = rawget(c, ck)
    if cv == nil then return kp .. ": key missing in the copy" end
    local err = compare(st, v, cv, kp)
    if err then return err end
  end
  if no ~= nc then return ("%s: %d entries became %d"):format(path, no, nc) end
  return nil
end

---------------------------------------------------------------------------

local function fail_msg(what, b, i, err)
  return ("%s (seed %d: replay with LLTHREADS_SEED=%d on flavour %s; batch %d, value %s): %s")
    :format(what, SEED, SEED, H.flavour, b, tostring(i), err)
end

describe("copy property: random values round-tripped through a thread", function()
  it(("keeps %d random values (seed %d) structurally equal, reference graph included")
      :format(BATCHES * PER_BATCH, SEED), function()
    local r = new_rng(SEED)
    local gen = new_gen(r)
    local total = 0
    for b = 1, BATCHES do
      local vals = gen:batch(PER_BATCH)
      -- (messages are built only on failure: they can be big)
      local ok, t = pcall(llthreads.new, "return ...", H.unpack(vals, 1, PER_BATCH))
      if not ok then error(fail_msg("new() refused the values", b, "?", tostring(t)), 0) end
      local res = H.pack(t:start():join())
      if res[1] ~= true then error(fail_msg("join failed", b, "?", tostring(res[2])), 0) end
      if res.n ~= PER_BATCH + 1 then
        error(fail_msg("wrong number of values", b, "?", ("%d sent, %d back"):format(PER_BATCH, res.n - 1)), 0)
      end
      local st = new_cmp() -- one bijection per copy: shared across the batch
      for i = 1, PER_BATCH do
        local err = compare(st, vals[i], res[i + 1], "value" .. i)
        if err then error(fail_msg("copy mismatch", b, i, err), 0) end
      end
      total = total + PER_BATCH
    end
    assert.are.equal(BATCHES * PER_BATCH, total)
  end)

  -- The comparison itself must see what a broken copier would do.
  it("has a comparison that catches broken copies", function()
    local function differs(o, c) return compare(new_cmp(), o, c, "v") ~= nil end
    local shared = {}
    local cyc = {} cyc.me = cyc
    assert.is_true(differs({ shared, shared }, { {}, {} })) -- sharing lost
    local one = {}
    assert.is_true(differs({ {}, {} }, { one, one })) -- distinct merged
    assert.is_true(differs(cyc, { me = {} })) -- cycle lost
    assert.is_true(differs({ NEG_ZERO }, { 0 })) -- sign of zero
    assert.is_true(differs({ NAN }, { 0 }))
    assert.is_false(differs({ NAN }, { NAN })) -- NaN equals NaN here
    assert.is_true(differs({ "a\0b" }, { "a" })) -- truncated at NUL
    assert.is_true(differs({ 1, 2 }, { 1 })) -- entry dropped
    assert.is_true(differs({ 1 }, { 1, 2 })) -- entry added
    assert.is_true(differs({ [{ [TAG] = 1 }] = 1 }, { [{ [TAG] = 2 }] = 1 })) -- table key lost
    if H.has_integers then
      assert.is_true(differs({ 3 }, { 3.0 })) -- integer became float
      assert.is_true(differs({ 3.0 }, { 3 })) -- float became integer
    end
    local c2 = { me = false } c2.me = c2
    assert.is_false(differs(cyc, c2))
  end)

  it("keeps integer and float subtypes, -0.0 and NaN (every edge value, in order)", function()
    local t = llthreads.new("return ...", H.unpack(EDGE_NUMBERS))
    local res = H.pack(t:start():join())
    assert.are.equal(#EDGE_NUMBERS + 1, res.n)
    local st = new_cmp()
    for i, v in ipairs(EDGE_NUMBERS) do
      local err = compare(st, v, res[i + 1], "edge" .. i)
      if err then error(fail_msg("edge number", 0, i, err), 0) end
    end
  end)

  -- The depth limit, exercised with random shapes: a random value grown to
  -- exactly depth 30 passes (above), one level more is refused both ways.
  local function chain(depth, leaf)
    -- a table at depth 1 whose innermost value sits at depth `depth`
    local top = {}
    local t = top
    for _ = 2, depth - 1 do
      local n = {}
      t[1] = n
      t = n
    end
    t[1] = leaf
    return top
  end

  it("passes values at depth 30 and refuses depth 31 as arguments", function()
    local r = new_rng(SEED + 1)
    for _ = 1, 20 do
      local leaf = gen_scalar(r) or "leaf"
      local ok30 = H.pack(llthreads.new("return ...", chain(30, leaf)):start():join())
      if ok30[1] ~= true then error(fail_msg("depth 30 refused", 0, "-", H.show_pack(ok30)), 0) end
      local err = compare(new_cmp(), chain(30, leaf), ok30[2], "chain")
      if err then error(fail_msg("depth 30 chain", 0, "-", err), 0) end
      local msg = H.assert_error(nil, llthreads.new, "return ...", 1, chain(31, leaf))
      if not msg:find("Hit maximum copy depth (31 > 30).", 1, true) then
        error(fail_msg("depth error", 0, "-", msg), 0)
      end
    end
  end)

  it("raises the depth error in the parent for results deeper than 30", function()
    local code = [[
      local depth = ...
      local top = {} local t = top
      for _ = 2, depth - 1 do local n = {} t[1] = n t = n end
      t[1] = "leaf"
      return top
    ]]
    local ok = H.pack(llthreads.new(code, 30):start():join())
    assert(ok[1] == true and type(ok[2]) == "table", H.show_pack(ok))
    local t = llthreads.new(code, 31):start()
    local msg = H.assert_error(nil, t.join, t)
    assert(msg:find("Hit maximum copy depth (31 > 30).", 1, true), msg)
    -- the object stays usable: a second join raises again or says why not
    local again = H.pack(pcall(t.join, t))
    if again[1] then
      assert(again[2] == nil and type(again[3]) == "string", "second join gave " .. H.show_pack(again))
    else
      assert(type(again[2]) == "string", "second join raised " .. H.show(again[2]))
    end
    assert.are.equal(true, t:started())
    t = nil
    collectgarbage()
  end)
end)
