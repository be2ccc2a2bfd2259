-- run_dissector.lua STUB_DIR DISSECTOR FRAMES [bench N]
-- FRAMES: one frame a line, the hex of the whole Ethernet frame (at least 14 bytes).
-- Prints one line per frame: "<number>\t<expert abbrev or ->\t<expert text or ->\t<field>=<value>\t...".
-- With "bench N": runs the frames N times without a tree and prints microseconds per frame.
local stub_dir, lua_file, frames_file, mode, reps = arg[1], arg[2], arg[3], arg[4], tonumber(arg[5])
package.path = stub_dir .. "/?.lua;" .. package.path
local stub = require("wireshark_stub")
dofile(lua_file)
local frames = {}
local function mac(h) return h:sub(1, 2) .. (h:sub(3):gsub("%x%x", ":%0")) end
for line in io.lines(frames_file) do
  local dst, src, et, h = line:match("^(%x%x%x%x%x%x%x%x%x%x%x%x)(%x%x%x%x%x%x%x%x%x%x%x%x)(%x%x%x%x)(%x*)$")
  frames[#frames + 1] = {tonumber(et, 16), (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)),
                         mac(dst), mac(src)}
end
if mode == "bench" then
  local t = os.clock()
  for r = 1, reps do
    for i, f in ipairs(frames) do stub.dissect(i, f[1], f[2], false, f[3], f[4]) end
    if stub.proto.init then stub.proto.init() end
  end
  print(string.format("%.3f", (os.clock() - t) / (reps * #frames) * 1e6))
  return
end
for i, f in ipairs(frames) do
  local rec = stub.dissect(i, f[1], f[2], true, f[3], f[4])
  local out = {tostring(i)}
  local e = rec.experts[1]
  out[#out + 1] = e and e[1] or "-"
  out[#out + 1] = e and e[2] or "-"
  local keys = {}
  for k in pairs(rec.fields) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    for _, v in ipairs(rec.fields[k]) do out[#out + 1] = k .. "=" .. tostring(v):gsub("[\t\n\\]", function(c)
      return string.format("\\x%02x", c:byte()) end) end
  end
  print(table.concat(out, "\t"))
end
