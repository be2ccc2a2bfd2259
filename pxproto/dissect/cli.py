"""``pxdissect``: write the Parallax Wireshark dissector generated from the spec.

pxdissect                      # the Lua source on standard output
pxdissect -o dissectors/parallax.lua
pxdissect --install            # into Wireshark's personal Lua plugin folder
pxdissect --ethertypes signaling=0x88b5,data=0x88b6 --install
pxdissect --check dissectors/parallax.lua   # exit 1 when the file is stale
pxdissect --fields             # every display-filter field, its type and meaning
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pxproto.dissect.install import PLUGIN_NAME, personal_plugin_dir
from pxproto.wire import ethertypes
from pxproto.wire.ethertypes import EtherTypeMap
from pxproto.wire.gen_lua import field_list, generate


def _write(path: Path, text: str) -> None:
    """A regular file (or a new one) is replaced atomically; anything else that exists (a FIFO, a
    device, /dev/stdout) is written into as it is: renaming over it would replace the node itself."""
    if path.exists() and not path.is_file():
        with path.open("w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(path)


def _read_bounded(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path`` (a file larger than that is stale anyway; /dev/zero ends)."""
    with open(path, "rb") as f:
        return f.read(limit)


def _stdout(lines: list[str]) -> int:
    """Print to standard output; a closed pipe or a full disk is one line on stderr, not a traceback."""
    try:
        for line in lines:
            sys.stdout.write(line)
        sys.stdout.flush()
    except BrokenPipeError:  # pxdissect --fields | head
        sys.stderr.close()
    except OSError as exc:
        print(f"pxdissect: cannot write the standard output: {exc.strerror}", file=sys.stderr)
        sys.stdout = open(os.devnull, "w")  # the interpreter's own flush at exit must not fail again
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="pxdissect",
        description="Generate the Parallax Wireshark Lua dissector from the wire spec.",
    )
    ap.add_argument("-o", "--output", metavar="PATH", help="write the dissector here (default: standard output)")
    ap.add_argument(
        "--install",
        action="store_true",
        help=f"write it as {PLUGIN_NAME} into Wireshark's personal Lua plugin folder ({personal_plugin_dir()})",
    )
    ap.add_argument(
        "--ethertypes",
        metavar="MAP",
        help="EtherType map compiled in as the preference defaults, e.g. signaling=0x88b5,data=0x88b6 "
        f"(default: the map in force, {ethertypes.current().describe()}; ${ethertypes.ENV_VAR} sets it)",
    )
    ap.add_argument("--check", metavar="PATH", help="exit 1 if PATH differs from what would be generated")
    ap.add_argument(
        "--fields", action="store_true", help="list the display-filter fields and experts (name, type, meaning)"
    )
    args = ap.parse_args(argv)

    if args.fields:
        rows = field_list()
        width = max(len(name) for name, _, _ in rows)
        return _stdout([f"{name:{width}}  {ftype:13}  {text}\n" for name, ftype, text in rows])

    try:
        ethermap = EtherTypeMap.parse(args.ethertypes) if args.ethertypes is not None else ethertypes.current()
    except ValueError as exc:
        print(f"pxdissect: --ethertypes: {exc}", file=sys.stderr)
        return 2
    text = generate(ethermap)

    if args.check:
        try:
            current = _read_bounded(args.check, len(text.encode()) + 1)
        except OSError as exc:
            print(f"pxdissect: {args.check}: {exc.strerror}", file=sys.stderr)
            return 2
        if current != text.encode():
            print(f"pxdissect: {args.check} is stale; regenerate it with pxdissect -o {args.check}", file=sys.stderr)
            return 1
        print(f"{args.check}: up to date")
        return 0

    targets: list[Path] = []
    if args.output:
        targets.append(Path(args.output))
    if args.install:
        targets.append(personal_plugin_dir() / PLUGIN_NAME)
    if not targets:
        return _stdout([text])
    for path in targets:
        try:
            _write(path, text)
        except OSError as exc:
            print(f"pxdissect: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {path} ({len(text.encode())} bytes, EtherTypes {ethermap.describe()})", file=sys.stderr)
    if args.install:
        print(
            "restart Wireshark (or Analyze > Reload Lua Plugins) to load it; while it is installed, every "
            "Wireshark and tshark loads it, and `tshark -X lua_script:OTHER.lua` of another copy steps aside "
            f"with a message: remove {targets[-1]} to run an uninstalled one",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
