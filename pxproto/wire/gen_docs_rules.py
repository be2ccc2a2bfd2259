"""The normative parts of docs/PROTOCOL.md that are prose: the decoding procedure (rules in check
order, each with the error field and offset), errors, the JSON view and the trailer.

Offsets and sizes come from :mod:`pxproto.wire.layout` and :mod:`pxproto.wire.spec`; the order of
the steps is the reference codec's (:mod:`pxproto.wire.codec`), and docs/conformance.json pins it.
"""

from __future__ import annotations

from pxproto.wire import layout, spec
from pxproto.wire.codes import (
    ACL_ENTRY_SIZE,
    DIME_ALL,
    FIXED_TLV_SIZES,
    PROTOCOL_VERSION,
    STATE_ANY,
    TEXT_MAX,
    Fcaps,
    FrameClass,
)

ETH = spec.ETH_LEN
HDR = spec.BODY_OFFSET
MAX_BODY = 0xFFFF
MAX_FRAME = HDR + MAX_BODY + spec.AUTH_LEN


def off(prefix: str, name: str) -> int:
    """Offset of a field inside its struct."""
    return next(f.offset for f in layout.struct_tables()[prefix][1] if f.name == name)


def size(prefix: str) -> int:
    return int(layout.struct_tables()[prefix][0].sizeof())


MAX_TLV_VALUE = MAX_BODY - size("sig") - size("tlv")
"""The longest value a TLV can hold: the rest of the largest body after the fixed part and the TLV header."""


def _h(name: str) -> str:
    return str(ETH + off("", name))


def _b(prefix: str, name: str) -> str:
    o = off(prefix, name)
    return f"b+{o}" if o else "b"


Row = tuple[str, str, str, str]
"""One rule: (its name, when the frame is rejected, the error field, the error offset).  The name is
not printed: prose cites a rule by name (``{n[padding]}`` in a template) and gets its number, so a
row inserted or moved renumbers every reference to it."""


class RuleNumbers(dict[str, int]):
    """Rule numbers by name, for the prose templates: frame rules by their bare name, a body table's by
    ``<prefix>.<name>`` (``data.fits``).  Every name looked up is kept in :attr:`cited`; a name that no
    row has fails the generation (KeyError)."""

    def __init__(self) -> None:
        super().__init__()
        self.cited: set[str] = set()

    def __getitem__(self, name: str) -> int:
        if name not in self:
            raise KeyError(f"the prose cites rule {name!r}, which no rule row is named")
        self.cited.add(name)
        return super().__getitem__(name)


def _rows(rows: list[Row]) -> str:
    names = [name for name, *_ in rows]
    assert len(set(names)) == len(names), "rule names must be unique within a table"
    out = ["| # | the frame is rejected when | error field | error offset |", "|---|---|---|---|"]
    out += [f"| {i} | {cond} | `{field}` | {offset} |" for i, (_, cond, field, offset) in enumerate(rows, 1)]
    return "\n".join(out)


def _number(rows: list[Row], prefix: str = "") -> dict[str, int]:
    return {(f"{prefix}.{name}" if prefix else name): i for i, (name, *_) in enumerate(rows, 1)}


