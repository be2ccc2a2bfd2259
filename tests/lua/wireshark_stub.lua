-- wireshark_stub.lua: the part of Wireshark's Lua API that parallax.lua uses, in plain Lua
-- (5.1 to 5.4, LuaJIT), so the dissector's own logic can run under each interpreter.
-- It records what the dissector adds; it does not imitate Wireshark's C side (display
-- filters, JSON, reassembly tables), so agreeing here proves the Lua logic, not the API.
local stub = {registered = {}, decode_as = {}, removed = {}}

local function band(a, b)  -- any width, without operators (5.1/5.2 have none)
  local r, bit = 0, 1
  while a > 0 and b > 0 do
    if a % 2 == 1 and b % 2 == 1 then r = r + bit end
    a, b, bit = (a - a % 2) / 2, (b - b % 2) / 2, bit * 2
  end
  return r
end

local function be(s, i, n)
  local v = 0
  for k = i, i + n - 1 do v = v * 256 + s:byte(k) end
  return v
end

-- Tvb and TvbRange over a Lua string.
local Tvb, Range = {}, {}
Tvb.__index, Range.__index = Tvb, Range
local function new_tvb(s) return setmetatable({s = s}, Tvb) end
function Tvb:len() return #self.s end
function Tvb:raw(off, len)
  off = off or 0
  return self.s:sub(off + 1, len and off + len or #self.s)
end
local function new_range(s, off, len)
  assert(off >= 0 and len >= 0 and off + len <= #s, "range out of bounds")
  return setmetatable({s = s, off = off, len = len}, Range)
end
Tvb.__call = function(self, off, len) off = off or 0 return new_range(self.s, off, len or #self.s - off) end
Range.__call = function(self, off, len) return new_range(self.s, self.off + off, len or self.len - off) end
function Range:uint() return be(self.s, self.off + 1, self.len) end
function Range:uint64() return {hi = be(self.s, self.off + 1, 4), lo = be(self.s, self.off + 5, 4), u64 = true} end
function Range:bytes() return self.s:sub(self.off + 1, self.off + self.len) end
function Range:raw() return self:bytes() end
function Range:tvb() return new_tvb(self:bytes()) end
local function mac(s)
  local t = {}
  for k = 1, #s do t[k] = string.format("%02x", s:byte(k)) end
  return table.concat(t, ":")
end
function Range:ether() return {mac = mac(self:bytes())} end

-- Values as tshark -T json prints them (numbers in decimal, bytes in hex, MACs with colons).
local function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local function u64text(v)
  if v.hi < 2097152 then return string.format("%.0f", v.hi * 4294967296 + v.lo) end
  return string.format("0x%08x%08x", v.hi, v.lo)  -- the test compares small values only
end
local function shown(field, range, value)
  local t = field.ftype
  if value ~= nil and type(value) == "table" then
    if value.u64 then return u64text(value) end
    if value.mac then return value.mac end
    if value.secs then return value end
  end
  if t == "bool" then
    if value ~= nil then return value and "1" or "0" end
    return band(range:uint(), field.mask) ~= 0 and "1" or "0"
  elseif t == "ether" then
    return value ~= nil and value or mac(range:bytes())
  elseif t == "bytes" then
    return hex(value ~= nil and value or range:bytes())
  elseif t == "string" then
    return value
  elseif value ~= nil then
    return tostring(value)
  elseif range.len == 8 then
    return u64text(range:uint64())
  end
  return string.format("%d", range:uint())
end

-- TreeItem: records (abbrev, value) pairs and expert infos into the frame's record.
local Item = {}
Item.__index = Item
local function new_item(rec, on) return setmetatable({rec = rec, on = on}, Item) end
Item.__tostring = function(self)
  return "TreeItem: expired=false, has item=" .. tostring(self.on) .. ", has subtree=" .. tostring(self.on)
         .. ", they are the same"
end
function Item:add(a, b, c, d)
  if not self.on then return new_item(self.rec, false) end
  if type(a) == "table" and a.abbrev then
    local range, value = nil, nil
    if getmetatable(b) == Range then range, value = b, c else value = b end
    local v = shown(a, range, value)
    local list = self.rec.fields[a.abbrev] or {}
    list[#list + 1] = v
    self.rec.fields[a.abbrev] = list
  end
  return new_item(self.rec, true)
end
function Item:append_text() return self end
function Item:prepend_text() return self end
function Item:set_generated() return self end
function Item:add_proto_expert_info(e, text)
  local list = self.rec.experts
  list[#list + 1] = {e.abbrev, text or e.text}
  return self
end

-- The globals Wireshark defines.
base = {DEC = "DEC", HEX = "HEX", NONE = "NONE"}
frametype = {REQUEST = "REQUEST", RESPONSE = "RESPONSE"}
expert = {group = {MALFORMED = "MALFORMED", SEQUENCE = "SEQUENCE", UNDECODED = "UNDECODED", DECRYPTION = "DECRYPTION"},
          severity = {ERROR = "ERROR", NOTE = "NOTE", WARN = "WARN"}}
ProtoField = setmetatable({}, {__index = function(_, ftype)
  return function(abbrev, label, _, _, mask)
    return {abbrev = abbrev, label = label, ftype = ftype, mask = mask and tonumber(mask) or nil}
  end
end})
ProtoExpert = {new = function(abbrev, text) return {abbrev = abbrev, text = text} end}
Pref = {uint = function(_, default) return {default = default} end,
        bool = function(_, default) return {default = default} end,
        string = function(_, default) return {default = default} end}
function Proto(name, desc)
  local prefs = {}
  local p = {name = name, description = desc, fields = {}, experts = {}}
  p.prefs = setmetatable({}, {
    __newindex = function(_, k, v) prefs[k] = v.default end,
    __index = function(_, k) return prefs[k] end,
  })
  stub.proto, stub.set_pref = p, function(k, v) prefs[k] = v end
  return p
end
DissectorTable = {get = function()
  return {
    add = function(_, et, p) stub.registered[et] = p end,
    remove = function(_, et) stub.registered[et] = nil; stub.removed[#stub.removed + 1] = et end,
    add_for_decode_as = function(_, p) stub.decode_as[#stub.decode_as + 1] = p end,
  }
end}
Dissector = {get = function() return {call = function() end} end}
ByteArray = {new = function(s) return {tvb = function() return new_tvb(s) end} end}
NSTime = {new = function(secs, ns) return {secs = secs, ns = ns} end}

-- Run the dissector over one frame (ethertype, the bytes after the Ethernet header, MACs as text).
function stub.dissect(number, ethertype, payload, want_tree, dst, src)
  local rec = {fields = {}, experts = {}, info = nil}
  local cols = setmetatable({}, {__newindex = function(_, k, v) if k == "info" then rec.info = v end end})
  local pinfo = {number = number, visited = false, abs_ts = number / 1000, match_uint = ethertype,
                 dl_src = {mac = src or "02:00:00:00:00:01"}, dl_dst = {mac = dst or "02:00:00:00:00:02"}, cols = cols}
  setmetatable(pinfo.dl_src, {__tostring = function(a) return a.mac end})
  setmetatable(pinfo.dl_dst, {__tostring = function(a) return a.mac end})
  stub.proto.dissector(new_tvb(payload), pinfo, new_item(rec, want_tree))
  return rec
end

return stub
