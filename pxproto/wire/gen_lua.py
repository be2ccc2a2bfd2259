"""Generate the Wireshark Lua dissector (``dissectors/parallax.lua``) from the spec.

Every offset, width, code table, flag mask, TLV kind and EtherType in the
emitted Lua comes from :mod:`pxproto.wire.layout`, :mod:`pxproto.wire.codes`,
:mod:`pxproto.wire.spec` and :mod:`pxproto.wire.ethertypes`.  The protocol's
rules that a layout cannot say (scope, fragment bounds, TLV kinds) are the
Lua twin of :mod:`pxproto.wire.codec`: same order, same field names, same
messages, so a malformed frame's expert info reads exactly like the
``ProtocolError`` the reference decoder raises.

The dissector's display-filter fields are the keys of ``Frame.to_dict()``,
plus the few in :data:`EXTRA_FIELDS` that no decoded frame carries (TLV
headers, request/response links, fragment links).

Wireshark 4.0 runs Lua 5.2 and 4.4 runs Lua 5.4, so the template uses no
bitwise operators and no ``bit32``: bits are tested with arithmetic and masks
are integer literals.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import IntEnum

from pxproto.wire import ethertypes, layout, spec
from pxproto.wire.codes import (
    ACL_ENTRY_SIZE,
    DIME_ALL,
    FIXED_TLV_SIZES,
    PROTOCOL_VERSION,
    STATE_ANY,
    TEXT_MAX,
    TLV_ENUMS,
    TLV_KINDS,
    Capability,
    Command,
    DataFlag,
    DimeState,
    Fcaps,
    FrameClass,
    HeaderFlag,
    Op,
    Status,
    TlvKind,
    TlvType,
)
from pxproto.wire.ethertypes import EtherTypeMap

LOCAL_EXPERIMENTAL = (0x88B5, 0x88B6)
"""IEEE 802 Local Experimental EtherTypes: Wireshark registers nothing on them by itself."""

CLASS_TAGS = {
    FrameClass.SIGNALING: "SIG",
    FrameClass.DATA: "DATA",
    FrameClass.DISCOVERY: "DISC",
    FrameClass.HEARTBEAT: "HB",
}
"""Short class names of the Info column, as pxdump's one-line view prints them."""

EXTRA_FIELDS: dict[str, str] = {
    "px.tlv.type": "TLV header: type code (one per TLV)",
    "px.tlv.length": "TLV header: value length (one per TLV)",
    "px.tlv.unknown": "value of a TLV type this spec does not know (to_dict key px.tlv.t<type>)",
    "px.response_in": "the frame of the response to this request",
    "px.response_to": "the frame of the request this response answers",
    "px.response_time": "time from the request to this response",
    "px.data.first_frag": "the frame holding fragment 0 of this message",
    "px.data.reassembled_in": "the frame in which this message was reassembled",
    "px.data.reassembled_len": "length of the message reassembled in this frame",
}
"""Dissector fields that are not ``Frame.to_dict()`` keys, and what they hold."""

# Words of field names spelled out in the tree labels.
_WORDS = {
    "src": "source",
    "dst": "destination",
    "dime": "DIME",
    "id": "ID",
    "ms": "(ms)",
    "mem": "memory",
    "msg": "message",
    "frag": "fragment",
    "len": "length",
    "tlv": "TLV",
    "cpu": "CPU",
    "rx": "RX",
    "tx": "TX",
    "sw": "software",
    "caps": "capabilities",
    "cmd": "command",
    "op": "operation",
    "req": "request",
    "hb": "heartbeat",
    "eth": "Ethernet",
    "seq": "sequence",
    "permille": "(per mille)",
}

_FIELD_TYPES = {1: "uint8", 2: "uint16", 4: "uint32", 8: "uint64"}
_HEX_FIELDS = {"px.eth.type", "px.disc.caps"}


def _label(key: str) -> str:
    words = key.removeprefix("px.").replace(".", " ").replace("_", " ").split()
    text = " ".join(_WORDS.get(w, w) for w in words)
    return text[:1].upper() + text[1:]


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _code_table(values: dict[int, str]) -> str:
    return "{" + ", ".join(f"[{k}] = {_lua_str(v)}" for k, v in sorted(values.items())) + "}"


def _enum_table(enum: type[IntEnum]) -> str:
    return _code_table({int(m): m.name for m in enum})


def _bit_key(key: str, name: str) -> str:
    return f"{key}.{name.lower()}"


class _Fields:
    """The ProtoField declarations, in a fixed order."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.keys: dict[str, str] = {}

    def add(self, key: str, ftype: str, label: str, *args: str) -> None:
        if key in self.keys:
            raise ValueError(f"field {key} declared twice")
        self.keys[key] = ftype
        rest = "".join(", " + a for a in args)
        self.lines.append(f'F["{key}"] = ProtoField.{ftype}("{key}", {_lua_str(label)}{rest})')

    def add_spec(self, info: layout.FieldInfo, string_valued: bool = False) -> None:
        label = _label(info.key)
        if info.kind == "enum" or string_valued:
            self.add(info.key, "string", label)
        elif info.kind == "flags":
            self.add(info.key, _FIELD_TYPES[info.size], label, "base.HEX")
            for bit, name in sorted(info.values.items()):
                self.add(_bit_key(info.key, name), "bool", name, str(info.size * 8), "nil", f"0x{bit:02x}")
        elif info.kind == "uint":
            base = "base.HEX" if info.key in _HEX_FIELDS else "base.DEC"
            self.add(info.key, _FIELD_TYPES[info.size], label, base)
        elif info.size == 6:
            self.add(info.key, "ether", label)
        else:
            self.add(info.key, "bytes", label)


def _layout_table(infos: Iterable[layout.FieldInfo], values: dict[str, dict[int, str]] | None = None) -> str:
    rows = []
    for f in infos:
        kind = f.kind
        extra = ""
        vals = (values or {}).get(f.key, f.values if f.kind == "enum" else None)
        if vals is not None:
            kind = "enum"
            extra = f", values = {_code_table(vals)}"
        if f.kind == "flags":
            bits = ", ".join(f'{{{bit}, "{_bit_key(f.key, name)}"}}' for bit, name in sorted(f.values.items()))
            extra = f", bits = {{{bits}}}"
        rows.append(
            f'  {{key = "{f.key}", name = "{f.name}", label = {_lua_str(_label(f.key))}, off = {f.offset}, '
            f'size = {f.size}, kind = "{kind}"{extra}}},'
        )
    return "{\n" + "\n".join(rows) + "\n}"


def field_types() -> dict[str, str]:
    """Every dissector field's key and its ProtoField type (``uint32``, ``string``, ``bytes``, ...)."""
    return _build()[1]