def frame_rows() -> list[Row]:
    n_fixed = {
        c: size(p) for c, p in (("SIGNALING", "sig"), ("DATA", "data"), ("DISCOVERY", "disc"), ("HEARTBEAT", "hb"))
    }
    fixed = ", ".join(f"{c} {n}" for c, n in n_fixed.items())
    return [
        ("eth", f"it has fewer than {ETH} bytes", "eth", "0"),
        ("ethertype", "its EtherType is none of the four classes' (not a Parallax frame)", "eth.type", "12"),
        ("header", f"it has fewer than {HDR} bytes (no whole header)", "header", str(ETH)),
        ("version", f"`version` is not {PROTOCOL_VERSION}", "version", _h("version")),
        (
            "reserved_flags",
            "a reserved bit of `flags` is set (bits other than 0x01 SCOPE_DIME, 0x02 AUTH, 0x04 ENCRYPTED)",
            "flags",
            _h("flags"),
        ),
        (
            "encrypted_needs_auth",
            "ENCRYPTED is set and AUTH is clear (an encrypted body needs the trailer's tag)",
            "flags",
            _h("flags"),
        ),
        ("body_fits", f"{HDR} + `length` > n (the body does not fit)", "len", _h("length")),
        (
            "trailer_fits",
            f"AUTH is set and {HDR} + `length` + {spec.AUTH_LEN} > n (the trailer does not fit)",
            "auth",
            f"{HDR} + `length`",
        ),
        (
            "padding",
            "bytes follow the end *e* (after the trailer if AUTH, else after the body), unless n is exactly "
            f"{spec.MIN_ETHERNET_FRAME} and every byte after *e* is 0 (Ethernet padding: `px.eth.padding` = n - e)",
            "len",
            _h("length"),
        ),
        ("data_scope", "a DATA frame has SYSTEM scope (SCOPE_DIME clear)", "flags", _h("flags")),
        (
            "system_classes_scope",
            "a DISCOVERY or HEARTBEAT frame has DIME scope (SCOPE_DIME set)",
            "flags",
            _h("flags"),
        ),
        ("system_dst", f"SYSTEM scope and `dst_dime` is not 0x{DIME_ALL:04x}", "dime.dst", _h("dst_dime")),
        ("dime_dst", f"DIME scope and `dst_dime` is 0x{DIME_ALL:04x}", "dime.dst", _h("dst_dime")),
        ("heartbeat_src", f"a HEARTBEAT's `src_dime` is 0x{DIME_ALL:04x}", "dime.src", _h("src_dime")),
        (
            "fixed_body",
            f"ENCRYPTED is clear and `length` is less than the class's fixed body ({fixed})",
            "len",
            _h("length"),
        ),
        ("body_rules", "ENCRYPTED is clear and the class's body rules below fail", "(below)", "(below)"),
        ("key_id", "AUTH is set and the trailer's `key_id` is 0", "auth.key_id", "t"),
        ("counter", "AUTH is set and the trailer's `counter` is 0", "auth.counter", f"t+{off('auth', 'counter')}"),
    ]


def signaling_rows() -> list[Row]:
    acl_mask = (1 << len(Fcaps)) - 1
    sizes = ", ".join(f"{k.name} {v}" for k, v in FIXED_TLV_SIZES.items())
    return [
        ("cmd", "`cmd` is not a Command code", "cmd", _b("sig", "cmd")),
        ("op", "`op` is not an Op code", "op", _b("sig", "op")),
        ("status", "`status` is not a Status code", "status", _b("sig", "status")),
        ("request_ok", "`op` is REQUEST and `status` is not OK", "status", _b("sig", "status")),
        (
            "tlv_header",
            "TLV *i* (1..`tlv_count`, at offset p): fewer than 4 bytes remain before the body end",
            "tlv",
            "p",
        ),
        ("tlv_fits", "TLV *i*: p + 4 + its `length` passes the body end", "tlv.length", "p+2"),
        ("tlv_repeated", "TLV *i*: its type appeared in an earlier TLV of this frame", "tlv", "p"),
        (
            "tlv_fixed_size",
            f"TLV *i* of a known type and a fixed-size kind ({sizes}): `length` differs",
            "*key*",
            "p+2",
        ),
        (
            "tlv_enum",
            "TLV *i* of an enum-valued type (PARAM_ID, DIRECTION, FAULT_CODE): not a code of its enum",
            "*key*",
            "p+4",
        ),
        ("text_max", f"TLV *i* of kind TEXT: `length` > {TEXT_MAX}", "*key*", "p+2"),
        (
            "utf8",
            "TLV *i* of kind TEXT: the value is not well-formed UTF-8 (RFC 3629: no overlongs, surrogates, "
            "or code points above U+10FFFF)",
            "*key*",
            "p+4+k, k = index of the first byte of the first ill-formed or truncated sequence",
        ),
        ("acl_size", f"TLV *i* of kind ACL: `length` is not a multiple of {ACL_ENTRY_SIZE}", "*key*", "p+2"),
        (
            "acl_entry",
            f"TLV *i* of kind ACL: entry j (j = 0 for the first entry) has a mask bit above 0x{acl_mask:02x} "
            "or a non-zero reserved byte",
            "*key*",
            f"p+4+{ACL_ENTRY_SIZE}j+6 (the entry's mask byte, for either fault)",
        ),
        ("tlv_count", "after `tlv_count` TLVs, bytes remain before the body end", "tlv_count", _b("sig", "tlv_count")),
    ]


