"""docs/PROTOCOL.md cites its decoding rules by number; every number comes from the row it means.

The prose templates (pxproto/wire/gen_docs.py, gen_docs_rules.py) cite a rule by the row's name,
``{n[padding]}``; the generator puts in the row's number.  These tests hold that no number is typed
by hand, that every citation in the generated document lands on the row named, and that citing a name
no row has fails the generation.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pxproto.wire import gen_docs, gen_docs_rules
from pxproto.wire.gen_docs_rules import TABLES, rule_numbers

ROOT = Path(__file__).resolve().parent.parent
TYPED = re.compile(r"(?i)\b(?:rules?|steps?)\s+(?:\{n\[[^\]]*\]\}(?:,\s*|\s+and\s+))*\d")
"""A citation whose number (first, or after placeholders) is typed rather than looked up."""
CITED = re.compile(
    r"(?i)\b(?:(SIGNALING|DATA|DISCOVERY|HEARTBEAT|frame)\s+)?(?:rules?|steps?)\s+(\d+(?:(?:,\s*|\s+and\s+)\d+)*)"
)
"""A citation in the generated text: an optional table, then one or more numbers."""
SECTION = {
    "### The frame": "frame",
    "### SIGNALING body": "signaling",
    "### DATA body": "data",
    "### DISCOVERY body": "discovery",
    "### HEARTBEAT body": "heartbeat",
}


def _tables(doc: str) -> dict[str, dict[int, str]]:
    """The rule tables of the document, read back: table -> row number -> condition text."""
    out: dict[str, dict[int, str]] = {}
    table = None
    for line in doc.splitlines():
        if line.startswith("#"):
            table = next((t for head, t in SECTION.items() if line.startswith(head)), None)
        elif table and (m := re.match(r"\| (\d+) \| (.*?) \| `", line)):
            out.setdefault(table, {})[int(m[1])] = m[2]
    return out


def _prose(doc: str) -> str:
    return "\n".join(line for line in doc.splitlines() if not re.match(r"\| \d+ \|", line))


def test_the_generators_type_no_rule_number() -> None:
    for path in (Path(gen_docs.__file__), Path(gen_docs_rules.__file__)):
        typed = TYPED.findall(path.read_text())
        assert not typed, f"{path.name} cites a rule by a typed number: {typed}; cite it as {{n[name]}}"


def test_every_citation_lands_on_the_row_it_names() -> None:
    n = rule_numbers()
    doc = gen_docs.generate(n)
    assert doc == (ROOT / "docs" / "PROTOCOL.md").read_text(), "run python -m pxproto.wire.gen_docs -o docs/PROTOCOL.md"
    tables = _tables(doc)
    assert set(tables) == set(TABLES)
    cited: dict[str, set[int]] = {}
    for name in n.cited:
        prefix, _, bare = name.rpartition(".")
        table = next(t for t, (p, _) in TABLES.items() if p == prefix)
        rows = TABLES[table][1]()
        want = next(cond for row_name, cond, *_ in rows if row_name == bare)
        assert tables[table][n[name]] == want, (name, n[name])
        cited.setdefault(table, set()).add(n[name])
    assert cited.get("frame") and cited.get("data"), "the prose cites frame rules and DATA rules"
    # Every number the prose shows is one the generator looked up, in the table it names.
    for m in CITED.finditer(_prose(doc)):
        table = (m[1] or "frame").lower()
        for number in map(int, re.split(r",\s*|\s+and\s+", m[2])):
            assert number in cited.get(table, set()), (m[0], table)


def test_citing_a_rule_no_row_is_named_fails_the_generation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen_docs_rules, "RULES", gen_docs_rules.RULES + "\n(rule {n[no_such_rule]})\n")
    with pytest.raises(KeyError, match="no_such_rule"):
        gen_docs.generate()


def test_rule_names_are_unique_per_table() -> None:
    for table, (_prefix, rows) in TABLES.items():
        names = [row[0] for row in rows()]
        assert len(set(names)) == len(names), table
