"""Generate the fastpath's constants from the spec: ``python -m pxproto.wire.gen_fastpath [--check]``.

Writes two committed files, both derived from :mod:`pxproto.wire.layout`,
:mod:`pxproto.wire.codes` and :mod:`pxproto.wire.ethertypes`:

- ``pxproto/fastpath/wiregen.pxd``: C constants (sizes, offsets, codes, flag
  bits, default EtherTypes), code-validity tables and the error-field table,
  for every Cython module that ``cimport``s them;
- ``pxproto/fastpath/_wiregen.py``: the same error-field table and column
  names for Python (the pure fallback and the batch API).

``--check`` exits 1 when a committed file differs from what the spec gives
(the test suite runs it), so a spec change cannot leave a stale fast path.
"""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum
from pathlib import Path

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
    Command,
    DataFlag,
    DimeState,
    DiscoveryOp,
    Fcaps,
    FrameClass,
    HeaderFlag,
    Op,
    Status,
    TlvKind,
    TlvType,
)

FASTPATH_DIR = Path(__file__).resolve().parent.parent / "fastpath"
PXD_NAME = "wiregen.pxd"
PY_NAME = "_wiregen.py"

# C name of each struct prefix of layout.struct_tables().
STRUCT_C_NAMES = {
    "eth": "ETH",
    "": "HDR",
    "sig": "SIG",
    "tlv": "TLV",
    "data": "DATA",
    "disc": "DISC",
    "disc.dime": "DIME",
    "hb": "HB",
    "auth": "AUTH",
}
# Error fields that name a whole part rather than one field (docs/PROTOCOL.md, "Errors").
PART_FIELDS = ("frame", "eth", "header", "tlv", "auth")
U8_ENUMS: dict[str, type[IntEnum]] = {
    "CMD": Command,
    "OP": Op,
    "STATUS": Status,
    "STATE": DimeState,
    "DISC_OP": DiscoveryOp,
}


def error_fields() -> list[str]:
    """Error codes are indexes into this list; code 0 means no error."""
    out = [""]
    for name in PART_FIELDS:
        out.append(name)
    for _struct, fields in layout.struct_tables().values():
        for f in fields:
            key = f.key.removeprefix("px.")
            if key not in out:
                out.append(key)
    for t in TlvType:
        out.append(f"tlv.{t.name.lower()}")
    return out


def c_ident(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).upper()


def _table(name: str, size: int, values: dict[int, int], ctype: str = "unsigned char") -> str:
    cells = [str(values.get(i, 0)) for i in range(size)]
    rows = [", ".join(cells[i : i + 32]) for i in range(0, size, 32)]
    body = ",\n    ".join(rows)
    return f"static const {ctype} {name}[{size}] = {{\n    {body}\n}};"


def _constants() -> list[tuple[str, int]]:
    consts: list[tuple[str, int]] = [
        ("PX_PROTOCOL_VERSION", PROTOCOL_VERSION),
        ("PX_DIME_ALL", DIME_ALL),
        ("PX_STATE_ANY", STATE_ANY),
        ("PX_TEXT_MAX", TEXT_MAX),
        ("PX_ACL_ENTRY_SIZE", ACL_ENTRY_SIZE),
        ("PX_FCAPS_COUNT", len(Fcaps)),
        ("PX_MIN_ETHERNET_FRAME", spec.MIN_ETHERNET_FRAME),
        ("PX_BODY_OFFSET", spec.BODY_OFFSET),
        ("PX_TAG_LEN", spec.TAG_LEN),
    ]
    for name, value in ethertypes.DEFAULT.as_dict().items():
        consts.append((f"PX_ETHERTYPE_{name.upper()}", value))
    for cls in FrameClass:
        consts.append((f"PX_CLASS_{cls.name}", int(cls)))
    for prefix, (struct, fields) in layout.struct_tables().items():
        cname = STRUCT_C_NAMES[prefix]
        consts.append((f"PX_{cname}_LEN", struct.sizeof()))
        for f in fields:
            consts.append((f"PX_{cname}_{f.name.upper()}", f.offset))
    for hflag in HeaderFlag:
        consts.append((f"PX_HFLAG_{hflag.name}", int(hflag)))
    for dflag in DataFlag:
        consts.append((f"PX_DFLAG_{dflag.name}", int(dflag)))
    for cname, enum in U8_ENUMS.items():
        for member in enum:
            consts.append((f"PX_{cname}_{member.name}", int(member)))
    for t in TlvType:
        consts.append((f"PX_TLV_{t.name}", int(t)))
    consts.append(("PX_TLV_TYPE_MAX", max(int(t) for t in TlvType)))
    for k in TlvKind:
        consts.append((f"PX_TLVK_{k.name}", int(k)))
    errors = error_fields()
    for i, key in enumerate(errors):
        consts.append((f"PX_ERR_{c_ident(key) or 'OK'}", i))
    consts.append(("PX_ERR_COUNT", len(errors)))
    names = [n for n, _ in consts]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ValueError(f"two spec items map to the same C constant: {sorted(dup)}")
    return consts