def data_rows() -> list[Row]:
    return [
        (
            "flags",
            "a reserved bit of `flags` is set (bits other than 0x01 ACK, 0x02 FIN)",
            "data.flags",
            _b("data", "flags"),
        ),
        ("ack", "ACK is clear and `ack` is not 0", "data.ack", _b("data", "ack")),
        ("credit", "ACK is clear and `credit` is not 0", "data.credit", _b("data", "credit")),
        ("ack_only", "`frag_count` is 0 (acknowledgement-only) and ACK is clear", "data.flags", _b("data", "flags")),
        ("ack_only_msg_len", "`frag_count` is 0 and `msg_len` is not 0", "data.msg_len", _b("data", "msg_len")),
        (
            "ack_only_frag_offset",
            "`frag_count` is 0 and `frag_offset` is not 0",
            "data.frag_offset",
            _b("data", "frag_offset"),
        ),
        (
            "ack_only_frag_index",
            "`frag_count` is 0 and `frag_index` is not 0",
            "data.frag_index",
            _b("data", "frag_index"),
        ),
        ("ack_only_payload", "`frag_count` is 0 and a payload follows the fixed part", "len", _h("length")),
        (
            "frag_index",
            "`frag_count` > 0 and `frag_index` >= `frag_count`",
            "data.frag_index",
            _b("data", "frag_index"),
        ),
        ("fits", "`frag_offset` + payload length > `msg_len`", "data.frag_offset", _b("data", "frag_offset")),
        ("first", "`frag_index` is 0 and `frag_offset` is not 0", "data.frag_offset", _b("data", "frag_offset")),
        (
            "last",
            "`frag_index` is `frag_count` - 1 and `frag_offset` + payload length is not `msg_len`",
            "data.msg_len",
            _b("data", "msg_len"),
        ),
        ("empty", "the payload is empty and `msg_len` is not 0", "len", _h("length")),
    ]


def discovery_rows() -> list[Row]:
    rec = size("disc.dime")
    return [
        ("op", "`op` is not a DiscoveryOp code", "disc.op", _b("disc", "op")),
        (
            "state_filter",
            f"`state_filter` is neither 0x{STATE_ANY:02x} (any) nor a DimeState code",
            "disc.state_filter",
            _b("disc", "state_filter"),
        ),
        ("count", f"`length` is not {size('disc')} + {rec} x `count`", "disc.count", _b("disc", "count")),
        ("probe_count", "`op` is PROBE and `count` is not 0", "disc.count", _b("disc", "count")),
        ("gratuitous_probe_id", "`op` is GRATUITOUS and `probe_id` is not 0", "disc.probe_id", _b("disc", "probe_id")),
        (
            "record_state",
            f"record r (r = 0 for the first record, at q = b+{size('disc')}+{rec}r): `state` is not a DimeState code",
            "disc.dime.state",
            f"q+{off('disc.dime', 'state')}",
        ),
        (
            "record_mem",
            "record r: `mem_free` > `mem_total`",
            "disc.dime.mem_free",
            f"q+{off('disc.dime', 'mem_free')}",
        ),
    ]


def heartbeat_rows() -> list[Row]:
    return [
        ("length", f"`length` is not {size('hb')}", "len", _h("length")),
        ("state", "`state` is not a DimeState code", "hb.state", _b("hb", "state")),
        ("period", "`period_ms` is 0", "hb.period_ms", _b("hb", "period_ms")),
        ("cpu", "`cpu_permille` > 1000", "hb.cpu_permille", _b("hb", "cpu_permille")),
    ]