def _tlv_field_type(t: TlvType) -> str:
    kind = TLV_KINDS[t]
    if t in TLV_ENUMS or kind is TlvKind.TEXT:
        return "string"
    if kind is TlvKind.MAC:
        return "ether"
    if kind in (TlvKind.U8, TlvKind.U16, TlvKind.U32, TlvKind.U64):
        return _FIELD_TYPES[FIXED_TLV_SIZES[kind]]
    return "bytes"


def _build(ethermap: EtherTypeMap | None = None) -> tuple[str, dict[str, str]]:
    ethermap = ethermap or ethertypes.current()
    tables = layout.struct_tables()
    fl = _Fields()
    state_filter_values = {int(s): s.name for s in DimeState} | {STATE_ANY: "ANY"}
    string_valued = {"px.disc.state_filter": state_filter_values}

    # Ethernet and common header, then the derived header words to_dict() adds.
    for f in tables["eth"][1]:
        fl.add_spec(f)
    fl.add("px.eth.padding", "uint16", "Ethernet padding (bytes)", "base.DEC")
    fl.add("px.class", "string", "Frame class")
    for f in tables[""][1]:
        fl.add_spec(f)
    fl.add("px.scope", "string", "Scope")
    for f in tables["sig"][1]:
        fl.add_spec(f)
        if f.key == "px.cmd":
            fl.add("px.fcaps", "string", "FCAPS area")
    for f in tables["tlv"][1]:
        fl.add_spec(f)
    for t in TlvType:
        ftype = _tlv_field_type(t)
        fl.add(f"px.tlv.{t.name.lower()}", ftype, t.name, *(["base.DEC"] if ftype.startswith("uint") else []))
    fl.add("px.tlv.unknown", "bytes", "Unknown TLV")
    for f in tables["data"][1]:
        fl.add_spec(f)
    fl.add("px.data.payload_len", "uint32", "Payload length", "base.DEC")
    for prefix in ("disc", "disc.dime", "hb", "auth"):
        for f in tables[prefix][1]:
            fl.add_spec(f, string_valued=f.key in string_valued)
    fl.add("px.response_in", "framenum", "Response in", "base.NONE", "frametype.RESPONSE")
    fl.add("px.response_to", "framenum", "Response to", "base.NONE", "frametype.REQUEST")
    fl.add("px.response_time", "relative_time", "Response time")
    fl.add("px.data.first_frag", "framenum", "First fragment in", "base.NONE")
    fl.add("px.data.reassembled_in", "framenum", "Reassembled in", "base.NONE")
    fl.add("px.data.reassembled_len", "uint32", "Reassembled message length", "base.DEC")

    tlv_rows = []
    for t in TlvType:
        kind = TLV_KINDS[t]
        size = FIXED_TLV_SIZES.get(kind)
        enum = f", enum = {_enum_table(TLV_ENUMS[t])}" if t in TLV_ENUMS else ""
        tlv_rows.append(
            f'  [{int(t)}] = {{name = "{t.name}", key = "px.tlv.{t.name.lower()}", kind = "{kind.name}", '
            f"size = {size if size is not None else 'nil'}{enum}}},"
        )

    em = ethermap.as_dict()
    subs = {
        "%%VERSION%%": str(PROTOCOL_VERSION),
        "%%DIME_ALL%%": str(DIME_ALL),
        "%%STATE_ANY%%": str(STATE_ANY),
        "%%ETH_LEN%%": str(spec.ETH_LEN),
        "%%HEADER_LEN%%": str(spec.HEADER_LEN),
        "%%AUTH_LEN%%": str(spec.AUTH_LEN),
        "%%MIN_FRAME%%": str(spec.MIN_ETHERNET_FRAME),
        "%%TEXT_MAX%%": str(TEXT_MAX),
        "%%ACL_ENTRY%%": str(ACL_ENTRY_SIZE),
        "%%N_FCAPS%%": str(len(Fcaps)),
        "%%DIME_REC%%": str(spec.DimeRecord.sizeof()),
        "%%HEADER_FLAG_MASK%%": f"0x{int(HeaderFlag.SCOPE_DIME | HeaderFlag.AUTH):02x}",
        "%%SCOPE_DIME%%": f"0x{int(HeaderFlag.SCOPE_DIME):02x}",
        "%%AUTH_FLAG%%": f"0x{int(HeaderFlag.AUTH):02x}",
        "%%DATA_FLAG_MASK%%": f"0x{int(DataFlag.ACK | DataFlag.FIN):02x}",
        "%%ACK%%": f"0x{int(DataFlag.ACK):02x}",
        "%%FIN%%": f"0x{int(DataFlag.FIN):02x}",
        "%%REQUEST%%": str(int(Op.REQUEST)),
        "%%STATUS_OK%%": str(int(Status.OK)),
        "%%CLASSES%%": _code_table({int(c): c.name for c in FrameClass}),
        "%%CLASS_TAGS%%": _code_table({int(c): tag for c, tag in CLASS_TAGS.items()}),
        "%%FIXED_SIZE%%": _code_table(
            {int(c): str(s.sizeof()) for c, s in zip(FrameClass, spec.FIXED_BODIES.values(), strict=True)}
        ).replace('"', ""),
        "%%SIGNALING%%": str(int(FrameClass.SIGNALING)),
        "%%DATA%%": str(int(FrameClass.DATA)),
        "%%DISCOVERY%%": str(int(FrameClass.DISCOVERY)),
        "%%HEARTBEAT%%": str(int(FrameClass.HEARTBEAT)),
        "%%CMD_FCAPS%%": _code_table({int(c): c.fcaps.name for c in Command}),
        "%%CAPS%%": _code_table({int(c): str(c.name) for c in Capability}),
        "%%FCAPS%%": _code_table({int(c): c.name for c in Fcaps}),
        "%%ETHERTYPE_NAMES%%": "{" + ", ".join(f'"{k}"' for k in em) + "}",
        "%%ETHERTYPE_DEFAULTS%%": "{" + ", ".join(f"{k} = 0x{v:04x}" for k, v in em.items()) + "}",
        "%%LOCAL_EXPERIMENTAL%%": "{" + ", ".join(f"[0x{v:04X}] = true" for v in LOCAL_EXPERIMENTAL) + "}",
        "%%HEADER%%": _layout_table(tables[""][1]),
        "%%SIG%%": _layout_table(tables["sig"][1]),
        "%%DATA_FIXED%%": _layout_table(tables["data"][1]),
        "%%DISC%%": _layout_table(tables["disc"][1], string_valued),
        "%%DIME_RECORD%%": _layout_table(tables["disc.dime"][1]),
        "%%HB%%": _layout_table(tables["hb"][1]),
        "%%AUTH%%": _layout_table(tables["auth"][1]),
        "%%TLVS%%": "{\n" + "\n".join(tlv_rows) + "\n}",
        "%%FIELDS%%": "\n".join(fl.lines),
        "%%MAP%%": ethermap.describe(),
    }
    out = _TEMPLATE
    for k, v in subs.items():
        if k not in out:
            raise AssertionError(f"template lost its {k} slot")
        out = out.replace(k, v)
    left = re.findall(r"%%[A-Z_]+%%", out)
    if left:
        raise AssertionError(f"template slots left unfilled: {left}")
    return out, dict(fl.keys)


