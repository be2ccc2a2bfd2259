"""Generate ``docs/PROTOCOL.md`` from the spec: ``python -m pxproto.wire.gen_docs [-o PATH]``."""

from __future__ import annotations

import argparse
import sys
from enum import IntEnum

from pxproto.wire import codes, ethertypes, layout, samples
from pxproto.wire.codec import decode
from pxproto.wire.codes import (
    CHUNK_BYTES,
    COMMAND_PARAMS,
    FIXED_TLV_SIZES,
    STATE_ANY,
    TEXT_MAX,
    TLV_ENUMS,
    TLV_KINDS,
    Command,
    FrameClass,
    TlvKind,
)
from pxproto.wire.gen_docs_rules import MAX_TLV_VALUE, RuleNumbers, rule_numbers, rules_text
from pxproto.wire.gen_lua import EXTRA_FIELDS

SECTIONS = [
    ("Ethernet header", "eth", "Offsets from the start of the frame."),
    ("Common header", "", "Follows the Ethernet header (frame offset 14)."),
    ("SIGNALING body (fixed part)", "sig", "Followed by `tlv_count` TLVs that fill the body exactly."),
    ("TLV header", "tlv", "Followed by `length` bytes of value."),
    ("DATA body (fixed part)", "data", "Followed by the fragment's payload bytes (the rest of the body)."),
    ("DISCOVERY body (fixed part)", "disc", "Followed by `count` DIME records."),
    ("DIME record", "disc.dime", "One per announced DIME."),
    ("HEARTBEAT body", "hb", "Exactly this size."),
    ("Authentication trailer", "auth", "Present when the header's AUTH flag is set; after the body."),
]


