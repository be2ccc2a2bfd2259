"""Field tables read off the Construct spec, for the generators.

Every generated artifact (docs/PROTOCOL.md, the fastpath's constants, the
Lua dissector) takes offsets, widths and code tables from here, and this
module takes them from :mod:`pxproto.wire.spec`; nothing is typed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from construct import Bytes, Construct, Enum, FlagsEnum, FormatField, Struct

from pxproto.wire import spec
from pxproto.wire.codes import FrameClass, TlvType


@dataclass(frozen=True)
class FieldInfo:
    """One fixed-width field of a struct."""

    name: str
    offset: int
    size: int
    kind: str
    """``uint``, ``bytes``, ``enum`` or ``flags``."""
    key: str = ""
    """The field's ``px.*`` name (Frame.to_dict() key, dissector field, ProtocolError.field with ``px.``)."""
    values: dict[int, str] = field(default_factory=dict)
    """Code table of an enum field, or bit table of a flags field."""


def _describe(prefix: str, name: str, offset: int, sub: Construct) -> FieldInfo:
    key = spec.field_key(prefix, name)
    if isinstance(sub, Enum):
        values = {int(k): str(v) for k, v in sub.decmapping.items()}
        return FieldInfo(name, offset, sub.subcon.sizeof(), "enum", key, values)
    if isinstance(sub, FlagsEnum):
        values = {int(v): str(k) for k, v in sub.flags.items()}
        return FieldInfo(name, offset, sub.subcon.sizeof(), "flags", key, values)
    if isinstance(sub, FormatField):
        return FieldInfo(name, offset, sub.length, "uint", key)
    if isinstance(sub, Bytes):
        return FieldInfo(name, offset, sub.sizeof(), "bytes", key)
    raise TypeError(f"field {name}: no table form for {type(sub).__name__}")


def fields(struct: Struct, prefix: str | None = None) -> list[FieldInfo]:
    """The fields of a fixed-size struct with their offsets inside it; ``prefix``
    (found from STRUCT_PREFIXES when None) places their px.* keys."""
    if prefix is None:
        prefix = next(p for p, s in spec.STRUCT_PREFIXES.items() if s is struct)
    out = []
    offset = 0
    for sub in struct.subcons:
        info = _describe(prefix, sub.name, offset, sub.subcon)
        out.append(info)
        offset += info.size
    return out


def struct_tables() -> dict[str, tuple[Struct, list[FieldInfo]]]:
    """Every fixed struct of the spec, keyed by its to_dict() prefix."""
    return {prefix: (struct, fields(struct, prefix)) for prefix, struct in spec.STRUCT_PREFIXES.items()}


def _class_prefixes() -> dict[FrameClass, str]:
    by_struct = {id(s): p for p, s in spec.STRUCT_PREFIXES.items()}
    return {FrameClass[name.upper()]: by_struct[id(s)] for name, s in spec.FIXED_BODIES.items()}


CLASS_PREFIX: dict[FrameClass, str] = _class_prefixes()
"""The prefix (``sig``, ``data``, ``disc``, ``hb``) of each frame class's fixed body."""
PREFIX_CLASS: dict[str, FrameClass] = {p: c for c, p in CLASS_PREFIX.items()}
"""The frame class whose body a prefix names (Ethernet and header prefixes have none)."""
PREFIX_BASE: dict[str, int] = {"eth": 0, "": spec.HEADER_OFFSET} | dict.fromkeys(
    CLASS_PREFIX.values(), spec.BODY_OFFSET
)
"""Where each struct at a fixed place of every frame starts, from the frame's first byte, by prefix
(TLVs, DIME records and the trailer have no fixed place)."""


PART_FIELDS = ("frame", "eth", "header", "tlv", "auth")
"""Error fields that name a whole part rather than one field (the header's length is `len`, its key
without `px.`, like every other field)."""


def error_fields() -> tuple[str, ...]:
    """Every ProtocolError.field a decoder can report, in a fixed order: the fast path's and
    px_codec.h's error codes are indexes into it (0, "", means no error)."""
    out = ["", *PART_FIELDS]
    for _struct, fields in struct_tables().values():
        for f in fields:
            key = f.key.removeprefix("px.")
            if key not in out:
                out.append(key)
    out += [f"tlv.{t.name.lower()}" for t in TlvType]
    return tuple(out)


ERROR_FIELDS: tuple[str, ...] = error_fields()
"""Error codes of the fast path and px_codec.h (index into this tuple; 0 = no error), spelled as ProtocolError.field."""
ERROR_CODES: dict[str, int] = {f: i for i, f in enumerate(ERROR_FIELDS)}
