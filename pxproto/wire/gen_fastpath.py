"""Generate the fastpath's constants from the spec: ``python -m pxproto.wire.gen_fastpath [--check]``.

Writes three committed files, derived from :mod:`pxproto.wire.layout`,
:mod:`pxproto.wire.codes` and :mod:`pxproto.wire.ethertypes`:

- ``pxproto/fastpath/px_codec.h``: the codec as plain C, freestanding (only
  ``<stdint.h>``/``<stddef.h>``): the constants (sizes, offsets, codes, flag bits,
  default EtherTypes), the code-validity and error-field tables, and the
  static inline decoder/validator and encoders of the template ``px_codec.h.in``
  beside this file.  The Cython fast path wraps it; a bare-metal C program
  #includes it as it is;
- ``pxproto/fastpath/wiregen.pxd``: the header's constants and tables declared
  for every Cython module that ``cimport``s them;

Python reads the same error-field table from :data:`pxproto.wire.layout.ERROR_FIELDS`.

``--check`` exits 1 when a committed file differs from what the spec gives
(the test suite runs it), so a spec change cannot leave a stale fast path.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from enum import IntEnum
from pathlib import Path

from pxproto.wire import codes, ethertypes, layout, spec

FASTPATH_DIR = Path(__file__).resolve().parent.parent / "fastpath"
PXD_NAME = "wiregen.pxd"
HEADER_NAME = "px_codec.h"
TEMPLATE = Path(__file__).resolve().parent / "px_codec.h.in"
GENERATED_NAMES = (HEADER_NAME, PXD_NAME)

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
U8_ENUMS: dict[str, type[IntEnum]] = {
    "CMD": codes.Command,
    "OP": codes.Op,
    "STATUS": codes.Status,
    "STATE": codes.DimeState,
    "DISC_OP": codes.DiscoveryOp,
}


def error_fields() -> list[str]:
    """Error codes are indexes into this list; code 0 means no error (pxproto.wire.layout.error_fields)."""
    return list(layout.error_fields())


def c_ident(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).upper()


def _table(name: str, size: int, values: dict[int, int], ctype: str = "unsigned char") -> str:
    """A C array with designated initializers (C99): the entries that are not 0, unlisted ones are 0."""
    cells = [f"[{i}] = {v}" for i, v in sorted(values.items()) if v]
    rows: list[str] = []
    for cell in cells:
        if rows and len(rows[-1]) + len(cell) < 100:
            rows[-1] += f", {cell}"
        else:
            rows.append(cell)
    body = ",\n    ".join(rows) or "0"  # C99 has no empty initializer
    return f"static const {ctype} {name}[{size}] = {{\n    {body}\n}};"


def _constants() -> list[tuple[str, int]]:
    consts: list[tuple[str, int]] = [
        ("PX_PROTOCOL_VERSION", codes.PROTOCOL_VERSION),
        ("PX_DIME_ALL", codes.DIME_ALL),
        ("PX_STATE_ANY", codes.STATE_ANY),
        ("PX_TEXT_MAX", codes.TEXT_MAX),
        ("PX_ACL_ENTRY_SIZE", codes.ACL_ENTRY_SIZE),
        # an ACL entry is (peer MAC, FCAPS mask u8, reserved u8): the two last bytes
        ("PX_ACL_MASK", codes.ACL_ENTRY_SIZE - 2),
        ("PX_ACL_RESERVED", codes.ACL_ENTRY_SIZE - 1),
        ("PX_CPU_PERMILLE_MAX", codes.CPU_PERMILLE_MAX),
        ("PX_FCAPS_COUNT", len(codes.Fcaps)),
        ("PX_MIN_ETHERNET_FRAME", spec.MIN_ETHERNET_FRAME),
        ("PX_BODY_OFFSET", spec.BODY_OFFSET),
        ("PX_TAG_LEN", spec.TAG_LEN),
    ]
    for name, value in ethertypes.DEFAULT.as_dict().items():
        consts.append((f"PX_ETHERTYPE_{name.upper()}", value))
    for cls in codes.FrameClass:
        consts.append((f"PX_CLASS_{cls.name}", int(cls)))
    for prefix, (struct, fields) in layout.struct_tables().items():
        cname = STRUCT_C_NAMES[prefix]
        consts.append((f"PX_{cname}_LEN", struct.sizeof()))
        for f in fields:
            consts.append((f"PX_{cname}_{f.name.upper()}", f.offset))
    for hflag in codes.HeaderFlag:
        consts.append((f"PX_HFLAG_{hflag.name}", int(hflag)))
    for dflag in codes.DataFlag:
        consts.append((f"PX_DFLAG_{dflag.name}", int(dflag)))
    for cname, enum in U8_ENUMS.items():
        for member in enum:
            consts.append((f"PX_{cname}_{member.name}", int(member)))
    for t in codes.TlvType:
        consts.append((f"PX_TLV_{t.name}", int(t)))
    consts.append(("PX_TLV_TYPE_MAX", max(int(t) for t in codes.TlvType)))
    for k in codes.TlvKind:
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


def _c_tables() -> list[str]:
    """The code-validity tables, the TLV tables, the enum-TLV check and the error names, as C."""
    fields = error_fields()
    tmax = max(int(t) for t in codes.TlvType) + 1
    c: list[str] = []
    for cname, enum in U8_ENUMS.items():
        c.append(_table(f"PX_VALID_{cname}", 256, {int(m): 1 for m in enum}))
    c.append(_table("PX_TLV_KIND", tmax, {int(t): int(k) for t, k in codes.TLV_KINDS.items()}))
    c.append(_table("PX_TLV_ERR", tmax, {int(t): fields.index(f"tlv.{t.name.lower()}") for t in codes.TlvType}))
    c.append(
        _table(
            "PX_TLVK_SIZE",
            max(int(k) for k in codes.TlvKind) + 1,
            {int(k): n for k, n in codes.FIXED_TLV_SIZES.items()},
        )
    )
    body_len = {int(cls): spec.FIXED_BODIES[cls.name.lower()].sizeof() for cls in codes.FrameClass}
    c.append(_table("PX_CLASS_BODY_LEN", len(codes.FrameClass) + 1, body_len, "unsigned short"))
    # Enum-valued TLVs: one switch, so a code added to codes.py lands here on regeneration.
    cases = []
    for t, enum in codes.TLV_ENUMS.items():
        members = " || ".join(f"v == {int(m)}ULL" for m in enum)
        cases.append(f"    case {int(t)}: return {members};")
    c.append(
        "static inline int px_tlv_enum_ok(unsigned int type, unsigned long long v) {\n"
        "    switch (type) {\n" + "\n".join(cases) + "\n    default: return 1;\n    }\n}"
    )
    names = ",\n    ".join(f'"{f}"' for f in fields)
    c.append(f"static const char *const PX_ERROR_FIELDS[{len(fields)}] = {{\n    {names}\n}};")
    return c


BANNER = (
    "GENERATED by pxproto/wire/gen_fastpath.py from the spec and {template}; do not edit.\n"
    " * Regenerate with: python -m pxproto.wire.gen_fastpath"
)


def render_header() -> str:
    """px_codec.h: the template with the spec's constants and tables filled in, and a hash of
    the result (PX_CODEC_HASH) that every compiled module embeds (see pxproto.fastpath.select)."""
    template = TEMPLATE.read_text()
    consts = "\n".join(f"#define {name} {value}" for name, value in _constants())
    text = (
        template.replace("@BANNER@", BANNER.format(template=TEMPLATE.name))
        .replace("@CONSTANTS@", consts + '\n#define PX_CODEC_HASH "@HASH@"')
        .replace("@TABLES@", "\n\n".join(_c_tables()))
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return text.replace("@HASH@", digest)


def codec_hash(header: str) -> str:
    """The PX_CODEC_HASH a header text declares."""
    m = re.search(r'#define PX_CODEC_HASH "([0-9a-f]+)"', header)
    return m.group(1) if m else ""


def render_pxd() -> str:
    """wiregen.pxd: the header's constants and tables declared for Cython (``cimport *``)."""
    fields = error_fields()
    tmax = max(int(t) for t in codes.TlvType) + 1
    decls = [f"        {name}" for name, _ in _constants()]
    tables = [f"    const unsigned char PX_VALID_{cname}[256]" for cname in U8_ENUMS]
    tables += [
        f"    const unsigned char PX_TLV_KIND[{tmax}]",
        f"    const unsigned char PX_TLV_ERR[{tmax}]",
        f"    const unsigned char PX_TLVK_SIZE[{max(int(k) for k in codes.TlvKind) + 1}]",
        f"    const unsigned short PX_CLASS_BODY_LEN[{len(codes.FrameClass) + 1}]",
        f"    const char *const PX_ERROR_FIELDS[{len(fields)}]",
        "    const char *PX_CODEC_HASH",
        "    int px_tlv_enum_ok(unsigned int type, unsigned long long v) noexcept nogil",
    ]
    return (
        "# GENERATED by pxproto/wire/gen_fastpath.py from the Construct spec; do not edit.\n"
        "# Regenerate with: python -m pxproto.wire.gen_fastpath\n"
        "# cython: language_level=3\n\n"
        f'cdef extern from "{HEADER_NAME}":\n'
        "    enum:\n" + "\n".join(decls) + "\n" + "\n".join(tables) + "\n"
    )


def outputs() -> dict[Path, str]:
    return {
        FASTPATH_DIR / HEADER_NAME: render_header(),
        FASTPATH_DIR / PXD_NAME: render_pxd(),
    }


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