def _table(rows: list[list[str]], head: list[str]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _enum_table(enum: type[IntEnum]) -> str:
    rows = [
        [f"0x{int(v):02x}", v.name, (enum.__doc__ or "").splitlines()[0] if i == 0 else ""] for i, v in enumerate(enum)
    ]
    return _table(rows, ["code", "name", ""])


DERIVED = {
    "px.eth.padding": "zero bytes after the end that pad the frame to 60 (0 when none)",
    "px.class": "the frame class the EtherType names: SIGNALING, DATA, DISCOVERY or HEARTBEAT",
    "px.flags.scope_dime": "SCOPE_DIME bit of `flags`",
    "px.flags.auth": "AUTH bit of `flags` (the trailer is present)",
    "px.flags.encrypted": "ENCRYPTED bit of `flags` (the body is AEAD ciphertext: no body field follows)",
    "px.scope": "DIME when SCOPE_DIME is set, else SYSTEM",
    "px.fcaps": "the command's FCAPS area (the high nibble of `cmd`): F, C, A, P or S",
    "px.data.flags.ack": "ACK bit of the DATA `flags`",
    "px.data.flags.fin": "FIN bit of the DATA `flags`",
    "px.data.payload_len": "bytes of payload after the DATA fixed part (`length` - 25)",
}
MAC_KEYS = {"px.eth.dst", "px.eth.src"}
TLV_JSON = {
    TlvKind.U8: "number",
    TlvKind.U16: "number",
    TlvKind.U32: "number",
    TlvKind.U64: "number",
    TlvKind.TEXT: "string (the text)",
    TlvKind.BYTES: "string (hex)",
    TlvKind.MAC: "string (MAC)",
    TlvKind.DIGEST: "string (hex)",
    TlvKind.ACL: "string (hex of the entries, back to back)",
}


def _json_keys() -> list[str]:
    """Every non-TLV key the decoded view can hold, in to_dict() order."""
    keys: dict[str, None] = {}
    for _, raw in samples.valid_samples():
        for k in decode(raw).to_dict():
            if not k.startswith("px.tlv."):
                keys[k] = None
    return list(keys)


def _json_table() -> str:
    fields = {f.key: (title, f) for title, prefix, _ in SECTIONS for f in layout.struct_tables()[prefix][1]}
    rows = []
    for key in _json_keys():
        title, f = fields.get(key, ("", None))
        if f is None:
            kind = "boolean" if ".flags." in key else "number" if key.endswith("_len") or "padding" in key else "string"
            meaning = DERIVED[key]
        else:
            meaning = f"`{f.name}` of the {title.replace(' (fixed part)', '')}"
            if key in MAC_KEYS:
                kind = "string (MAC)"
            elif f.kind == "bytes":
                kind = "string (hex)"
            elif f.kind == "enum":
                kind = "string (code name)"
            elif key == "px.disc.state_filter":
                kind, meaning = "string", meaning + f': `"ANY"` for 0x{STATE_ANY:02x}, else the DimeState name'
            else:
                kind = "number"
            if f.kind == "flags":
                meaning += " (the whole byte)"
        if key.startswith("px.disc.dime."):
            kind = f"array of {kind}"
        rows.append([f"`{key}`", kind, meaning])
    return _table(rows, ["key", "JSON", "value"])


FIELD_MEANINGS = """\
## What the fields mean

Decoders check only the rules below ("Decoding"); this is what pxproto's endpoints put in the
fields and read from them. Memory is counted in chunks of {chunk} bytes ({chunk_mib} MiB)
everywhere: DIME records, HEARTBEAT, and the MEM_CHUNKS and MEM_USED TLVs.

- Ethernet: a Parallax frame is untagged. 0x8100 (802.1Q) cannot be a class's EtherType, so a
  frame with a VLAN tag still on it is not a Parallax frame (rule {eth_type}): remove the tag
  before decoding.
- Header: a response goes to the request's `src_dime` and `src_thread`. In a HEARTBEAT, `seq`
  counts the DIME's heartbeats within its epoch, from 1; a watcher ignores a heartbeat whose `seq`
  is not above the last it saw in that epoch.
- DATA: `channel` is the id a CONNECT's CHANNEL wired between the two DIMEs. The fragments of all
  the channel's messages form one stream, ordered by (`msg_id`, `frag_index`); `msg_id` is 32 bits
  and wraps. An acknowledgement-only frame with `msg_id` M and `ack` F says every fragment
  before fragment F of message M arrived; its `credit` is how many fragments (not bytes) the
  sender may have on the wire past that point. FIN marks the last fragment of the stream's last
  message (an empty message may carry it alone).
- DISCOVERY: a PROBE's `probe_id` is the prober's choice; an ANNOUNCE that answers it carries the
  same `probe_id` and `state_filter`, and lists only the DIMEs in that state (0x{state_any:02x}:
  all). A server with no DIME in the state asked for does not answer. `sw_version` is the sender's
  software version as an opaque number (`pxkernel` sends 0x00010000); `caps` holds the Capability
  bits (table below).
- DIME record: `dime` is the DIME's id on its server, `core` the CPU core it is pinned to,
  `epoch` its life (as in its heartbeats), `mem_total` its memory limit and `mem_free` that limit
  less what it uses, in chunks.
- HEARTBEAT: `epoch` is the DIME's life, 1 on first boot and one more on every restart (32
  bits); `period_ms` its heartbeat period; `cpu_permille` the CPU time the DIME and
  its MICE used since the last sample per wall-clock time, in thousandths of one core, capped at
  1000; `stage` and `service` the STAGE and SERVICE_ID it loaded (0 when none); `mem_used` and
  `mem_limit` in chunks; `rx_queue` and `tx_queue` the depths of its input and output queues
  (their sum is the QUEUE_DEPTH counter).
- TLVs: CPU_NS is nanoseconds; THRESHOLD is in the unit of the counter it is set on; VALUE is
  the number the PARAM_ID names (HEARTBEAT_PERIOD_MS and RETRANSMIT_MS in milliseconds,
  MEM_LIMIT_CHUNKS in chunks).
"""

COMMANDS_NOTES = """\
Beyond the table:

- A response whose status is not OK carries TEXT, the reason (for people, not parsed), and may
  lack the TLVs listed or carry only some of them.
- A sender may add TLVs the table does not list, and a receiver ignores those it does not use:
  the sample frame "FAULT_REPORT memory exceeded" carries MEM_USED, for instance.
- LEADER_EPOCH (type {leader_epoch}) is the leadership term of an elected orchestrator, which adds
  it to every request it sends, whatever the command. A DIME, or a server at system scope,
  refuses a request whose LEADER_EPOCH is older than the newest it accepted (a server keeps the
  newest any of its DIMEs accepted, across restarts): DENIED, with TEXT, counting
  REJECTED_FENCED. The orchestrator also adds EPOCH, the life of the DIME it addresses, to a
  request for a DIME it has seen; a DIME refuses a request naming another of its lives the same
  way (DENIED, with TEXT and its own EPOCH).
- A frame whose `cmd` is not in the table is malformed (SIGNALING rule {sig_cmd}) and gets no
  answer. UNKNOWN_COMMAND answers a request for a command of the table that the endpoint does
  not implement (the bare-metal DIME of `kernel/` says so for the commands it lacks); pxproto's
  Linux node answers UNSUPPORTED instead, and so does a server at system scope to any command but
  PING, USAGE, COUNTERS and FAULT_REPORT.
"""

JSON_TEXT = """\
## Decoded view (JSON)

A valid frame decodes to one flat JSON object: `Frame.to_dict()` in Python, one line of
`pxdump --json`. The Wireshark dissector's fields carry the same keys with the same values in
Wireshark's notation (booleans as 1/0, a TEXT shown up to its first NUL character). Members
are compared as a set (their order carries no meaning). The rendering is normative:

- numbers (every uint field, including the `flags` bytes, `px.eth.type` and `px.disc.caps`)
  are JSON integers (up to 2^64-1: parse them as unsigned 64-bit integers);
- codes of an enum field or enum-valued TLV are the code's name (the tables above), e.g.
  `"PING"`, `"HEARTBEAT_PERIOD_MS"`; `px.disc.state_filter` is `"ANY"` for 0xff, else the
  DimeState name;
- MACs are lower-case hex pairs joined by colons: `"02:00:00:00:01:01"`;
- bytes (DIGEST, BYTES, ACL and unknown TLV values, `px.auth.tag`) are lower-case hex with no
  separator; an empty value is `""`;
- TEXT is the decoded string;
- flag bits are JSON booleans (`px.flags.*`, `px.data.flags.*`);
- DIME records: each `px.disc.dime.*` key is an array with one element per record, in wire
  order; the keys are absent when `count` is 0;
- a TLV's key is present only when the frame carries that TLV; an unknown TLV type *T* appears
  as `px.tlv.t<T>` (*T* in decimal) with its value in hex;
- `px.auth.*` keys are present only when AUTH is set.

A frame the decoder rejects prints, in `pxdump --json`, `{{"_malformed": {{"field": F,
"offset": N, "reason": R}}}}`; the dissector adds an expert info `px.malformed.*` whose text
is `F at byte N: R`. The reason text is informative, not normative.

{table}

The TLV header's `px.tlv.type` and `px.tlv.length` are not members of the JSON view: the
TLV's key already names its type, and its value gives its length. They, and the fields below,
exist only in the Wireshark dissector's tree, which also links and reassembles across frames:

{extras}
"""

CONFORMANCE = """\
## Conformance vectors

`docs/conformance.json` (generated by `python -m pxproto.wire.gen_conformance` from the recorded
captures `captures/all.pcapng`, `captures/malformed.pcapng` and further edge cases) lists frames
as hex under the default EtherType map above. Each vector has either `"json"`: the decoded view
exactly, or `"error"`: `{"field": F, "offset": N}`. A conforming decoder gives exactly these
answers for every vector; the reference codec, the fast path, `pxdump --json` and the Wireshark
dissector are tested against the file.

The PACKAGE_SIG and WRAPPED_KEY values of the recorded samples (16 bytes of 0xa5) are
placeholders: a decoder never looks inside a BYTES value, but an endpoint would refuse them (a
PACKAGE_SIG is 66 bytes, a WRAPPED_KEY 2 bytes then at least 24; see the sections above).

## Encoding

An encoder sets `length`, `tlv_count` and `count` from what follows them, writes every reserved
bit and byte as 0, MAY pad a frame shorter than 60 bytes with zeros to 60, and MUST NOT send a
frame that a decoder following the rules above would reject (the reference encoder decodes its
own output before returning it). Decoding a valid frame and encoding the result gives the same
bytes, padding included.
"""


def generate(n: RuleNumbers | None = None) -> str:
    """The document; ``n`` (a fresh :func:`rule_numbers` when None) resolves every rule the prose cites
    by name, and records the names cited."""
    n = rule_numbers() if n is None else n
    et = ethertypes.DEFAULT
    parts = [
        "# Parallax wire protocol reference",
        "",
        "Generated by `python -m pxproto.wire.gen_docs` from `pxproto/wire/spec.py` and "
        "`pxproto/wire/codes.py`; do not edit by hand. All integers are big-endian.",
        "",
        "This document is normative: a decoder written from it alone, given the same bytes, must "
        "accept and reject the same frames as the reference codec, give the same decoded view "
        "(JSON) byte for byte, and name the same error field and offset. `docs/conformance.json` "
        "checks that (last section). MUST and SHOULD are used as in RFC 2119.",
        "",
        "```",
        "| eth (14) | header (20) | body (header.length) | auth trailer (26, when AUTH) | zero padding |",
        "```",
        "",
        "## EtherType map (default)",
        "",
        "Configurable at run time: `PXPROTO_ETHERTYPES=signaling=0x88b5,...` or "
        "`pxproto.wire.ethertypes.configure()`. The scope (whole server or one DIME) is the "
        "header's SCOPE_DIME flag. A frame with any other EtherType, or shorter than the "
        f"14-byte Ethernet header, is not a Parallax frame (see rules {n['eth']} and {n['ethertype']}).",
        "",
        "The class code is the class's number where the protocol needs one: the AEAD key derivation "
        '(section "The AEAD mode").',
        "",
        _table(
            [
                [name.upper(), str(int(FrameClass[name.upper()])), f"0x{value:04x}"]
                for name, value in et.as_dict().items()
            ],
            ["class", "class code", "EtherType"],
        ),
        "",
    ]
    for title, prefix, note in SECTIONS:
        struct, fields = layout.struct_tables()[prefix]
        rows = []
        for f in fields:
            codes_ = ", ".join(f"{k:#x}={v}" for k, v in sorted(f.values.items())) if f.values else ""
            if f.key == "px.disc.state_filter":
                codes_ = f"0x{STATE_ANY:02x}=ANY, or a DimeState code"
            shown = "enum" if f.key == "px.disc.state_filter" else f.kind  # a code, though its struct field is a byte
            rows.append([str(f.offset), str(f.size), f"`{f.name}`", shown, f"`{f.key}`", codes_])
        parts += [
            f"## {title} ({struct.sizeof()} bytes)",
            "",
            note,
            "",
            _table(rows, ["offset", "size", "field", "kind", "key", "codes"]),
            "",
        ]
    parts.append(
        FIELD_MEANINGS.format(
            chunk=CHUNK_BYTES, chunk_mib=CHUNK_BYTES >> 20, eth_type=n["ethertype"], state_any=STATE_ANY
        )
    )
    parts += [
        "## Commands",
        "",
        "Code = FCAPS area << 4 | index. Every command has a request and a response form. The TLVs "
        "listed are those an endpoint sends and expects, in any order; the codec checks only that "
        "each TLV is well formed (see the SIGNALING rules).",
        "",
    ]
    rows = []
    for c in Command:
        req, resp = COMMAND_PARAMS[c]
        rows.append(
            [
                f"0x{int(c):02x}",
                c.name,
                c.fcaps.name,
                ", ".join(t.name for t in req) or "-",
                ", ".join(t.name for t in resp) or "-",
            ]
        )
    parts += [_table(rows, ["code", "command", "FCAPS", "request TLVs", "response TLVs"]), ""]
    parts.append(COMMANDS_NOTES.format(leader_epoch=int(codes.TlvType.LEADER_EPOCH), sig_cmd=n["sig.cmd"]))
    for enum in (
        codes.Op,
        codes.Status,
        codes.DimeState,
        codes.DiscoveryOp,
        codes.Param,
        codes.FaultCode,
        codes.Direction,
        codes.Fcaps,
    ):
        parts += [f"## {enum.__name__}", "", _enum_table(enum), ""]
    for flags in (codes.HeaderFlag, codes.DataFlag, codes.Capability):
        parts += [
            f"## {flags.__name__} bits",
            "",
            _table([[f"0x{int(v):02x}", str(v.name)] for v in flags], ["bit", "name"]),
            "",
        ]
    rows = []
    for t in codes.TlvType:
        kind = TLV_KINDS[t]
        fixed = FIXED_TLV_SIZES.get(kind)
        size = (
            str(fixed)
            if fixed is not None
            else {TlvKind.TEXT: f"0..{TEXT_MAX}", TlvKind.ACL: "8 x n"}.get(kind, f"0..{MAX_TLV_VALUE}")
        )
        tlv_enum = TLV_ENUMS.get(t)
        rows.append(
            [
                str(int(t)),
                t.name,
                kind.name,
                size,
                f"`px.tlv.{t.name.lower()}`",
                f"string ({tlv_enum.__name__} name)" if tlv_enum else TLV_JSON[kind],
            ]
        )
    parts += [
        "## TLV types",
        "",
        "Each TLV is a 4-byte header (type, length) and `length` value bytes. Unknown types decode "
        "as raw bytes under `px.tlv.t<type>`. A type appears at most once per frame.",
        "",
        _table(rows, ["type", "name", "kind", "value bytes", "key", "JSON"]),
        "",
    ]
    extras = _table([[f"`{k}`", v] for k, v in EXTRA_FIELDS.items()], ["dissector field", "holds"])
    parts += [
        "## Counters",
        "",
        "What COUNTERS and SET_THRESHOLD name in `COUNTER_ID`. DIME scope (a frame to one DIME):",
        "",
        _table([[str(int(c)), c.name] for c in codes.CounterId], ["id", "counter"]),
        "",
        "System scope (DIME 0xffff: the server's own wire and relay):",
        "",
        _table([[str(int(c)), c.name] for c in codes.ServerCounterId], ["id", "counter"]),
        "",
        "An unknown id is answered NOT_FOUND. A counter at or over its threshold (SET_THRESHOLD; 0 clears "
        "it) raises one FAULT_REPORT OVERLOAD per crossing.",
        "",
    ]
    parts.append(JSON_TEXT.format(table=_json_table(), extras=extras))
    parts.append(rules_text(n))
    parts.append(CONFORMANCE)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pxproto.wire.gen_docs", description=__doc__)
    ap.add_argument("-o", "--output", help="file to write (standard output without it)")
    args = ap.parse_args(argv)
    text = generate()
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
