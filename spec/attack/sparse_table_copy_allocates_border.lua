-- Defect: the copier sizes each copied table's array part from lua_rawlen
-- (copy.rs Copier::table: `lua_createtable(to, narr, 0)` with narr = lua_rawlen),
-- but `#t` is only a border: for a sparse table it can be huge. A 25-entry table
-- {[1],[2],[4],...,[2^24]} (keys inserted largest first, so none lands in the
-- array part) has #t == 2^24, and copying it makes the receiving state allocate a
-- 2^24-slot array: 256 MiB here, 2 GiB for 28 entries, 8 GiB for 30 (an OOM kill
-- on a smaller machine), and seconds of CPU. Under set_memory_limit a tiny
-- argument is refused with "not enough memory". Same for results at join.
-- Flavours: all (the limit part: PUC only).
-- Observed (5.4): child memory ~262,000 KB for a 25-entry argument;
--   with set_memory_limit(10e6): new fails with "not enough memory".
local llthreads = require "llthreads"
local K = 24
local t = {}
for e = K, 0, -1 do t[math.floor(2 ^ e + 0.5)] = true end
print(("argument: %d entries, #t = %d"):format(K + 1, #t))
local c0 = os.clock()
local th = llthreads.new("local t = ... local n = 0 for _ in pairs(t) do n = n + 1 end return n, collectgarbage('count')", t)
local ok, n, kb = th:start():join()
print(("copy took %.2f s CPU; child saw %d entries and used %d KB"):format(os.clock() - c0, n, math.floor(kb)))
if not jit then
  llthreads.set_memory_limit(10e6)
  print("with a 10 MB limit:", pcall(llthreads.new, "return ...", t))
  -- and the other way round: a child's sparse result
  llthreads.set_memory_limit(nil)
end
local r = llthreads.new([[
  local t = {} for e = 24, 0, -1 do t[math.floor(2 ^ e + 0.5)] = true end return t
]]):start()
local c1 = os.clock()
local ok2, res = r:join()
print(("join of a 25-entry result: %.2f s CPU, parent memory now %d KB"):format(os.clock() - c1, math.floor(collectgarbage("count"))))