TABLES = {
    "frame": ("", frame_rows),
    "signaling": ("sig", signaling_rows),
    "data": ("data", data_rows),
    "discovery": ("disc", discovery_rows),
    "heartbeat": ("hb", heartbeat_rows),
}
"""Each rule table: the prefix its rules are cited by (none for the frame's) and its rows."""


def rule_numbers() -> RuleNumbers:
    """Every rule's number by name (see :class:`RuleNumbers`)."""
    out = RuleNumbers()
    for prefix, rows in TABLES.values():
        out.update(_number(rows(), prefix))
    return out


def frame_steps() -> str:
    return _rows(frame_rows())


def signaling_steps() -> str:
    return _rows(signaling_rows())


def data_steps() -> str:
    return _rows(data_rows())


def discovery_steps() -> str:
    return _rows(discovery_rows())


def heartbeat_steps() -> str:
    return _rows(heartbeat_rows())


def rules_text(n: RuleNumbers | None = None) -> str:
    """The rules and the prose around them; ``n`` (a fresh :func:`rule_numbers` when None) resolves the
    prose's rule citations and records them."""
    return RULES.format(
        n=rule_numbers() if n is None else n,
        frame=frame_steps(),
        signaling=signaling_steps(),
        data=data_steps(),
        discovery=discovery_steps(),
        heartbeat=heartbeat_steps(),
        hdr=HDR,
        max_body=MAX_BODY,
        max_frame=MAX_FRAME,
        auth=spec.AUTH_LEN,
        tag=spec.TAG_LEN,
        min_frame=spec.MIN_ETHERNET_FRAME,
        text_max=TEXT_MAX,
        acl=ACL_ENTRY_SIZE,
        data_fixed=size("data"),
        max_tlv=MAX_TLV_VALUE,
        sig_fixed=size("sig"),
        tag_from=spec.AUTH_LEN - spec.TAG_LEN,
        class_codes=", ".join(f"{c.name} {int(c)}" for c in FrameClass),
    )


