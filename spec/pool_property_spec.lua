-- Property test of the task pool: rounds with a random pool (size, bounded or not,
-- max_tasks recycling), random tasks (return their own token, raise, spin until
-- interrupted, wait a little, submit a task of their own to the pool they run in and
-- wait for it a moment), submits with random timeouts, interrupts of random tasks,
-- and a close (cancelling or not) at a random moment. Whatever the interleaving:
--   * every task that was queued is joined exactly once with its own outcome: its
--     own token back, its own error, the interrupt error (only for a task that was
--     interrupted), or "cancelled" (only after a cancelling close);
--   * no task runs twice (each counts its runs in a channel) and none is lost: the
--     runs counted are the tasks that returned or raised;
--   * a submit refused says why ("full", "timeout", "closed") and that task never runs;
--   * nothing hangs: every join and close is bounded.
--
-- Replay with the seed in the describe line:
--   LLTHREADS_SEED=<seed> busted spec/pool_property_spec.lua
-- LLTHREADS_STRESS scales the rounds (1, the default, is what tools/test.sh runs).

local H = require "spec.helper"
local llthreads = require "llthreads"

local SEED = tonumber(os.getenv("LLTHREADS_SEED") or "") or os.time()
SEED = math.floor(SEED) % 2147483646
local SCALE = math.max(1, tonumber(os.getenv("LLTHREADS_STRESS") or "") or 1)
local ROUNDS = 12 * SCALE
local LIMIT_MS = 60000

-- A small generator of our own, so the seed means the same on every flavour.
local function rng(seed)
  local state = seed
  return function(n)
    state = (state * 16807) % 2147483647
    return state % n + 1
  end
end

describe(("the pool, under random tasks and closes (seed %d)"):format(SEED), function()
  after_each(H.cleanup)

  it("joins every task exactly once with its own outcome; none runs twice or is lost", function()
    local r = rng(SEED)
    for round = 1, ROUNDS do
      local size = r(3)
      local queue = r(3) == 1 and r(4) or nil
      local pool = llthreads.pool{ size = size, queue = queue, max_tasks = r(2) == 1 and r(5) or nil }
      local runs = llthreads.channel()
      local tasks, kinds, interrupted = {}, {}, {}
      local ntasks = 5 + r(20)
      local close_at = r(ntasks + 5)
      local cancel = r(2) == 1
      local closed = false
      for i = 1, ntasks do
        if i == close_at then
          assert(pool:close(LIMIT_MS, cancel), "close timed out")
          closed = true
        end
        local kind = ({ "return", "error", "spin", "wait", "nested" })[r(5)]
        local token = round * 1000 + i
        local timeout = ({ false, 0, 5 })[r(3)]
        local t, why = pool:submit(timeout and { timeout = timeout } or {}, function(kind, token)
          runs:send(token)
          if kind == "error" then error("token " .. token, 0) end
          if kind == "spin" then
            local t0 = os.clock()
            while os.clock() - t0 < 20 do end
            error("a spinning task was never interrupted")
          end
          if kind == "wait" then require("llthreads").sleep(2) end
          if kind == "nested" then
            -- `pool` is this task's own pool, copied with the function's upvalues.
            local sub, why = pool:submit({ timeout = 0 }, function(tok) runs:send(tok) return tok end, token + 500)
            if not sub then return token, why end
            local ok, v = sub:join(200)
            return token, ok and v or "pending"
          end
          return token
        end, kind, token)
        if t then
          tasks[#tasks + 1], kinds[#kinds + 1] = t, { kind = kind, token = token }
          if kind == "spin" then t:interrupt(true) interrupted[#tasks] = true end
          if r(5) == 1 then t:interrupt(true) interrupted[#tasks] = true end
        else
          H.expect(why == "full" or why == "timeout" or why == "closed", "round %d: submit refused with %s", round, why)
          H.expect(why ~= "closed" or closed, "round %d: 'closed' before the close", round)
        end
      end
      local ran = {}
      for j, t in ipairs(tasks) do
        local got = H.pack(t:join(LIMIT_MS))
        local k = kinds[j]
        H.expect(got[1] ~= nil, "round %d task %d (%s): join gave %s", round, j, k.kind, got)
        if got[1] then
          H.expect(k.kind == "return" or k.kind == "wait" or k.kind == "nested", "round %d task %d (%s) returned %s", round, j, k.kind, got)
          H.expect(got[2] == k.token, "round %d task %d: got %s, not its own token %d", round, j, got, k.token)
          ran[k.token] = true
          if k.kind == "nested" then
            local sub = got[3]
            H.expect(sub == k.token + 500 or sub == "pending" or sub == "full" or sub == "closed",
              "round %d task %d: its own task gave %s", round, j, got)
            if sub == k.token + 500 then ran[sub] = true elseif sub == "pending" then ran[k.token + 500] = "maybe" end
          end
        else
          local msg = tostring(got[2])
          if msg:find("cancelled", 1, true) then
            H.expect(cancel and closed, "round %d task %d cancelled without a cancelling close", round, j)
          elseif msg:find(llthreads.interrupted_error, 1, true) then
            H.expect(interrupted[j], "round %d task %d interrupted without interrupt()", round, j)
            ran[k.token] = "maybe" -- interrupted before or after it counted its run
            if k.kind == "nested" then ran[k.token + 500] = "maybe" end
          else
            H.expect(k.kind == "error" and msg:find("token " .. k.token, 1, true), "round %d task %d (%s): %s", round, j, k.kind, msg)
            ran[k.token] = true
          end
        end
        H.expect(t:join(0) == nil, "round %d task %d joined twice", round, j)
      end
      assert(pool:close(LIMIT_MS), "close timed out")
      local counted = {}
      while true do
        local token = runs:receive(0)
        if not token then break end
        H.expect(not counted[token], "round %d: token %d ran twice", round, token)
        counted[token] = true
        H.expect(ran[token] ~= nil, "round %d: token %d ran but its task says it did not", round, token)
      end
      for token, how in pairs(ran) do
        H.expect(how == "maybe" or counted[token], "round %d: token %d finished without running", round, token)
      end
    end
  end)
end)
