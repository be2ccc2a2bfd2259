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
from importlib import resources

from pxproto.dime.replay import KEY_MIN_BYTES
from pxproto.wire import aead, codes, ethertypes, layout, spec
from pxproto.wire.ethertypes import EtherTypeMap

TEMPLATE_NAMES = (
    ("pxproto.wire", "parallax.lua.in"),
    ("pxproto.wire", "parallax_bodies.lua.in"),
    ("pxproto.dissect", "parallax_aead.lua.in"),
    ("pxproto.wire", "parallax_main.lua.in"),
)
"""The dissector's Lua template, (package, file) read in this order (head and helpers; the bodies of
the four classes; the AEAD key preference; analysis, the entry point and registration);
``%%NAME%%`` marks a slot filled from the spec."""

AEAD_CRYPTO = ("pxproto.dissect", "aead_crypto.lua.in")
"""Plain Lua (5.2 and 5.4) AES-256-GCM, SHA-256, HMAC and HKDF: the AEAD slot's body, runnable alone."""

LOCAL_EXPERIMENTAL = (0x88B5, 0x88B6)
"""IEEE 802 Local Experimental EtherTypes: Wireshark registers nothing on them by itself."""

CLASS_TAGS = {
    codes.FrameClass.SIGNALING: "SIG",
    codes.FrameClass.DATA: "DATA",
    codes.FrameClass.DISCOVERY: "DISC",
    codes.FrameClass.HEARTBEAT: "HB",
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
    "px.malformed": "true on every frame the reference decoder rejects (its expert names the field)",
    "px.decrypted": "true on an encrypted frame opened with the key preference (its body fields follow)",
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

HEADER_FLAGS = codes.HeaderFlag.SCOPE_DIME | codes.HeaderFlag.AUTH | codes.HeaderFlag.ENCRYPTED


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
        self.labels: dict[str, str] = {}

    def add(self, key: str, ftype: str, label: str, *args: str) -> None:
        if key in self.keys:
            raise ValueError(f"field {key} declared twice")
        self.keys[key] = ftype
        self.labels[key] = label
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


def _reader(fn: str, infos: Iterable[layout.FieldInfo]) -> str:
    """A Lua function reading one fixed struct's unsigned fields from a string with a single
    ``string.byte`` call into one table constructor (no per-field loop, no table growth)."""
    infos = list(infos)
    size = max(f.offset + f.size for f in infos)
    names = [f"x{i}" for i in range(size)]
    values = []
    for f in infos:
        if f.kind not in ("uint", "enum", "flags"):
            continue  # byte strings are read where they are shown
        bs = names[f.offset : f.offset + f.size]
        if f.size == 8:
            hi, lo = _be(bs[:4]), _be(bs[4:])
            values.append(f"{f.name} = u64({hi}, {lo})")
        else:
            values.append(f"{f.name} = {_be(bs)}")
    lines = [f"local function {fn}(raw, base)"]
    for k in range(0, size, 16):  # a few locals per line, for readable output
        chunk = names[k : k + 16]
        lines.append(f"  local {', '.join(chunk)} = byte(raw, base + {k + 1}, base + {k + len(chunk)})")
    lines.append("  return {" + ", ".join(values) + "}")
    lines.append("end")
    return "\n".join(lines)


def _be(names: list[str]) -> str:
    expr = names[0]
    for n in names[1:]:
        expr = f"({expr}) * 256 + {n}" if "*" in expr else f"{expr} * 256 + {n}"
    return expr


def field_types() -> dict[str, str]:
    """Every dissector field's key and its ProtoField type (``uint32``, ``string``, ``bytes``, ...)."""
    return _build()[1]


def field_list() -> list[tuple[str, str, str]]:
    """Every display-filter name the dissector registers, as (name, type, description), in
    declaration order: the fields, ``px.malformed``, then one expert per field an error can name."""
    fl = _fields()
    rows = [(k, t, EXTRA_FIELDS.get(k, fl.labels[k])) for k, t in fl.keys.items()]
    for name in error_fields():
        rows.append((f"px.malformed.{name}", "expert", f"error in {name} (text: '{name} at byte N: reason')"))
    rows.append(("px.no_request", "expert", "a response whose request is not in the capture"))
    rows.append(("px.aead.auth_failed", "expert", "an encrypted frame whose AES-256-GCM tag fails under the key"))
    rows.append(("px.aead.no_key", "expert", "an encrypted frame whose key id the key preferences lack"))
    rows.append(("px.aead.key_error", "expert", "the key preference or key file cannot be read (text: why)"))
    rows.append(("px.dissector_bug", "expert", "a Lua error in the dissector (report it)"))
    return rows


def _tlv_field_type(t: codes.TlvType) -> str:
    kind = codes.TLV_KINDS[t]
    if t in codes.TLV_ENUMS or kind is codes.TlvKind.TEXT:
        return "string"
    if kind is codes.TlvKind.MAC:
        return "ether"
    if kind in (codes.TlvKind.U8, codes.TlvKind.U16, codes.TlvKind.U32, codes.TlvKind.U64):
        return _FIELD_TYPES[codes.FIXED_TLV_SIZES[kind]]
    return "bytes"


def _fields() -> _Fields:
    tables = layout.struct_tables()
    fl = _Fields()
    state_filter_values = {int(s): s.name for s in codes.DimeState} | {codes.STATE_ANY: "ANY"}
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
    for t in codes.TlvType:
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
    fl.add("px.malformed", "bool", "Malformed frame")
    fl.add("px.decrypted", "bool", "Decrypted (AEAD key preference)")
    return fl


def _build(ethermap: EtherTypeMap | None = None) -> tuple[str, dict[str, str]]:
    ethermap = ethermap or ethertypes.current()
    tables = layout.struct_tables()
    fl = _fields()
    state_filter_values = {int(s): s.name for s in codes.DimeState} | {codes.STATE_ANY: "ANY"}
    string_valued = {"px.disc.state_filter": state_filter_values}

    tlv_rows = []
    for t in codes.TlvType:
        kind = codes.TLV_KINDS[t]
        size = codes.FIXED_TLV_SIZES.get(kind)
        enum = f", enum = {_enum_table(codes.TLV_ENUMS[t])}" if t in codes.TLV_ENUMS else ""
        tlv_rows.append(
            f'  [{int(t)}] = {{name = "{t.name}", key = "px.tlv.{t.name.lower()}", kind = "{kind.name}", '
            f"size = {size if size is not None else 'nil'}{enum}}},"
        )

    em = ethermap.as_dict()
    template = _template()
    subs = {
        "%%VERSION%%": str(codes.PROTOCOL_VERSION),
        "%%DIME_ALL%%": str(codes.DIME_ALL),
        "%%STATE_ANY%%": str(codes.STATE_ANY),
        "%%ETH_LEN%%": str(spec.ETH_LEN),
        "%%HEADER_LEN%%": str(spec.HEADER_LEN),
        "%%AUTH_LEN%%": str(spec.AUTH_LEN),
        "%%MIN_FRAME%%": str(spec.MIN_ETHERNET_FRAME),
        "%%TEXT_MAX%%": str(codes.TEXT_MAX),
        "%%ACL_ENTRY%%": str(codes.ACL_ENTRY_SIZE),
        "%%N_FCAPS%%": str(len(codes.Fcaps)),
        "%%DIME_REC%%": str(spec.DimeRecord.sizeof()),
        "%%HEADER_FLAG_MASK%%": f"0x{int(HEADER_FLAGS):02x}",
        "%%ENCRYPTED_FLAG%%": f"0x{int(codes.HeaderFlag.ENCRYPTED):02x}",
        "%%SCOPE_DIME%%": f"0x{int(codes.HeaderFlag.SCOPE_DIME):02x}",
        "%%AUTH_FLAG%%": f"0x{int(codes.HeaderFlag.AUTH):02x}",
        "%%DATA_FLAG_MASK%%": f"0x{int(codes.DataFlag.ACK | codes.DataFlag.FIN):02x}",
        "%%ACK%%": f"0x{int(codes.DataFlag.ACK):02x}",
        "%%FIN%%": f"0x{int(codes.DataFlag.FIN):02x}",
        "%%REQUEST%%": str(int(codes.Op.REQUEST)),
        "%%STATUS_OK%%": str(int(codes.Status.OK)),
        "%%CLASSES%%": _code_table({int(c): c.name for c in codes.FrameClass}),
        "%%CLASS_TAGS%%": _code_table({int(c): tag for c, tag in CLASS_TAGS.items()}),
        "%%FIXED_SIZE%%": _code_table(
            {int(c): str(s.sizeof()) for c, s in zip(codes.FrameClass, spec.FIXED_BODIES.values(), strict=True)}
        ).replace('"', ""),
        "%%SIGNALING%%": str(int(codes.FrameClass.SIGNALING)),
        "%%DATA%%": str(int(codes.FrameClass.DATA)),
        "%%DISCOVERY%%": str(int(codes.FrameClass.DISCOVERY)),
        "%%HEARTBEAT%%": str(int(codes.FrameClass.HEARTBEAT)),
        "%%CMD_FCAPS%%": _code_table({int(c): c.fcaps.name for c in codes.Command}),
        "%%CAPS%%": _code_table({int(c): str(c.name) for c in codes.Capability}),
        "%%FCAPS%%": _code_table({int(c): c.name for c in codes.Fcaps}),
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
        "%%READERS%%": "\n".join(
            _reader(fn, tables[t][1])
            for fn, t in (
                ("read_header", ""),
                ("read_sig", "sig"),
                ("read_data", "data"),
                ("read_disc", "disc"),
                ("read_dime", "disc.dime"),
                ("read_hb", "hb"),
                ("read_auth", "auth"),
            )
        ),
        "%%TLVS%%": "{\n" + "\n".join(tlv_rows) + "\n}",
        "%%FIELDS%%": "\n".join(fl.lines),
        "%%MAP%%": ethermap.describe(),
        "%%AEAD_CRYPTO%%": aead_crypto().rstrip("\n"),
        "%%AEAD_INFO%%": _lua_str(aead.INFO.decode("ascii")),
        "%%AEAD_NONCE_PAD%%": str(len(aead.NONCE_PAD)),
        "%%AEAD_IDS%%": str(aead.IDS_LEN),
        "%%KEY_MIN%%": str(KEY_MIN_BYTES),
        "%%ERROR_FIELDS%%": "{" + ", ".join(f'"{k}"' for k in error_fields(template)) + "}",
    }
    out = template
    for k, v in subs.items():
        if k not in out:
            raise AssertionError(f"template lost its {k} slot")
        out = out.replace(k, v)
    left = re.findall(r"%%[A-Z_]+%%", out)
    if left:
        raise AssertionError(f"template slots left unfilled: {left}")
    return out, dict(fl.keys)


def _template() -> str:
    """The Lua source with ``%%SLOT%%`` placeholders, shipped beside this module and pxproto.dissect."""
    return "".join(resources.files(pkg).joinpath(name).read_text(encoding="utf-8") for pkg, name in TEMPLATE_NAMES)


def aead_crypto() -> str:
    """The plain-Lua crypto chunk of the dissector (it ends with ``return {...}``)."""
    pkg, name = AEAD_CRYPTO
    return resources.files(pkg).joinpath(name).read_text(encoding="utf-8")


def error_fields(template: str | None = None) -> list[str]:
    """The fields a malformed frame's error can name: each gets its own ``px.malformed.<field>`` expert."""
    named = set(re.findall(r'fail\("\w+", "([\w.]+)"', template or _template()))
    return sorted(named | {f"tlv.{t.name.lower()}" for t in codes.TlvType})


def generate(ethermap: EtherTypeMap | None = None) -> str:
    """The whole Lua dissector for ``ethermap`` (the map in force when None)."""
    return _build(ethermap)[0]