RULES = """\
## Decoding: the rules, in the order they are checked

A decoder MUST reject a frame that breaks any rule below, and MUST report the **first** rule
broken, in this order, as an error made of a *field* and an *offset*. A frame that breaks
none is valid, and its decoded view (section "Decoded view") is fully determined by its bytes.

- n is the frame's length in bytes (no FCS). b = {hdr} is the offset of the body, t = {hdr}
  + `length` the offset of the trailer. All offsets count from the first byte of the Ethernet
  destination.
- The error *field* is the field's `px.*` key without `px.` (so the header's `length` is
  `len`, the key of a known TLV type is `tlv.<name>`); where no single field is at fault it
  names the part: `eth` (shorter than an Ethernet header), `header` (shorter than the
  Parallax header), `tlv` (a TLV header cut short, or a repeated TLV type), `auth` (the
  trailer cut short). *key* below means the TLV's own key without `px.`, e.g.
  `tlv.mice_name`. An encoder that cannot build a frame reports `frame` (never a decoder).
- The error *offset* is the offset of the first byte of that field (for a part, of the
  part), except where a row gives another.
- Within a list (TLVs, DIME records), every rule is applied to item 1, then to item 2, and
  so on: an error in an earlier item wins.
- Arithmetic in the rules is on exact integers: a sum or product never wraps. Compute it at
  least 64 bits wide: `frag_offset` + payload length in DATA rules {n[data.fits]} and
  {n[data.last]} adds a 32-bit field to a 16-bit length, so with `frag_offset` = `msg_len` =
  0xffffffff and one byte of payload DATA rule {n[data.fits]} rejects the frame (a 32-bit sum
  would wrap to 0 and pass it; conformance vector "fragment end past 2^32").
- Rules are cited by their row number: "rule N" (or "frame rule N") is row N of the frame
  table, "DATA rule N" row N of the DATA body's table, and so on.
- Errors `eth` and `eth.type` mean "not a Parallax frame": `pxdump --json` prints no line
  for `eth.type` (and `{{"_malformed": ...}}` for `eth`), and Wireshark never hands such a
  frame to the dissector.

### The frame

{frame}

### SIGNALING body (frame rule {n[body_rules]})

{signaling}

Unknown TLV types (not in the TLV table) pass every rule but "type appeared twice" and are
kept as raw bytes of any length, so new parameters never break old decoders. The TLVs may
come in any order. The codec does not require the TLVs of the Commands table: an endpoint
answers a request that lacks one with BAD_PARAM. Empty values are valid for TEXT (""),
BYTES and unknown types (""), and ACL (no entries).

### DATA body (frame rule {n[body_rules]})

The payload is the body after the {data_fixed}-byte fixed part; its length is `length` minus
the fixed part. A frame with `frag_count` 0 is **acknowledgement-only**: its zero fragment
fields are `msg_len`, `frag_offset` and `frag_index` (and it has no payload); `channel`,
`msg_id`, `ack` and `credit` may hold any value. Errors about the payload's length are
reported on the header's length (`len`), the field that sets it.

{data}

### DISCOVERY body (frame rule {n[body_rules]})

{discovery}

### HEARTBEAT body (frame rule {n[body_rules]})

{heartbeat}

## Sizes

- Body: 0 to {max_body} bytes (`length` is 16 bits). The largest frame is therefore
  {max_frame} bytes ({hdr} bytes of Ethernet and Parallax headers + {max_body} + a {auth}-byte trailer). The
  codec enforces no MTU: links do (1500 on a NIC, 65000 on pxproto's UDP and stream wires; DATA fragments to fit).
- Frames shorter than {min_frame} bytes (Ethernet's minimum without the FCS) are valid as they
  are. A sender MAY pad one with zeros after its end to exactly {min_frame} bytes (a NIC pads
  it anyway); a decoder accepts such padding only when the frame is exactly {min_frame} bytes
  long (rule {n[padding]}) and reports it as `px.eth.padding`.
- TLV values: U8 1, U16 2, U32 4, U64 8, MAC 6, DIGEST 32 (a SHA-256 digest) bytes;
  TEXT 0 to {text_max} (TEXT_MAX) bytes of UTF-8; BYTES (and unknown types) 0 to
  {max_tlv} bytes: the 16-bit `length` could say 65535, but the value must fit the body after the
  {sig_fixed}-byte SIGNALING fixed part and its own 4-byte TLV header; ACL a multiple of {acl}
  bytes, each entry a MAC (6), an FCAPS mask (1 byte: bit k is area k of F=0, C=1, A=2, P=3,
  S=4) and a reserved zero byte.

## The authentication trailer

Any frame class may carry the trailer; the header's AUTH flag says whether it is there.
Decoders check only that it fits (rule {n[trailer_fits]}) and that `key_id` and `counter` are not 0 (rules
{n[key_id]} and {n[counter]}). The tag is **not** checked by a decoder, which holds no key: a frame with a wrong
tag decodes (conformance vector "signed frame with a wrong tag"). The endpoint that holds
key `key_id` computes HMAC-SHA256(key, bytes 0 up to t+{tag_from} (exclusive) of the frame, i.e. from the
Ethernet destination through the trailer's `counter`, padding excluded), truncates it to
its first {tag} bytes and compares; replay windows on `counter` are the endpoints' rule.

## The AEAD mode (ENCRYPTED)

A frame of any class may be sent encrypted: the header's ENCRYPTED flag (0x04) is set, always
with AUTH (rule {n[encrypted_needs_auth]}). The Ethernet and Parallax headers stay in clear
(switches forward the frame as any other, holding no key); the body is the AES-256-GCM
ciphertext of the clear body, exactly as long (so `length` and fragment sizes are the clear
frame's); the trailer's `key_id` and `counter` are those of a signed frame and its tag is the
GCM tag ({tag} bytes). A sealed frame has no padding: the sender drops the clear frame's before
sealing, and the {auth}-byte trailer makes any sealed frame at least {min_frame} bytes long.
Decoders check the header and trailer rules and treat the body as opaque (`px.flags.encrypted`
true, no body field; rules {n[fixed_body]} and {n[body_rules]} do not apply, rules {n[key_id]}
and {n[counter]} do): every decoder, the dissector included, shows such a frame as encrypted
with its key id and counter. The endpoint holding key `key_id` opens it (so do `pxdump --key
FILE` and the dissector's key preference, `docs/DISSECTOR.md`):

    frame key = HKDF-SHA256(IKM = cluster key `key_id`, salt = none, L = 32 bytes,
                            info = "pxproto AEAD v1" | src MAC (6) | src_dime (2) | class code (1))
    nonce     = 4 zero bytes | counter (8)
    AAD       = bytes 0 up to {hdr} (exclusive) of the frame as sent | key_id (2) | counter (8)
    AES-256-GCM(frame key, nonce, AAD, clear body) = ciphertext (the body) | tag (the trailer's `tag`)

The class code is the frame class's number in the EtherType map's table ({class_codes}), not
its EtherType, so a remapped EtherType keeps the keys. The "pxproto AEAD v1" string is its 15
ASCII bytes, without a terminator; src MAC, `src_dime`, `key_id` and `counter` are the bytes of
the frame (big-endian). The AAD's first {hdr} bytes are the Ethernet and Parallax headers exactly
as on the wire, so its flags byte has ENCRYPTED and AUTH set.

A sender never reuses a counter (`epoch << 32 | n`) and no two senders or classes share a frame
key, so a nonce never repeats under one key. The AAD covers what the HMAC covers outside the
body: a changed address, class, header field, key id or counter fails the tag. Opened, the frame
is the clear frame with its trailer (ENCRYPTED clear, AUTH set), and that trailer's `tag` still
holds the GCM tag, not an HMAC: an opened frame is never checked as a signed frame's. Replay
windows apply to its counter as to a signed frame's. Which classes are sent encrypted is the
endpoints' configuration (`pxkernel --encrypt`, `pxorch run --encrypt`); a receiver holding the
key opens whatever it gets.

## Key installation (KEY_INSTALL, WRAPPED_KEY)

KEY_INSTALL never carries a key in clear. Its WRAPPED_KEY value is the id of the installed
key it is wrapped under (2 bytes, the *wrapping key*, normally the active one), then the new
key under AES key wrap with padding (RFC 5649) with a key-encryption key (KEK) of 32 bytes:

    KEK = HKDF-SHA256(IKM = wrapping key, salt = none,
                      info = "pxproto KEY_INSTALL wrap v1" | KEY_ID as 2 bytes)

so the wrapped value is bound to the KEY_ID it is installed under: relabelled for another id it
does not unwrap. A receiver answers BAD_PARAM and counts REJECTED_AUTH when the wrapping key
is not installed or is retired, when the value does not unwrap (RFC 5649's integrity check), or
when the unwrapped key is shorter than 16 bytes; it answers BAD_PARAM to a request carrying the
old clear KEY TLV, whatever else it holds (a key that travelled in clear is burnt). A kernel started
without a cluster key (`--insecure`) answers UNSUPPORTED: it has nothing to unwrap under. The
whole frame is signed as any signaling (the trailer above), so the wrap adds secrecy, not
origin. A listener without the wrapping key learns nothing of the new key; one who holds it (a
cluster member, or whoever stole it) learns every key wrapped under it, which is why a leaked
key calls for a new cluster key distributed out of band, not a KEY_INSTALL.

## Package signatures (PACKAGE_SIG)

LOAD's PACKAGE_SIG is the signing key's id (2 bytes) then an Ed25519 signature (RFC 8032, 64
bytes) of the whole package archive, the bytes whose SHA-256 is PACKAGE_DIGEST: 66 bytes. The
operator's (or orchestrator's) private signing key makes it (`pxorch run --signing-key`); a
kernel holds only public verification keys (`pxkernel --verify-key`), so a kernel, which holds
the cluster MAC key, still cannot make a signature another kernel accepts. A kernel answers
DENIED (counting REJECTED_AUTH) when the signature's key id is not among its verification keys
or the signature does not verify; it refuses every LOAD when it has no verification key, unless
it was started `--insecure` (DENIED too, naming the missing `--verify-key`). A verified archive is
unpacked into a fresh private directory (a tree already there is kept only if it verifies against
the archive), and its files' digests are checked again before every import of the stage's code.
"""