def generate(ethermap: EtherTypeMap | None = None) -> str:
    """The whole Lua dissector for ``ethermap`` (the map in force when None)."""
    return _build(ethermap)[0]


_TEMPLATE = r"""-- parallax.lua: Wireshark dissector for the Parallax DIME protocol.
--
-- GENERATED by `pxdissect` (pxproto.wire.gen_lua) from the spec in pxproto/wire/;
-- do not edit: change the spec and regenerate.  Default EtherType map: %%MAP%%.
--
-- Install: `pxdissect --install`, or copy this file into Wireshark's personal Lua
-- plugins folder (Help > About Wireshark > Folders).  Runs on Wireshark 4.0 (Lua 5.2)
-- and 4.4+ (Lua 5.4).  Display filter fields are the keys of pxdump --json, e.g.
--   px.cmd == "LOAD"   px.dime.src == 3   px.tlv.mem_chunks > 4   px.hb.state == "FAULTED"
-- Malformed frames carry expert info "px.malformed.*" whose text names the field and
-- byte offset exactly as pxproto's reference decoder does.

local px = Proto("px", "Parallax DIME protocol")

local PROTOCOL_VERSION = %%VERSION%%
local DIME_ALL = %%DIME_ALL%%
local STATE_ANY = %%STATE_ANY%%
local ETH_LEN = %%ETH_LEN%%
local HDR = %%ETH_LEN%% + %%HEADER_LEN%%
local HEADER_LEN = %%HEADER_LEN%%
local AUTH_LEN = %%AUTH_LEN%%
local MIN_FRAME = %%MIN_FRAME%%
local TEXT_MAX = %%TEXT_MAX%%
local ACL_ENTRY = %%ACL_ENTRY%%
local N_FCAPS = %%N_FCAPS%%
local DIME_REC = %%DIME_REC%%
local HEADER_FLAG_MASK = %%HEADER_FLAG_MASK%%
local SCOPE_DIME = %%SCOPE_DIME%%
local AUTH_FLAG = %%AUTH_FLAG%%
local DATA_FLAG_MASK = %%DATA_FLAG_MASK%%
local ACK = %%ACK%%
local FIN = %%FIN%%
local REQUEST = %%REQUEST%%
local STATUS_OK = %%STATUS_OK%%
local SIGNALING, DATA, DISCOVERY, HEARTBEAT = %%SIGNALING%%, %%DATA%%, %%DISCOVERY%%, %%HEARTBEAT%%
local CLASSES = %%CLASSES%%
local CLASS_TAGS = %%CLASS_TAGS%%
local FIXED_SIZE = %%FIXED_SIZE%%
local CMD_FCAPS = %%CMD_FCAPS%%
local CAPS = %%CAPS%%
local FCAPS = %%FCAPS%%
local ETHERTYPE_NAMES = %%ETHERTYPE_NAMES%%
local ETHERTYPE_DEFAULTS = %%ETHERTYPE_DEFAULTS%%
local LOCAL_EXPERIMENTAL = %%LOCAL_EXPERIMENTAL%%

-- Field layouts (offsets within each struct), from pxproto.wire.layout.
local HEADER = %%HEADER%%
local SIG = %%SIG%%
local DATA_FIXED = %%DATA_FIXED%%
local DISC = %%DISC%%
local DIME_RECORD = %%DIME_RECORD%%
local HB = %%HB%%
local AUTH = %%AUTH%%
local TLVS = %%TLVS%%

local F = {}
%%FIELDS%%
px.fields = F

local function expert_field(name, text, group, severity)
  return ProtoExpert.new("px." .. name, text, group, severity)
end
local EX = {
  length = expert_field("malformed.length", "Wrong length", expert.group.MALFORMED, expert.severity.ERROR),
  code = expert_field("malformed.code", "Unknown code", expert.group.MALFORMED, expert.severity.ERROR),
  tlv = expert_field("malformed.tlv", "Bad TLV", expert.group.MALFORMED, expert.severity.ERROR),
  trailer = expert_field("malformed.trailer", "Bad authentication trailer", expert.group.MALFORMED,
                         expert.severity.ERROR),
  scope = expert_field("malformed.scope", "Scope error", expert.group.MALFORMED, expert.severity.ERROR),
  fragment = expert_field("malformed.fragment", "Bad fragment", expert.group.MALFORMED, expert.severity.ERROR),
  field = expert_field("malformed.field", "Bad field value", expert.group.MALFORMED, expert.severity.ERROR),
  no_request = expert_field("no_request", "Response without a request in this capture", expert.group.SEQUENCE,
                            expert.severity.NOTE),
  bug = expert_field("dissector_bug", "Parallax dissector error", expert.group.UNDECODED, expert.severity.ERROR),
}
px.experts = {EX.length, EX.code, EX.tlv, EX.trailer, EX.scope, EX.fragment, EX.field, EX.no_request, EX.bug}

-- Preferences: the EtherType of each class, and whether to claim the IEEE Local
-- Experimental EtherTypes (0x88B5/0x88B6) automatically or only through Decode As.
for _, name in ipairs(ETHERTYPE_NAMES) do
  px.prefs[name] = Pref.uint(name:sub(1, 1):upper() .. name:sub(2) .. " EtherType", ETHERTYPE_DEFAULTS[name],
                             "EtherType of " .. name:upper() .. " frames")
end
px.prefs.claim_local_experimental = Pref.bool("Claim 0x88B5/0x88B6", true,
  "Register on the IEEE Local Experimental EtherTypes when the map uses them; "
  .. "when off, use Decode As (Ethertype) for them")
px.prefs.reassemble = Pref.bool("Reassemble DATA messages", true, "Show DATA messages whose fragments are all seen")
px.prefs.reassembly_max = Pref.uint("Largest message to reassemble (bytes)", 4194304,
  "Messages longer than this are not reassembled")

-- ---------------------------------------------------------------- helpers
-- Bit test and AND without bitwise operators (Lua 5.2 has none, Lua 5.4 no bit32).
local function band(a, b)
  local r, bit = 0, 1
  while a > 0 and b > 0 do
    if a % 2 == 1 and b % 2 == 1 then r = r + bit end
    a = (a - a % 2) / 2
    b = (b - b % 2) / 2
    bit = bit * 2
  end
  return r
end

local function hex2(v) return string.format("0x%02x", v) end

-- A protocol error: raised with error(), caught in the dissector, shown as expert info.
local function fail(group, field, offset, reason)
  error({px = true, group = group, field = field, offset = offset, reason = reason}, 0)
end

-- The byte index (0-based) of the first bytes of s that are not strict UTF-8, or nil.
local function utf8_error(s)
  local i, n = 1, #s
  while i <= n do
    local c = s:byte(i)
    local need, lo, hi = 0, 0x80, 0xBF
    if c < 0x80 then need = 0
    elseif c >= 0xC2 and c <= 0xDF then need = 1
    elseif c == 0xE0 then need, lo = 2, 0xA0
    elseif (c >= 0xE1 and c <= 0xEC) or c == 0xEE or c == 0xEF then need = 2
    elseif c == 0xED then need, hi = 2, 0x9F
    elseif c == 0xF0 then need, lo = 3, 0x90
    elseif c >= 0xF1 and c <= 0xF3 then need = 3
    elseif c == 0xF4 then need, hi = 3, 0x8F
    else return i - 1 end
    for k = 1, need do
      local d = s:byte(i + k)
      if d == nil then return i - 1 end
      if k == 1 then
        if d < lo or d > hi then return i - 1 end
      elseif d < 0x80 or d > 0xBF then
        return i - 1
      end
    end
    i = i + need + 1
  end
  return nil
end

-- Add the fields of one fixed struct at tvb offset base; returns {name = value}.
local function add_struct(tree, tvb, base, fields)
  local v = {}
  for _, fi in ipairs(fields) do
    local r = tvb(base + fi.off, fi.size)
    if fi.kind == "enum" then
      local code = r:uint()
      local name = fi.values[code]
      local label = string.format("%s: %s (%d)", fi.label, name or "unknown", code)
      tree:add(F[fi.key], r, name or hex2(code), label)
      v[fi.name] = code
    elseif fi.kind == "flags" then
      local item = tree:add(F[fi.key], r)
      for _, b in ipairs(fi.bits) do item:add(F[b[2]], r) end
      v[fi.name] = r:uint()
    elseif fi.kind == "uint" and fi.size == 8 then
      tree:add(F[fi.key], r)
      v[fi.name] = r:uint64()
    elseif fi.kind == "uint" then
      tree:add(F[fi.key], r)
      v[fi.name] = r:uint()
    else
      tree:add(F[fi.key], r)
    end
  end
  return v
end

local function by_name(fields)
  local t = {}
  for _, fi in ipairs(fields) do t[fi.name] = fi end
  return t
end

local function offsets(fields, base)
  local o = {}
  for _, fi in ipairs(fields) do o[fi.name] = base + fi.off end
  return o
end

local function endpoint(dime, thread)
  return (dime == DIME_ALL and "*" or tostring(dime)) .. "." .. tostring(thread)
end

-- ---------------------------------------------------------------- state
-- Request/response links and fragment bookkeeping, rebuilt on every (re)load.
local S
local function reset_state()
  S = {requests = {}, links = {}, msgs = {}, frags = {}, reassembled = {}}
end
reset_state()
px.init = reset_state

-- ---------------------------------------------------------------- bodies
-- Each mirrors pxproto.wire.codec: the same checks in the same order.
-- tvb offsets are frame offsets minus ETH_LEN; messages use frame offsets.

local function dissect_tlv(ctx, tree, pos, typ, len, i)
  local tvb = ctx.tvb
  local fo = pos + ETH_LEN
  local spec = TLVS[typ]
  local whole = tvb(pos, 4 + len)
  local raw = len > 0 and tvb(pos + 4, len):raw() or ""
  -- A bytes field takes its length from the range, so it gets exactly the value's bytes.
  local value_range = tvb(pos + 4, len)
  local item
  if spec == nil then
    item = tree:add(F["px.tlv.unknown"], value_range, raw)
    item:prepend_text(string.format("TLV %d: type %d: ", i, typ))
  else
    local lname = spec.name:lower()
    local fname = "tlv." .. lname
    local kind = spec.kind
    if spec.size ~= nil and len ~= spec.size then
      local bad = tree:add(whole, string.format("TLV %d: %s, %d bytes", i, spec.name, len))
      bad:add(F["px.tlv.type"], tvb(pos, 2))
      bad:add(F["px.tlv.length"], tvb(pos + 2, 2))
      fail("tlv", fname, fo + 2, string.format("length %d, a %s value is %d bytes", len, kind, spec.size))
    end
    local key = F[spec.key]
    if kind == "U8" or kind == "U16" or kind == "U32" or kind == "U64" then
      local vr = tvb(pos + 4, len)
      if spec.enum ~= nil then
        local code = vr:uint()
        local name = spec.enum[code]
        item = tree:add(key, whole, name or hex2(code),
                        string.format("%s: %s (%d)", spec.name, name or "unknown", code))
        if name == nil then
          fail("tlv", fname, fo + 4, string.format("unknown %s 0x%02x", lname, code))
        end
      elseif kind == "U64" then
        item = tree:add(key, whole, vr:uint64())
      else
        item = tree:add(key, whole, vr:uint())
      end
    elseif kind == "TEXT" then
      local bad = utf8_error(raw)
      local shown = raw
      if bad ~= nil then
        -- Never hand Wireshark bytes that are not UTF-8 as a string: escape from the first bad byte on.
        shown = raw:sub(1, bad) .. raw:sub(bad + 1):gsub(".", function(c) return string.format("\\x%02x", c:byte()) end)
      end
      item = tree:add(key, whole, shown)
      if len > TEXT_MAX then
        fail("tlv", fname, fo + 2, string.format("text of %d bytes, at most %d", len, TEXT_MAX))
      end
      if bad ~= nil then fail("tlv", fname, fo + 4 + bad, "not UTF-8") end
    elseif kind == "MAC" then
      item = tree:add(key, tvb(pos + 4, len))
    else
      item = tree:add(key, value_range, raw)
      if kind == "ACL" then
        if len % ACL_ENTRY ~= 0 then
          fail("tlv", fname, fo + 2, string.format("length %d is not a multiple of %d", len, ACL_ENTRY))
        end
        for k = 0, len - ACL_ENTRY, ACL_ENTRY do
          local e = tvb(pos + 4 + k, ACL_ENTRY)
          local mask, reserved = e(6, 1):uint(), e(7, 1):uint()
          local areas = {}
          for bit = 0, N_FCAPS - 1 do
            if band(mask, 2 ^ bit) ~= 0 then areas[#areas + 1] = FCAPS[bit] end
          end
          item:add(e, string.format("Entry %d: peer %s, FCAPS areas %s", k / ACL_ENTRY, tostring(e(0, 6):ether()),
                                    #areas > 0 and table.concat(areas, ",") or "none"))
          if mask >= 2 ^ N_FCAPS or reserved ~= 0 then
            fail("tlv", fname, fo + 4 + k + 6, string.format("entry %d: bad FCAPS mask/reserved", k / ACL_ENTRY))
          end
        end
      end
    end
  end
  item:add(F["px.tlv.type"], tvb(pos, 2))
  item:add(F["px.tlv.length"], tvb(pos + 2, 2))
end

local function dissect_signaling(ctx, tree, start, stop)
  local tvb = ctx.tvb
  local fs = start + ETH_LEN
  local v = add_struct(tree, tvb, start, SIG)
  local cmd = CMD_FCAPS[v.cmd]
  if cmd ~= nil then tree:add(F["px.fcaps"], tvb(start + 4, 1), cmd) end
  local sf = by_name(SIG)
  local cname, oname, sname = sf.cmd.values[v.cmd], sf.op.values[v.op], sf.status.values[v.status]
  ctx.info = ctx.info .. string.format("%s %s", cname or hex2(v.cmd), oname and oname:lower() or hex2(v.op))
  if cname == nil then fail("code", "cmd", fs + 4, string.format("unknown command %s", hex2(v.cmd))) end
  if oname == nil then fail("code", "op", fs + 5, string.format("unknown op %s", hex2(v.op))) end
  if sname == nil then fail("code", "status", fs + 6, string.format("unknown status %s", hex2(v.status))) end
  if v.op == REQUEST and v.status ~= STATUS_OK then
    fail("field", "status", fs + 6, string.format("a request carries OK, not %s", sname))
  end
  if v.op ~= REQUEST then ctx.info = ctx.info .. " " .. sname end
  ctx.info = ctx.info .. string.format(" id %d tlvs %d", v.req_id, v.tlv_count)
  local seen = {}
  local pos = start + SIG[#SIG].off + SIG[#SIG].size
  for i = 1, v.tlv_count do
    if pos + 4 > stop then
      fail("tlv", "tlv", pos + ETH_LEN, string.format("TLV %d of %d: header runs past the body end at %d", i,
                                                        v.tlv_count, stop + ETH_LEN))
    end
    local typ, len = tvb(pos, 2):uint(), tvb(pos + 2, 2):uint()
    if pos + 4 + len > stop then
      local bad = tree:add(tvb(pos, stop - pos), string.format("TLV %d: type %d, length %d (truncated)", i, typ, len))
      bad:add(F["px.tlv.type"], tvb(pos, 2))
      bad:add(F["px.tlv.length"], tvb(pos + 2, 2))
      fail("tlv", "tlv.length", pos + ETH_LEN + 2, string.format("TLV %d length %d runs past the body end", i, len))
    end
    if seen[typ] then fail("tlv", "tlv", pos + ETH_LEN, string.format("TLV type %d appears twice", typ)) end
    seen[typ] = true
    dissect_tlv(ctx, tree, pos, typ, len, i)
    pos = pos + 4 + len
  end
  if pos ~= stop then
    fail("tlv", "tlv_count", fs + 7, string.format("%d bytes follow the %d TLVs it announces", stop - pos,
                                                    v.tlv_count))
  end
  ctx.sig = v
end

local function dissect_data(ctx, tree, start, stop)
  local tvb = ctx.tvb
  local fs = start + ETH_LEN
  local v = add_struct(tree, tvb, start, DATA_FIXED)
  local fixed = DATA_FIXED[#DATA_FIXED].off + DATA_FIXED[#DATA_FIXED].size
  local plen = stop - start - fixed
  tree:add(F["px.data.payload_len"], plen):set_generated()
  local o = offsets(DATA_FIXED, fs)
  local flags = v.flags
  local ack = band(flags, ACK) ~= 0
  if v.frag_count > 0 then
    ctx.info = ctx.info .. string.format("ch %d msg %d frag %d/%d off %d bytes %d", v.channel, v.msg_id,
                                         v.frag_index + 1, v.frag_count, v.frag_offset, plen)
  else
    ctx.info = ctx.info .. string.format("ch %d", v.channel)
  end
  if ack then ctx.info = ctx.info .. string.format(" ACK %d credit %d", v.ack, v.credit) end
  if band(flags, FIN) ~= 0 then ctx.info = ctx.info .. " FIN" end
  if band(flags, 255 - DATA_FLAG_MASK) ~= 0 then
    fail("field", "data.flags", o.flags, string.format("reserved bits %s set", hex2(band(flags, 255 - DATA_FLAG_MASK))))
  end
  if plen > 0 then
    Dissector.get("data"):call(tvb(start + fixed, plen):tvb(), ctx.pinfo, tree)
  end
  if not ack then
    if v.ack ~= 0 then fail("fragment", "data.ack", o.ack, "ack set without the ACK flag") end
    if v.credit ~= 0 then fail("fragment", "data.credit", o.credit, "credit set without the ACK flag") end
  end
  if v.frag_count == 0 then
    if not ack then
      fail("fragment", "data.flags", o.flags, "an acknowledgement-only frame (frag_count 0) sets ACK")
    end
    for _, name in ipairs({"msg_len", "frag_offset", "frag_index"}) do
      if v[name] ~= 0 then
        fail("fragment", "data." .. name, o[name], "must be 0 in an acknowledgement-only frame")
      end
    end
    if plen > 0 then fail("length", "len", ctx.off.length, "an acknowledgement-only frame carries no payload") end
  else
    if v.frag_index >= v.frag_count then
      fail("fragment", "data.frag_index", o.frag_index, string.format("fragment %d of %d", v.frag_index,
                                                                        v.frag_count))
    end
    local frag_end = v.frag_offset + plen
    if frag_end > v.msg_len then
      fail("fragment", "data.frag_offset", o.frag_offset, string.format("fragment bytes %d..%d pass msg_len %d",
                                                                          v.frag_offset, frag_end, v.msg_len))
    end
    if v.frag_index == 0 and v.frag_offset ~= 0 then
      fail("fragment", "data.frag_offset", o.frag_offset, "the first fragment starts at 0")
    end
    if v.frag_index == v.frag_count - 1 and frag_end ~= v.msg_len then
      fail("fragment", "data.msg_len", o.msg_len, string.format("the last fragment ends at %d, not %d", frag_end,
                                                                  v.msg_len))
    end
    if plen == 0 and v.msg_len ~= 0 then
      fail("length", "len", ctx.off.length, "a fragment of a non-empty message carries no bytes")
    end
  end
  v.payload_at, v.payload_len = start + fixed, plen
  ctx.data = v
end

local function dissect_discovery(ctx, tree, start, stop)
  local tvb = ctx.tvb
  local fs = start + ETH_LEN
  local v = add_struct(tree, tvb, start, DISC)
  local caps = {}
  for bit, name in pairs(CAPS) do
    if band(v.caps, bit) ~= 0 then caps[#caps + 1] = {bit, name} end
  end
  table.sort(caps, function(a, b) return a[1] < b[1] end)
  for k, c in ipairs(caps) do caps[k] = c[2] end
  if #caps > 0 then tree:add(tvb(start + 12, 4), "Capabilities: " .. table.concat(caps, ", ")) end
  local states = by_name(DIME_RECORD).state.values
  local op = by_name(DISC).op.values[v.op]
  ctx.info = ctx.info .. string.format("%s probe %d dimes %d", op or hex2(v.op), v.probe_id, v.count)
  if op == nil then fail("code", "disc.op", fs, string.format("unknown discovery op %s", hex2(v.op))) end
  if v.state_filter ~= STATE_ANY and states[v.state_filter] == nil then
    fail("code", "disc.state_filter", fs + 1, string.format("unknown state %s", hex2(v.state_filter)))
  end
  local fixed = FIXED_SIZE[DISCOVERY]
  local want = fixed + DIME_REC * v.count
  if stop - start ~= want then
    fail("length", "disc.count", fs + 2, string.format("%d DIMEs need %d body bytes, there are %d", v.count, want,
                                                        stop - start))
  end
  if op == "PROBE" and v.count ~= 0 then fail("field", "disc.count", fs + 2, "a probe lists no DIMEs") end
  if op == "GRATUITOUS" and v.probe_id ~= 0 then
    fail("field", "disc.probe_id", fs + 4, "a gratuitous announce answers no probe (probe_id 0)")
  end
  local pos = start + fixed
  for i = 1, v.count do
    local sub = tree:add(tvb(pos, DIME_REC), string.format("DIME %d", i))
    local r = add_struct(sub, tvb, pos, DIME_RECORD)
    sub:append_text(string.format(": DIME %d on core %d, %s", r.dime, r.core,
                                  states[r.state] or hex2(r.state)))
    if states[r.state] == nil then
      fail("code", "disc.dime.state", pos + ETH_LEN + 4, string.format("unknown state %s", hex2(r.state)))
    end
    if r.mem_free > r.mem_total then
      fail("field", "disc.dime.mem_free", pos + ETH_LEN + 9, string.format("%d free chunks of %d", r.mem_free,
                                                                            r.mem_total))
    end
    pos = pos + DIME_REC
  end
end

local function dissect_heartbeat(ctx, tree, start, stop)
  local tvb = ctx.tvb
  local fs = start + ETH_LEN
  local fixed = FIXED_SIZE[HEARTBEAT]
  if stop - start ~= fixed then
    fail("length", "len", ctx.off.length, string.format("%d body bytes, a HEARTBEAT body is %d", stop - start,
                                                           fixed))
  end
  local v = add_struct(tree, tvb, start, HB)
  local state = by_name(HB).state.values[v.state]
  ctx.info = ctx.info .. string.format("epoch %d %s cpu %d.%d%% mem %d/%d", v.epoch, state or hex2(v.state),
                                       (v.cpu_permille - v.cpu_permille % 10) / 10, v.cpu_permille % 10,
                                       v.mem_used, v.mem_limit)
  if state == nil then fail("code", "hb.state", fs + 4, string.format("unknown state %s", hex2(v.state))) end
  if v.period_ms == 0 then fail("field", "hb.period_ms", fs + 5, "a heartbeat period of 0 ms") end
  if v.cpu_permille > 1000 then
    fail("field", "hb.cpu_permille", fs + 7, string.format("%d is over 1000", v.cpu_permille))
  end
end

local BODIES = {
  [SIGNALING] = dissect_signaling,
  [DATA] = dissect_data,
  [DISCOVERY] = dissect_discovery,
  [HEARTBEAT] = dissect_heartbeat,
}

-- ---------------------------------------------------------------- analysis

local function link_signaling(ctx, tree)
  local p, s = ctx.pinfo, ctx.sig
  local src, dst = tostring(p.dl_src), tostring(p.dl_dst)
  if not p.visited then
    if s.op == REQUEST then
      local t = {frame = p.number, ts = p.abs_ts}
      S.requests[src .. ">" .. dst .. "#" .. s.req_id] = t
      S.links[p.number] = {request = t}
    else
      local t = S.requests[dst .. ">" .. src .. "#" .. s.req_id]
      if t ~= nil then
        if t.response == nil then t.response = p.number end
        S.links[p.number] = {answers = t.frame, delta = p.abs_ts - t.ts}
      else
        S.links[p.number] = {}
      end
    end
  end
  local l = S.links[p.number]
  if l == nil then return end
  if l.request ~= nil and l.request.response ~= nil then
    tree:add(F["px.response_in"], l.request.response):set_generated()
  elseif l.answers ~= nil then
    tree:add(F["px.response_to"], l.answers):set_generated()
    local secs = math.floor(l.delta)
    local ns = math.floor((l.delta - secs) * 1e9 + 0.5)
    tree:add(F["px.response_time"], NSTime.new(secs, ns)):set_generated()
    ctx.info = ctx.info .. string.format(" rtt %.3fms", l.delta * 1000)
  elseif ctx.sig.op ~= REQUEST then
    tree:add_proto_expert_info(EX.no_request)
  end
end

local function link_data(ctx, tree)
  local p, d = ctx.pinfo, ctx.data
  if d.frag_count == 0 then return end
  local key = string.format("%s>%s/%d.%d>%d.%d/%d/%d", tostring(p.dl_src), tostring(p.dl_dst), ctx.h.src_dime,
                            ctx.h.src_thread, ctx.h.dst_dime, ctx.h.dst_thread, d.channel, d.msg_id)
  if not p.visited then
    local m = S.msgs[key]
    if m == nil or m.done then
      m = {parts = {}, count = 0, need = d.frag_count, len = d.msg_len}
      S.msgs[key] = m
    end
    if d.frag_index == 0 then m.first = p.number end
    S.frags[p.number] = m
    if m.parts[d.frag_index] == nil and m.need == d.frag_count and m.len == d.msg_len then
      m.parts[d.frag_index] = {off = d.frag_offset, frame = p.number,
                               raw = d.payload_len > 0 and ctx.tvb(d.payload_at, d.payload_len):raw() or ""}
      m.count = m.count + 1
      if m.need > 1 and m.count == m.need and px.prefs.reassemble and m.len <= px.prefs.reassembly_max then
        local pieces, at = {}, 0
        for i = 0, m.need - 1 do
          local part = m.parts[i]
          if part == nil or part.off ~= at then pieces = nil break end
          pieces[#pieces + 1] = part.raw
          at = at + #part.raw
        end
        if pieces ~= nil and at == m.len then
          m.done, m.complete = true, p.number
          S.reassembled[p.number] = table.concat(pieces)
        end
      end
    end
  end
  local m = S.frags[p.number]
  if m == nil then return end
  if m.first ~= nil and m.first ~= p.number then
    tree:add(F["px.data.first_frag"], m.first):set_generated()
  end
  local whole = S.reassembled[p.number]
  if whole ~= nil then
    local rtvb = ByteArray.new(whole, true):tvb("Reassembled message")
    local item = tree:add(F["px.data.reassembled_len"], rtvb(), #whole)
    item:set_generated()
    item:append_text(string.format(" (%d fragments)", m.need))
    ctx.info = ctx.info .. " [reassembled]"
    if #whole > 0 then Dissector.get("data"):call(rtvb, p, tree) end
  elseif m.complete ~= nil and m.complete ~= p.number then
    tree:add(F["px.data.reassembled_in"], m.complete):set_generated()
  end
  tree:append_text(string.format(", fragment %d of %d", d.frag_index + 1, d.frag_count))
end

-- ---------------------------------------------------------------- main

local OFF = offsets(HEADER, ETH_LEN)

local function class_of(ethertype)
  for cls, name in pairs(CLASSES) do
    if px.prefs[name:lower()] == ethertype then return cls end
  end
  return nil
end

local function map_text()
  local parts = {}
  for _, name in ipairs(ETHERTYPE_NAMES) do parts[#parts + 1] = string.format("%s=0x%04x", name, px.prefs[name]) end
  return table.concat(parts, ",")
end

local function dissect(ctx)
  local tvb, pinfo, root = ctx.tvb, ctx.pinfo, ctx.root
  local n = tvb:len() + ETH_LEN
  local ethertype = pinfo.match_uint
  root:add(F["px.eth.dst"], pinfo.dl_dst):set_generated()
  root:add(F["px.eth.src"], pinfo.dl_src):set_generated()
  root:add(F["px.eth.type"], ethertype):set_generated()
  local cls = class_of(ethertype)
  if cls == nil then
    fail("code", "eth.type", 12, string.format("0x%04x is not a Parallax EtherType (%s)", ethertype, map_text()))
  end
  ctx.tag = CLASS_TAGS[cls]
  ctx.info = ctx.tag .. " "
  root:add(F["px.class"], CLASSES[cls]):set_generated()
  root:append_text(", " .. CLASSES[cls])
  if n < HDR then
    fail("length", "header", ETH_LEN, string.format("truncated: %d bytes, the Parallax header needs %d", n - ETH_LEN,
                                                    HEADER_LEN))
  end
  local h = add_struct(root, tvb, 0, HEADER)
  ctx.h = h
  local scope = band(h.flags, SCOPE_DIME) ~= 0 and "DIME" or "SYSTEM"
  root:add(F["px.scope"], tvb(OFF.flags - ETH_LEN, 1), scope)
  ctx.info = ctx.info .. endpoint(h.src_dime, h.src_thread) .. " > " .. endpoint(h.dst_dime, h.dst_thread) .. " "
  if h.version ~= PROTOCOL_VERSION then
    fail("field", "version", OFF.version, string.format("version %d, this codec speaks %d", h.version,
                                                        PROTOCOL_VERSION))
  end
  if band(h.flags, 255 - HEADER_FLAG_MASK) ~= 0 then
    local bits = band(h.flags, 255 - HEADER_FLAG_MASK)
    fail("field", "flags", OFF.flags, string.format("reserved bits %s set", hex2(bits)))
  end
  local has_auth = band(h.flags, AUTH_FLAG) ~= 0
  local body_end = HDR + h.length
  if body_end > n then
    fail("length", "len", OFF.length, string.format("says %d body bytes, the frame holds %d", h.length, n - HDR))
  end
  local stop = body_end + (has_auth and AUTH_LEN or 0)
  if stop > n then
    fail("trailer", "auth", body_end, string.format("truncated trailer: %d of %d bytes", n - body_end, AUTH_LEN))
  end
  local padding = n - stop
  if padding > 0 then
    local zero = true
    local raw = tvb(stop - ETH_LEN, padding):raw()
    for k = 1, padding do
      if raw:byte(k) ~= 0 then zero = false break end
    end
    if not (n == MIN_FRAME and zero) then
      fail("length", "len", OFF.length, string.format("%d bytes follow the end of the frame at byte %d", padding,
                                                         stop))
    end
    root:add(F["px.eth.padding"], tvb(stop - ETH_LEN, padding), padding)
  else
    root:add(F["px.eth.padding"], 0):set_generated()
  end
  if cls == DATA and scope ~= "DIME" then fail("scope", "flags", OFF.flags, "a DATA frame must have DIME scope") end
  if (cls == DISCOVERY or cls == HEARTBEAT) and scope ~= "SYSTEM" then
    fail("scope", "flags", OFF.flags, string.format("a %s frame must have SYSTEM scope", CLASSES[cls]))
  end
  if scope == "SYSTEM" and h.dst_dime ~= DIME_ALL then
    fail("scope", "dime.dst", OFF.dst_dime, string.format("a SYSTEM-scope frame goes to 0xffff, not %d", h.dst_dime))
  end
  if scope == "DIME" and h.dst_dime == DIME_ALL then
    fail("scope", "dime.dst", OFF.dst_dime, "a DIME-scope frame needs a DIME id, not 0xffff")
  end
  if cls == HEARTBEAT and h.src_dime == DIME_ALL then
    fail("scope", "dime.src", OFF.src_dime, "a heartbeat comes from one DIME, not 0xffff")
  end
  if h.length < FIXED_SIZE[cls] then
    fail("length", "len", OFF.length, string.format("%d body bytes, a %s body needs at least %d", h.length,
                                                       CLASSES[cls], FIXED_SIZE[cls]))
  end
  local body = root:add(tvb(HEADER_LEN, h.length), CLASSES[cls] .. " body")
  BODIES[cls](ctx, body, HEADER_LEN, HEADER_LEN + h.length)
  if has_auth then
    local at = HEADER_LEN + h.length
    local trailer = root:add(tvb(at, AUTH_LEN), "Authentication trailer (HMAC-SHA256 truncated to 16 bytes)")
    local a = add_struct(trailer, tvb, at, AUTH)
    trailer:append_text(string.format(": key %d, counter %s, tag not verified (no key)", a.key_id,
                                      tostring(a.counter)))
    ctx.info = ctx.info .. string.format(" auth key %d", a.key_id)
    if a.key_id == 0 then fail("trailer", "auth.key_id", at + ETH_LEN, "key id 0 is reserved") end
    if a.counter:tonumber() == 0 then fail("trailer", "auth.counter", at + ETH_LEN + 2, "counter 0 is never sent") end
  end
  ctx.info = ctx.info .. " seq " .. tostring(h.seq) .. " len " .. n
  if ctx.sig ~= nil then link_signaling(ctx, root) end
  if ctx.data ~= nil then link_data(ctx, root) end
end

function px.dissector(tvb, pinfo, tree)
  pinfo.cols.protocol = "PX"
  local root = tree:add(px, tvb())
  local ctx = {tvb = tvb, pinfo = pinfo, root = root, info = "", tag = "PX", off = OFF}
  local ok, err = pcall(dissect, ctx)
  if not ok then
    if type(err) == "table" and err.px then
      local text = string.format("%s at byte %d: %s", err.field, err.offset, err.reason)
      root:add_proto_expert_info(EX[err.group], text)
      ctx.info = string.format("%s [malformed: %s] len %d", ctx.tag, text, tvb:len() + ETH_LEN)
    else
      root:add_proto_expert_info(EX.bug, "dissector error: " .. tostring(err))
    end
  end
  pinfo.cols.info = ctx.info
  return tvb:len()
end

-- ---------------------------------------------------------------- registration

local ethertype_table = DissectorTable.get("ethertype")
local registered = {}

local function register()
  for _, et in ipairs(registered) do ethertype_table:remove(et, px) end
  registered = {}
  for _, name in ipairs(ETHERTYPE_NAMES) do
    local et = px.prefs[name]
    if not LOCAL_EXPERIMENTAL[et] or px.prefs.claim_local_experimental then
      ethertype_table:add(et, px)
      registered[#registered + 1] = et
    end
  end
end

-- Decode As > Ethertype offers "PX" for any value, the Local Experimental ones included.
ethertype_table:add_for_decode_as(px)
register()

function px.prefs_changed()
  register()
end
"""
