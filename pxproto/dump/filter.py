"""pxdump's filter language: Parallax words, compiled to BPF and to column masks.

Grammar (keywords are case-insensitive, numbers decimal or 0x hex)::

    expr    := term (("or" | "||") term)*
    term    := factor (("and" | "&&") factor)*
    factor  := ("not" | "!") factor | "(" expr ")" | prim
    prim    := signaling | data | discovery | heartbeat | parallax | malformed | auth | encrypted
             | scope (system | dime)
             | [src | dst] dime N | [src | dst] thread N | [src | dst] mac XX:XX:XX:XX:XX:XX
             | cmd NAME | op (request | response) | fcaps (F | C | A | P | S) | status NAME
             | channel N | seq N | seq A-B

A primitive on a field means "a valid Parallax frame (of the field's class)
whose field holds that value".  The BPF program reads the same bytes at the
offsets of :mod:`pxproto.wire.layout`, so on valid frames the kernel and the
numpy mask over a file's columns agree; the kernel cannot tell a malformed
frame, so live capture filters twice (kernel first, then the columns).
``malformed`` is known only after decoding, so it has no BPF form (the kernel
passes every frame to the columns).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from pxproto.dump.columns import FIELDS, KIND_OTHER, Batch
from pxproto.wire import ethertypes, layout
from pxproto.wire.codes import DIME_ALL, Command, Fcaps, FrameClass, HeaderFlag, Op, Scope, Status


class FilterError(ValueError):
    """A filter that does not parse; ``pos``/``width`` mark the offending word in ``text``."""

    def __init__(self, text: str, pos: int, width: int, reason: str) -> None:
        self.text = text
        self.pos = pos
        self.width = max(width, 1)
        self.reason = reason
        super().__init__(f"{reason} (at character {pos + 1})\n  {text}\n  {' ' * pos}{'^' * self.width}")


# ------------------------------------------------------------------ the tree


@dataclass(frozen=True)
class Node:
    def mask(self, b: Batch) -> np.ndarray:
        raise NotImplementedError

    def bpf(self) -> str | None:
        """A libpcap filter expression, or None when the kernel cannot decide it."""
        raise NotImplementedError


@dataclass(frozen=True)
class IsClass(Node):
    cls: FrameClass | None
    """None: any Parallax class."""

    def mask(self, b: Batch) -> np.ndarray:
        if self.cls is None:
            return b.kind != KIND_OTHER
        return b.kind == int(self.cls)

    def bpf(self) -> str:
        m = ethertypes.current()
        if self.cls is None:
            return "(" + " or ".join(f"ether proto 0x{v:04x}" for v in m.as_dict().values()) + ")"
        return f"ether proto 0x{m.of(self.cls):04x}"


@dataclass(frozen=True)
class FieldIn(Node):
    """``lo <= (field & mask) <= hi`` in a Parallax frame that holds the field."""

    name: str
    lo: int
    hi: int
    bits: int | None = None

    def mask(self, b: Batch) -> np.ndarray:
        f = FIELDS[self.name]
        v = b.col(self.name)
        if self.bits is not None:
            v = v & v.dtype.type(self.bits)
        ok = IsClass(f.cls).mask(b) & b.valid
        if self.lo == self.hi:
            return ok & (v == self.lo)
        return ok & (v >= self.lo) & (v <= self.hi)

    def bpf(self) -> str:
        f = FIELDS[self.name]
        guard = IsClass(f.cls).bpf()
        if f.size == 8:
            test = _bpf_u64_range(f.offset, self.lo, self.hi)
        else:
            load = f"ether[{f.offset}:{f.size}]" if f.size > 1 else f"ether[{f.offset}]"
            if self.bits is not None:
                load = f"({load} & 0x{self.bits:x})"
            test = f"{load} = {self.lo}" if self.lo == self.hi else f"{load} >= {self.lo} and {load} <= {self.hi}"
        return f"({guard} and {test})"


def _bpf_u64_range(offset: int, lo: int, hi: int) -> str:
    hw, lw = f"ether[{offset}:4]", f"ether[{offset + 4}:4]"
    lo_h, lo_l, hi_h, hi_l = lo >> 32, lo & 0xFFFFFFFF, hi >> 32, hi & 0xFFFFFFFF
    if lo_h == hi_h:
        return f"{hw} = {lo_h} and {lw} >= {lo_l} and {lw} <= {hi_l}"
    return (
        f"({hw} > {lo_h} or ({hw} = {lo_h} and {lw} >= {lo_l})) and "
        f"({hw} < {hi_h} or ({hw} = {hi_h} and {lw} <= {hi_l}))"
    )


@dataclass(frozen=True)
class MacIs(Node):
    which: str
    """``src``, ``dst`` or ``host`` (either)."""
    mac: int

    def mask(self, b: Batch) -> np.ndarray:
        ok = b.caplen >= 14
        if self.which == "host":
            return ok & ((b.col("eth.src") == self.mac) | (b.col("eth.dst") == self.mac))
        return ok & (b.col(f"eth.{self.which}") == self.mac)

    def bpf(self) -> str:
        text = ":".join(f"{(self.mac >> (8 * k)) & 0xFF:02x}" for k in range(5, -1, -1))
        return f"ether {self.which} {text}"


@dataclass(frozen=True)
class Malformed(Node):
    def mask(self, b: Batch) -> np.ndarray:
        return b.malformed

    def bpf(self) -> None:
        return None


@dataclass(frozen=True)
class Not(Node):
    a: Node

    def mask(self, b: Batch) -> np.ndarray:
        return ~self.a.mask(b)

    def bpf(self) -> str | None:
        inner = self.a.bpf()
        return None if inner is None else f"not {inner}"


@dataclass(frozen=True)
class And(Node):
    a: Node
    b: Node

    def mask(self, b: Batch) -> np.ndarray:
        return self.a.mask(b) & self.b.mask(b)

    def bpf(self) -> str | None:
        x, y = self.a.bpf(), self.b.bpf()
        if x is None or y is None:
            return x or y  # the kernel passes a superset; the columns decide
        return f"({x} and {y})"


@dataclass(frozen=True)
class Or(Node):
    a: Node
    b: Node

    def mask(self, b: Batch) -> np.ndarray:
        return self.a.mask(b) | self.b.mask(b)

    def bpf(self) -> str | None:
        x, y = self.a.bpf(), self.b.bpf()
        if x is None or y is None:
            return None
        return f"({x} or {y})"


# ------------------------------------------------------------------ parsing

_TOKEN = re.compile(r"\s*(\(|\)|&&|\|\||!|[^\s()!]+)")
_CLASS_WORDS = {c.name.lower(): c for c in FrameClass} | layout.PREFIX_CLASS
"""A class by its name or its layout prefix (signaling/sig, data, discovery/disc, heartbeat/hb)."""
_MAC = re.compile(r"^[0-9a-fA-F]{1,2}([:-][0-9a-fA-F]{1,2}){5}$")
_RANGE = re.compile(r"^([0-9a-fA-Fx]+)-([0-9a-fA-Fx]+)$")
KEYWORDS = sorted(
    {*_CLASS_WORDS, "parallax", "malformed", "auth", "encrypted", "scope", "src", "dst", "dime", "thread", "mac"}
    | {"cmd", "op", "fcaps", "status", "channel", "seq", "and", "or", "not"}
)


MAX_NESTING = 64
"""Deepest nesting of parentheses and 'not' a filter may have."""
MAX_WORDS = 256
"""Most filter words (primitives) in one filter: the tree's depth stays far from Python's recursion limit."""


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.depth = 0
        self.words = 0
        self.toks: list[tuple[str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or not m.group(1):
                break
            self.toks.append((m.group(1), m.start(1)))
            pos = m.end()
        self.i = 0

    def fail(self, reason: str, tok: tuple[str, int] | None = None) -> FilterError:
        if tok is None:
            tok = self.toks[self.i] if self.i < len(self.toks) else ("", len(self.text))
        return FilterError(self.text, tok[1], len(tok[0]), reason)

    def peek(self) -> str | None:
        return self.toks[self.i][0].lower() if self.i < len(self.toks) else None

    def next(self, what: str) -> tuple[str, int]:
        if self.i >= len(self.toks):
            raise self.fail(f"filter ends where {what} should follow")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.toks:
            raise self.fail("empty filter")
        node = self.expr()
        if self.i < len(self.toks):
            tok = self.toks[self.i]
            if tok[0] == ")":
                raise self.fail("')' without a matching '('")
            raise self.fail(f"expected 'and' or 'or' before {tok[0]!r}")
        return node

    def expr(self) -> Node:
        """``or`` of terms; a term is an ``and`` of factors (``and`` binds tighter)."""
        return self._chain(("or", "||"), Or, self.term)

    def term(self) -> Node:
        return self._chain(("and", "&&"), And, self.factor)

    def _chain(self, words: tuple[str, str], join: type[And] | type[Or], operand: Callable[[], Node]) -> Node:
        node = operand()
        while self.peek() in words:
            self.i += 1
            node = join(node, operand())
        return node

    def factor(self) -> Node:
        word = self.peek()
        if word in ("not", "!", "("):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise self.fail(f"nested deeper than {MAX_NESTING} parentheses and 'not's")
            node = self._nested(word)
            self.depth -= 1
            return node
        self.words += 1
        if self.words > MAX_WORDS:
            raise self.fail(f"more than {MAX_WORDS} filter words")
        return self.prim()

    def _nested(self, word: str) -> Node:
        if word != "(":
            self.i += 1
            return Not(self.factor())
        open_tok = self.next("(")
        node = self.expr()
        if self.peek() != ")":
            if self.i >= len(self.toks):
                raise self.fail("'(' is never closed", open_tok)
            raise self.fail(f"expected ')' or 'and'/'or', not {self.toks[self.i][0]!r}")
        self.i += 1
        return node

    def number(self, what: str, limit: int) -> int:
        tok = self.next(what)
        try:
            value = int(tok[0], 0)
        except ValueError:
            raise self.fail(f"{what} must be a number, not {tok[0]!r}", tok) from None
        if not 0 <= value <= limit:
            raise self.fail(f"{what} {value} is out of range 0..{limit}", tok)
        return value

    def name(self, what: str, enum: type[IntEnum], exclude: tuple[str, ...] = ()) -> int:
        tok = self.next(what)
        try:
            return int(enum[tok[0].upper()])
        except KeyError:
            pass
        try:
            return int(enum(int(tok[0], 0)))
        except ValueError:
            names = ", ".join(m.name for m in enum if m.name not in exclude)
            raise self.fail(f"unknown {what} {tok[0]!r}; one of: {names}", tok) from None

    def prim(self) -> Node:
        tok = self.next("a filter word")
        word = tok[0].lower()
        if word in _CLASS_WORDS:
            return IsClass(_CLASS_WORDS[word])
        if word == "parallax":
            return IsClass(None)
        if word == "malformed":
            return Malformed()
        if word in ("auth", "encrypted"):
            bit = int(HeaderFlag.AUTH if word == "auth" else HeaderFlag.ENCRYPTED)
            return FieldIn("flags", bit, bit, bit)
        if word == "scope":
            s = self.name("scope", Scope)
            bit = int(HeaderFlag.SCOPE_DIME)
            return FieldIn("flags", bit if s == Scope.DIME else 0, bit if s == Scope.DIME else 0, bit)
        if word in ("src", "dst"):
            what = self.next("'dime', 'thread' or 'mac'")
            kind = what[0].lower()
            if kind == "mac":
                return MacIs(word, self.mac())
            if kind not in ("dime", "thread"):
                raise self.fail(f"'{word}' is followed by 'dime', 'thread' or 'mac', not {what[0]!r}", what)
            v = self.number(f"{word} {kind}", DIME_ALL)
            return FieldIn(f"{word}_{kind}", v, v)
        if word in ("dime", "thread"):
            v = self.number(word, DIME_ALL)
            return Or(FieldIn(f"src_{word}", v, v), FieldIn(f"dst_{word}", v, v))
        if word == "mac":
            return MacIs("host", self.mac())
        if word == "cmd":
            v = self.name("command", Command)
            return FieldIn("sig.cmd", v, v)
        if word == "op":
            v = self.name("op", Op)
            return FieldIn("sig.op", v, v)
        if word == "status":
            v = self.name("status", Status)
            return FieldIn("sig.status", v, v)
        if word == "fcaps":
            v = self.name("FCAPS area", Fcaps)
            return FieldIn("sig.cmd", v << 4, (v << 4) | 0xF)
        if word == "channel":
            v = self.number("channel", 0xFFFF)
            return FieldIn("data.channel", v, v)
        if word == "seq":
            return self.seq_range()
        if word in ("and", "or", "&&", "||"):
            raise self.fail(f"'{tok[0]}' needs a filter word before it", tok)
        if word == ")":
            raise self.fail("')' without a matching '('", tok)
        raise self.fail(f"unknown filter word {tok[0]!r}; one of: {', '.join(KEYWORDS)}", tok)

    def mac(self) -> int:
        tok = self.next("a MAC address")
        if not _MAC.match(tok[0]):
            raise self.fail(f"{tok[0]!r} is not a MAC address (XX:XX:XX:XX:XX:XX)", tok)
        return int("".join(p.zfill(2) for p in re.split("[:-]", tok[0])), 16)

    def seq_range(self) -> Node:
        tok = self.next("a sequence number or range A-B")
        m = _RANGE.match(tok[0])
        try:
            lo, hi = (int(m.group(1), 0), int(m.group(2), 0)) if m else (int(tok[0], 0),) * 2
        except ValueError:
            raise self.fail(f"seq takes N or A-B, not {tok[0]!r}", tok) from None
        if not 0 <= lo <= hi < 2**64:
            raise self.fail(f"seq range {lo}-{hi} is empty or out of 0..2^64-1", tok)
        return FieldIn("seq", lo, hi)


def parse(text: str) -> Node:
    """The filter's tree; raise FilterError pointing at the offending word."""
    return _Parser(text).parse()


def to_bpf(text: str) -> str | None:
    """The BPF expression for a filter (None when only decoding can decide it)."""
    return parse(text).bpf()