def render_pxd() -> str:
    consts = _constants()
    fields = error_fields()
    c: list[str] = []
    for name, value in consts:
        c.append(f"#define {name} {value}")
    for cname, enum in U8_ENUMS.items():
        c.append(_table(f"PX_VALID_{cname}", 256, {int(m): 1 for m in enum}))
    tmax = max(int(t) for t in TlvType) + 1
    c.append(_table("PX_TLV_KIND", tmax, {int(t): int(k) for t, k in TLV_KINDS.items()}))
    c.append(_table("PX_TLV_ERR", tmax, {int(t): fields.index(f"tlv.{t.name.lower()}") for t in TlvType}))
    c.append(_table("PX_TLVK_SIZE", max(int(k) for k in TlvKind) + 1, {int(k): n for k, n in FIXED_TLV_SIZES.items()}))
    # Enum-valued TLVs: one switch, so a code added to codes.py lands here on regeneration.
    cases = []
    for t, enum in TLV_ENUMS.items():
        members = " || ".join(f"v == {int(m)}ULL" for m in enum)
        cases.append(f"    case {int(t)}: return {members};")
    c.append(
        "static inline int px_tlv_enum_ok(unsigned int type, unsigned long long v) {\n"
        "    switch (type) {\n" + "\n".join(cases) + "\n    default: return 1;\n    }\n}"
    )
    names = ",\n    ".join(f'"{f}"' for f in fields)
    c.append(f"static const char *PX_ERROR_FIELDS[{len(fields)}] = {{\n    {names}\n}};")
    verbatim = "\n".join(c)
    verbatim = "\n".join(("    " + line) if line else "" for line in verbatim.splitlines())
    decls = [f"    {name}" for name, _ in consts]
    tables = [f"    const unsigned char PX_VALID_{cname}[256]" for cname in U8_ENUMS]
    tables += [
        f"    const unsigned char PX_TLV_KIND[{tmax}]",
        f"    const unsigned char PX_TLV_ERR[{tmax}]",
        f"    const unsigned char PX_TLVK_SIZE[{max(int(k) for k in TlvKind) + 1}]",
        f"    const char *PX_ERROR_FIELDS[{len(fields)}]",
        "    int px_tlv_enum_ok(unsigned int type, unsigned long long v) noexcept nogil",
    ]
    return (
        "# GENERATED by pxproto/wire/gen_fastpath.py from the Construct spec; do not edit.\n"
        "# Regenerate with: python -m pxproto.wire.gen_fastpath\n"
        "# cython: language_level=3\n\n"
        'cdef extern from *:\n    """\n    #ifndef PX_WIREGEN_H\n    #define PX_WIREGEN_H\n'
        + verbatim
        + '\n    #endif\n    """\n'
        "    enum:\n" + "\n".join("    " + d for d in decls) + "\n" + "\n".join(tables) + "\n"
    )


def render_py() -> str:
    fields = error_fields()
    lines = [
        '"""GENERATED by pxproto/wire/gen_fastpath.py from the Construct spec; do not edit."""',
        "",
        "ERROR_FIELDS: tuple[str, ...] = (",
        *[f'    "{f}",' for f in fields],
        ")",
        '"""Error codes of the fastpath (index into this tuple; 0 = no error), spelled as ProtocolError.field."""',
        "",
        "ERROR_CODES: dict[str, int] = {f: i for i, f in enumerate(ERROR_FIELDS)}",
        "",
        "DEFAULT_ETHERTYPES: dict[str, int] = {",
        *[f'    "{k}": 0x{v:04X},' for k, v in ethertypes.DEFAULT.as_dict().items()],
        "}",
        "",
    ]
    return "\n".join(lines)


def outputs() -> dict[Path, str]:
    return {FASTPATH_DIR / PXD_NAME: render_pxd(), FASTPATH_DIR / PY_NAME: render_py()}


def stale() -> list[Path]:
    """Committed files that differ from what the spec generates now."""
    return [p for p, text in outputs().items() if not p.exists() or p.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pxproto.wire.gen_fastpath", description=__doc__)
    ap.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale()
        for p in bad:
            print(f"stale: {p} (run python -m pxproto.wire.gen_fastpath)", file=sys.stderr)
        return 1 if bad else 0
    for path, text in outputs().items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
