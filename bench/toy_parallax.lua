-- toy_parallax.lua: a 20-line hand-written Parallax dissector, the speed yardstick of bench/dissector.py.
local toy = Proto("pxtoy", "Parallax toy")
local f_src = ProtoField.uint16("pxtoy.src", "Source DIME")
local f_dst = ProtoField.uint16("pxtoy.dst", "Destination DIME")
local f_len = ProtoField.uint16("pxtoy.len", "Length")
local f_seq = ProtoField.uint64("pxtoy.seq", "Sequence")
toy.fields = {f_src, f_dst, f_len, f_seq}
local NAMES = {[0xabba] = "SIG", [0xabbb] = "DATA", [0xabbc] = "DISC", [0xabbd] = "HB"}
function toy.dissector(tvb, pinfo, tree)
  if tvb:len() < 20 then return 0 end
  pinfo.cols.protocol = "PXTOY"
  local t = tree:add(toy, tvb(0, 20))
  t:add(f_len, tvb(2, 2)); t:add(f_src, tvb(4, 2)); t:add(f_dst, tvb(8, 2)); t:add(f_seq, tvb(12, 8))
  pinfo.cols.info = NAMES[pinfo.match_uint] .. " " .. tvb(4, 2):uint() .. " > " .. tvb(8, 2):uint()
  return tvb:len()
end
local et = DissectorTable.get("ethertype")
for k in pairs(NAMES) do et:add(k, toy) end
