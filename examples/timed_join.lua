-- A timed join, and polling with alive() until the thread is done.
--
--   tools/run-example.sh examples/timed_join.lua [flavour]
local llthreads = require "llthreads"

local function sleep(seconds) os.execute("sleep " .. seconds) end

local thread = llthreads.new([[
   os.execute("sleep 0.5") -- some slow work
   return "done", 42
]]):start()

-- join(ms) waits at most ms milliseconds; a thread still running gives nil, "timeout".
local ok, err = thread:join(50)
assert(ok == nil and err == "timeout", "join(50) on a running thread: " .. tostring(err))
print("join(50) while the thread works: nil, " .. err)

-- join(0) only checks.
ok, err = thread:join(0)
assert(ok == nil and err == "timeout")
print("join(0) while the thread works: nil, " .. err)

-- alive() says whether the thread still runs, without waiting.
local polls = 0
while thread:alive() do
   polls = polls + 1
   assert(polls < 200, "the thread did not finish within 10 s")
   sleep(0.05) -- the parent could do other work here
end
print(("alive() was true for %d polls, then false"):format(polls))

-- The thread has finished; join now returns at once with its values.
local ok2, word, number = thread:join(0)
assert(ok2 == true and word == "done" and number == 42, tostring(word))
print(("join(0) after it finished: %s, %s, %s"):format(tostring(ok2), word, number))
print("OK: timed join returned nil, \"timeout\"; alive() polled until done; join gave the values")
