-- Errors of spawn and new{...} for values they cannot copy name the argument the
-- caller wrote: new{...} holds its code inside argument 1, and the preload table is
-- part of the options, not an argument of its own.

local H = require "spec.helper"

local llthreads = require "llthreads"

describe("spawn and new{...} refusing a value", function()
  local ud = io.stdout

  it("new{...} names the caller's argument, not the stack slot it was copied from", function()
    local ok, err = pcall(llthreads.new, { function() return ud end })
    assert.is_false(ok)
    H.assert_contains(err, "bad argument #1 to")
    H.assert_contains(err, "upvalue 'ud'")
    ok, err = pcall(llthreads.new, { "return ...", name = "n" }, 1, io.stdout)
    assert.is_false(ok)
    H.assert_contains(err, "bad argument #3 to")
  end)

  it("a preload loader that cannot be copied is reported as the preload option of argument 1", function()
    for _, options in ipairs({ { preload = { m = function() return ud end } },
                               { paths = false, preload = { m = function() return ud end } } }) do
      local ok, err = pcall(llthreads.spawn, options, function() end)
      assert.is_false(ok)
      H.assert_contains(err, "bad argument #1 to")
      H.assert_contains(err, "option 'preload': upvalue 'ud'")
    end
    local ok, err = pcall(llthreads.new, { "return 1", preload = { m = function() return ud end } })
    assert.is_false(ok)
    H.assert_contains(err, "bad argument #1 to")
    H.assert_contains(err, "option 'preload'")
  end)
end)
