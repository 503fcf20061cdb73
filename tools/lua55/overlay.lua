-- Makes Debian's plain-Lua packages (busted and what it requires) loadable on Lua 5.5:
--   lua5.5 tools/lua55/overlay.lua SOURCE_DIR OVERLAY_DIR
-- Run by tools/build-lua55.sh with SOURCE_DIR = /usr/share/lua/5.4.
--
-- Lua 5.5 makes the control variables of `for` loops read-only: a file that assigns to
-- one no longer compiles ("attempt to assign to const variable 'k'"). Before 5.5 such
-- an assignment changed only the current iteration's copy, which is exactly what a
-- local of the same name declared at the top of the body does. For each .lua file
-- under SOURCE_DIR that 5.5 refuses for that reason, a copy with `local k = k` added
-- after the `do` of the loop declaring `k` (on the same line: line numbers stay) is
-- written to the same relative path under OVERLAY_DIR, which tools/lib.sh puts before
-- SOURCE_DIR in LUA_PATH_5_5. Files that compile, or fail for another reason, are
-- left alone (the second kind is listed). Prints one line per file written.

local source, overlay = arg[1], arg[2]
assert(source and overlay, "usage: overlay.lua SOURCE_DIR OVERLAY_DIR")

local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function lines_of(path)
  local t = {}
  for line in io.lines(path) do t[#t + 1] = line end
  return t
end

-- Adds `local name = name` after the `do` of the nearest `for` at or above `lnum`
-- that declares `name`; false when there is none.
local function localise(lines, lnum, name)
  for i = lnum, 1, -1 do
    local head = lines[i]:match("^(.-%f[%w_]for%s.-%f[%w_]do%f[^%w_])")
    if head then
      local vars = head:match("for%s+(.-)%s+in%s") or head:match("for%s+([%w_]+)%s*=")
      if vars then
        for v in vars:gmatch("[%w_]+") do
          if v == name then
            lines[i] = head .. " local " .. name .. " = " .. name .. ";" .. lines[i]:sub(#head + 1)
            return true
          end
        end
      end
    end
  end
  return false
end

local written, refused = 0, {}
local find = io.popen("find -L " .. shq(source) .. " -name '*.lua' -type f")
for path in find:lines() do
  local ok, err = loadfile(path)
  local lines
  while not ok do
    local lnum, name = tostring(err):match(":(%d+): attempt to assign to const variable '([%w_]+)'")
    if not lnum then break end
    lines = lines or lines_of(path)
    if not localise(lines, tonumber(lnum), name) then break end
    ok, err = load(table.concat(lines, "\n") .. "\n", "@" .. path)
  end
  if lines and ok then
    local rel = path:sub(#source + 2)
    local dest = overlay .. "/" .. rel
    assert(os.execute("mkdir -p " .. shq(dest:match("^(.*)/"))))
    local f = assert(io.open(dest, "w"))
    f:write(table.concat(lines, "\n"), "\n")
    f:close()
    written = written + 1
    print("overlay: " .. rel)
  elseif not ok then
    refused[#refused + 1] = tostring(err)
  end
end
find:close()
for _, e in ipairs(refused) do print("overlay: left as is (does not compile on 5.5): " .. e) end
print(("overlay: %d file(s) adapted"):format(written))
