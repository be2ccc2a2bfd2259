"""The MICE API: what a service stage's code looks like, and the child process that runs it.

Writing a stage
---------------
A stage is a plain Python function in a module of the service package,
named by the manifest's ``entry = "module:function"``:

- a **source** stage (the first of a workflow, nothing wired to its input)::

      def source(ctx) -> Iterable[bytes]: ...

  is called once; every item it yields is sent downstream.
- every **other** stage::

      def transform(item: bytes, ctx) -> Iterable[bytes]: ...

  is called once per input item; the items it yields (zero, one or many) go
  downstream.  A **sink** is a stage that yields nothing (it keeps its result
  in the local store: ``ctx.commit`` records it once per lineage id, so a
  replay after the sink's repair writes nothing new).

A stage may also yield a **list** (or tuple) of items: a batch, the same as
yielding each in turn (same lineage ids), with less overhead per item.

An item stage may also **take a batch** (:func:`batch`)::

      @batch
      def sink(items: list[bytes], ctx) -> Sequence[Iterable[bytes] | None] | None: ...

  is called with the items of one hand-over (up to a few hundred; their
  lineages in ``ctx.lineages``) and returns None (no outputs) or one entry per
  item, that item's outputs; a batch sink records with ``ctx.commit(name,
  data, lineage=ctx.lineages[i])``.

  ``@batch(views=True)`` hands the items over without a copy, as memoryviews
  of the hand-over ring (bytes when the MICE hands over on a socket, without
  the compiled ring); they are valid during the call only: the DIME writes
  over their bytes once it returns, and a view the stage still holds is
  released (reading it raises ValueError; a buffer taken of it, e.g. by
  numpy, would see other bytes).  Keep ``bytes(item)``.  A 64 KiB item is
  then not copied once more into a bytes object for the stage.

Which form is used is decided by the signature: one positional parameter
means source, two means item stage.  ``ctx`` is a :class:`Context`.

Lineage and exactly-once
------------------------
Every item carries a 64-bit *lineage id* end to end:

- the i-th item (0-based) a source stage with index S yields has lineage
  ``S << 48 | (i + 1)`` (sources must be deterministic: a replacement source
  re-yields the same items with the same ids);
- the k-th item a stage yields for an input of lineage L has lineage L for
  k = 0, and :func:`derive_lineage(L, k) <derive_lineage>` for k > 0, so a replay
  gives the same ids.

On the data channel a message holds one item, ``lineage u64 | item bytes``
(:func:`pack_item`), or a batch of small items sharing one frame,
``0 u64 | (lineage u64 | length u32 | item bytes)...`` (:func:`pack_items`;
no lineage is 0, so the first word tells the two apart).  A DIME batches
what is waiting for an output into messages that each fit one fragment, so
small items cost a fraction of a frame each.  A DIME hands its MICE each lineage once: an item whose
lineage it has already handed over (a replay after a re-wire) is dropped and
acknowledged when the first copy completes, so a sink sees every item exactly
once as long as its DIME lives.

Acknowledgement semantics (see :mod:`pxproto.node.channel`)
-----------------------------------------------------
An acknowledgement-only DATA frame carries two marks:

- ``ack`` (transport): every message up to it has arrived whole; the sender
  stops retransmitting them.  ``credit`` = messages it may send beyond ``ack``.
- ``msg_id`` (completion): every message up to it has been processed by the
  MICE *and* every item it produced has been completion-acknowledged by the
  next stage (for a sink: consumed).  Only then does the upstream DIME drop its
  copy.  Items not yet completion-acknowledged are kept, and when CONNECT
  re-wires (or DISCONNECT unwires) that output, they are sent again to
  whatever output the channel now reaches.  Completion thus travels back
  from the sink, so the death of any DIME in the chain loses nothing.

The child process
-----------------
The DIME forks a child per MICE (:func:`run_child`), pinned to the DIME's
core, with its data size limited by the OS (see :mod:`pxproto.node.memory`).  The
two hand messages over through two shared-memory rings, one per direction, with a
socketpair beside them for wake-ups and end of file (:mod:`pxproto.node.shmring`;
without the compiled ring, over a SOCK_SEQPACKET socketpair); each message is a batch of
records ``kind u8 | lineage u64 | length u32 | bytes``:

- DIME -> MICE: ``ITEM`` (an input), ``STOP``;
- MICE -> DIME: ``OUT`` (an output; it belongs to the last ``ITEM`` not yet
  ``DONE``), ``DONE`` (that input is finished), ``EOF`` (the source ended),
  ``FAULT`` (text; lineage field = FaultCode) before the child exits on an error,
  ``READY`` (first record; lineage field = the child's baseline data size in bytes).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import inspect
import os
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pxproto.fastpath import select
from pxproto.node import items as _codecs
from pxproto.node import micebatch as _batch
from pxproto.package import LocalStore, keyed_records
from pxproto.wire.codes import FaultCode

# The record batches (pxproto.node.micebatch), here too: part of the MICE API.
ITEM = _batch.ITEM
OUT = _batch.OUT
DONE = _batch.DONE
EOF = _batch.EOF
STOP = _batch.STOP
FAULT = _batch.FAULT
READY = _batch.READY
BATCH_BYTES = _batch.BATCH_BYTES
SEQPACKET_MAX = _batch.SEQPACKET_MAX
DONES_MAX = _batch.DONES_MAX
GATHER_BYTES = _batch.GATHER_BYTES
LARGE_BATCH_BYTES = _batch.LARGE_BATCH_BYTES
GATHER_PARTS = _batch.GATHER_PARTS
MAX_ITEM = _batch.MAX_ITEM
Batcher = _batch.Batcher
Inbox = _batch.Inbox
# The item codecs (pxproto.node.items), here too: the record formats are part of the MICE API.
BATCH_MARK = _codecs.BATCH_MARK
COMPILED = _codecs.COMPILED
ITEM_REC = _codecs.ITEM_REC
LINEAGE = _codecs.LINEAGE
REC = _codecs.REC
Bytes = _codecs.Bytes
item_lists = _codecs.item_lists
item_lists_py = _codecs.item_lists_py
item_views = _codecs.item_views
release_views = _codecs.release_views
pack_dones = _codecs.pack_dones
pack_dones_py = _codecs.pack_dones_py
pack_item = _codecs.pack_item
pack_items = _codecs.pack_items
pack_items_py = _codecs.pack_items_py
pack_records = _codecs.pack_records
pack_records_py = _codecs.pack_records_py
pack_run = _codecs.pack_run
pack_run_py = _codecs.pack_run_py
records = _codecs.records
records_py = _codecs.records_py
recv_items = _codecs.recv_items
recv_items_py = _codecs.recv_items_py
take_records = _codecs.take_records
take_records_py = _codecs.take_records_py
unpack_item = _codecs.unpack_item
unpack_items = _codecs.unpack_items
unpack_items_py = _codecs.unpack_items_py
SOURCE_RUN = 256
"""Items a source yields one at a time that are packed together (one :func:`pack_run` call)."""
SOURCE_SHIFT = 48
SOURCE_SLOW = 0.001
"""A source item that took longer than this (seconds) to make flushes the batch it ends.

Measured per item, not since the batch opened: a MICE on a busy
core is often descheduled, and a batch-age rule would then send batches of one."""


def source_lineage(stage: int, i: int) -> int:
    """Lineage of the i-th (0-based) item of source stage ``stage``."""
    return (stage & 0xFFFF) << SOURCE_SHIFT | (i + 1)


def derive_lineage(parent: int, k: int) -> int:
    """Lineage of the k-th output of an input with lineage ``parent``."""
    if k == 0:
        return parent
    h = hashlib.blake2b(struct.pack("!QI", parent, k), digest_size=8).digest()
    return int.from_bytes(h, "big") or 1


@dataclass
class Context:
    """What a stage function gets besides its item."""

    service_id: int
    """SERVICE_ID of the LOAD."""
    stage: int
    """STAGE index in the manifest."""
    name: str
    """The stage's name (MICE_NAME)."""
    dime: int
    """The DIME id running it."""
    epoch: int
    """That DIME's epoch."""
    params: dict[str, Any] = field(default_factory=dict)
    """The stage's ``params`` table from service.toml."""
    store: LocalStore | None = None
    """The server's local store."""
    lineage: int = 0
    """Lineage id of the item being processed (0 in a source)."""
    lineages: list[int] = field(default_factory=list)
    """A :func:`batch` stage: the lineage ids of the items of the call."""
    first: int = 0
    """A source: the index of the first item to send (a replacement resumes there; the items before it are
    taken from the generator and dropped, so a source that paces itself may skip its pacing below ``first``)."""

    committed: dict[str, set[int]] = field(default_factory=dict)
    """The lineages already committed to each store object (loaded from the store on first use)."""
    appenders: dict[str, Callable[[bytes], None]] = field(default_factory=dict)
    """Each store object's open append handle (:meth:`LocalStore.appender`)."""

    def log(self, message: str) -> None:
        print(f"mice {self.name}@dime{self.dime}: {message}", file=sys.stderr, flush=True)

    def commit(self, name: str, data: bytes, lineage: int | None = None) -> bool:
        """Record the current item's result in the local store object ``name``, once per lineage id.

        The record is ``lineage u64 | data``, appended to ``name`` (see :meth:`LocalStore.records`).  A sink's
        output is committed before its DONE travels back; when the sink's DIME dies in between, upstream
        replays the item to the replacement, and this write is what must not happen twice: a lineage already
        in the object is not written again (returns False).  Across servers the records form a keyed table:
        a reader keeps one record per lineage (:func:`keyed_records`); stages are deterministic, so copies of
        one lineage are the same result.
        """
        if self.store is None:
            raise RuntimeError("no local store: the kernel was started without one")
        lin = self.lineage if lineage is None else lineage
        seen = self.committed.get(name)
        if seen is None:
            seen = self.committed[name] = {lin for lin, _ in keyed_records(self.store.records(name))}
        if lin in seen:
            return False
        add = self.appenders.get(name)
        if add is None:
            add = self.appenders[name] = self.store.appender(name)
        add(LINEAGE.pack(lin) + bytes(data))
        seen.add(lin)
        return True


def batch(fn: Callable[..., Any] | None = None, *, views: bool = False) -> Any:
    """Mark an item stage as taking a list of items per call (see the module's docstring): ``@batch``, or
    ``@batch(views=True)`` for items that are views of the hand-over, not copies (valid during the call only)."""

    def mark(f: Callable[..., Any]) -> Callable[..., Any]:
        f.px_batch = True  # type: ignore[attr-defined]
        f.px_views = views  # type: ignore[attr-defined]
        return f

    return mark if fn is None else mark(fn)


def _run_batch(out: Batcher, fn: Callable[..., Any], lineages: list[int], items: list[bytes], ctx: Context) -> None:
    """One call of a :func:`batch` stage for ``items``; each item's outputs, then its DONE."""
    ctx.lineages = lineages
    ctx.lineage = 0
    produced = fn(items, ctx)
    if produced is None:
        out.done_all(lineages)  # nothing per item
        return
    if len(produced) != len(items):
        raise ValueError(f"batch stage {ctx.name} returned {len(produced)} entries for {len(items)} items")
    for i, lineage in enumerate(lineages):
        if produced[i] is not None:
            ctx.lineage = lineage
            _emit(out, produced[i], lineage, ctx, 0)
        out.done(lineage)


def _run_items_py(out: Batcher, fn: Callable[..., Any], lineages: list[int], items: list[bytes], ctx: Context) -> None:
    """One call of an item stage per item; each item's outputs, then its DONE (the twin of ``_miceloop.run_items``)."""
    dones = out.dones
    for lineage, data in zip(lineages, items, strict=True):
        ctx.lineage = lineage
        produced = fn(data, ctx)
        if produced is not None and not (type(produced) in (tuple, list) and not produced):
            _emit(out, produced, lineage, ctx, 0)
            out.done(lineage)
            dones = out.dones  # packing the DONEs before the outputs started a new list
        else:
            dones.append(lineage)  # Batcher.done, inlined (a message holds at most MICE_INFLIGHT items)
    if len(out.dones) >= DONES_MAX:
        out._pack_dones()


def _run_items_c(out: Batcher, fn: Callable[..., Any], lineages: list[int], items: list[bytes], ctx: Context) -> None:
    """:func:`_run_items_py` with the loop compiled (``_miceloop.run_items``); a call that yields, here."""
    _loop.run_items(fn, lineages, items, ctx, out, _emitter(out, ctx), DONES_MAX)  # type: ignore[union-attr]


def _emitter(out: Batcher, ctx: Context) -> Callable[[Iterable[bytes], int], None]:
    """What the compiled item loops call for a stage call that yielded: its outputs, then its DONE."""

    def emit_one(produced: Iterable[bytes], lineage: int) -> None:
        _emit(out, produced, lineage, ctx, 0)
        out.done(lineage)

    return emit_one


def is_source(fn: Callable[..., Any]) -> bool:
    """Whether a stage function is a source (one positional parameter) or an item stage (two)."""
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(params) not in (1, 2):
        raise TypeError(f"a stage takes (ctx) or (item, ctx), not {len(params)} parameters")
    return len(params) == 1


def load_entry(package_dir: str | os.PathLike[str], entry: str) -> Callable[..., Any]:
    """Import ``module:function`` from an unpacked package."""
    module, _, func = entry.partition(":")
    sys.path.insert(0, str(package_dir))
    try:
        mod = importlib.import_module(module)
    finally:
        sys.path.remove(str(package_dir))
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise AttributeError(f"{entry}: {func!r} is not a function of module {module!r}")
    return fn  # type: ignore[no-any-return]


def _put_run(out: Batcher, run: list[Bytes], ctx: Context, counter: int) -> None:
    """OUT records for a source's ``run`` of single items, the last of which was item ``counter - 1``."""
    try:
        out.add_run(OUT, source_lineage(ctx.stage, counter - len(run)), run)
    except ValueError:
        for one in run:
            if len(one) > MAX_ITEM:
                raise ValueError(f"stage {ctx.name} yielded an item of {len(one)} bytes (max {MAX_ITEM})") from None
        raise
    run.clear()


def _emit_source_py(out: Batcher, produced: Iterable[bytes], ctx: Context, counter: int) -> int:
    """A source's outputs: single bytes items are gathered SOURCE_RUN at a time and packed in one call; lists go
    to :func:`_emit` (same lineages and flush rule either way); returns the next source counter (the twin of
    ``_miceloop.emit_source``)."""
    run: list[Bytes] = []
    append = run.append
    clock, first = time.monotonic, ctx.first
    t0 = clock()  # when the making of the next item began: one clock reading per item
    for item in produced:
        if type(item) is bytes and counter >= first:
            append(item)
            counter += 1
            t1 = clock()
            slow = t1 - t0 > SOURCE_SLOW
            if slow or len(run) >= SOURCE_RUN:
                _put_run(out, run, ctx, counter)
                if slow:
                    out.flush()  # a slow source: what it made so far goes now
                t1 = clock()  # packing and sending are not the next item's making
            t0 = t1
            continue
        if run:
            _put_run(out, run, ctx, counter)
        counter = _emit(out, (item,), None, ctx, counter, t0)
        t0 = clock()
    if run:
        _put_run(out, run, ctx, counter)
    return counter


def _emit_source_c(out: Batcher, produced: Iterable[bytes], ctx: Context, counter: int) -> int:
    """:func:`_emit_source_py` with the loop compiled (``_miceloop.emit_source``: the clock read in C, the records
    of bytes items written as they come, no run list); a flush and anything but a small bytes item, here."""

    def other(item: Any, counter: int, t0: float) -> int:
        return _emit(out, (item,), None, ctx, counter, t0)

    def put_run(run: list[Bytes], counter: int) -> None:
        _put_run(out, run, ctx, counter)

    base = source_lineage(ctx.stage, -1)  # (the stage's bits: lineage ``base | (i + 1)``)
    slow = int(SOURCE_SLOW * 1e9)
    loop: Any = _loop
    return int(loop.emit_source(produced, counter, ctx.first, slow, OUT, base, out, BATCH_BYTES, GATHER_BYTES,
                                out.add_packed, out.flush, other, put_run, SOURCE_RUN))  # fmt: skip


def _emit(
    out: Batcher, produced: Iterable[bytes] | None, parent: int | None, ctx: Context, counter: int, t_first: float = 0.0
) -> int:
    """Send a stage call's outputs; return the next source counter (``t_first``: when the source began making the
    first of them, if not now)."""
    if produced is None:
        return counter
    k = 0
    items = iter(produced)
    clock = time.monotonic
    while True:
        t0 = t_first or clock()
        t_first = 0.0
        try:
            item = next(items)
        except StopIteration:
            break
        if parent is None and isinstance(item, list | tuple):  # a source's batch: packed in one call
            skip = max(0, ctx.first - counter)
            try:
                out.add_run(OUT, source_lineage(ctx.stage, counter + skip), item, skip)
            except (TypeError, ValueError):
                pass  # a bad item: the loop below names it
            else:
                counter += len(item)
                if clock() - t0 > SOURCE_SLOW:
                    out.flush()
                continue
        for one in item if isinstance(item, list | tuple) else (item,):  # a list: a batch of items
            if not isinstance(one, bytes | bytearray | memoryview):
                raise TypeError(f"stage {ctx.name} yielded {type(one).__name__}, items are bytes")
            data = bytes(one)
            if len(data) > MAX_ITEM:
                raise ValueError(f"stage {ctx.name} yielded an item of {len(data)} bytes (max {MAX_ITEM})")
            if parent is None:
                if counter >= ctx.first:
                    out.add(OUT, source_lineage(ctx.stage, counter), data)
                counter += 1
            else:
                out.add(OUT, derive_lineage(parent, k), data)
                k += 1
        if parent is None and clock() - t0 > SOURCE_SLOW:
            out.flush()  # a slow source: what it made so far goes now
    return counter


def _run_link_py(out: Batcher, fn: Callable[..., Any], link: Any, ctx: Context) -> tuple[int, bool]:
    """The next message of a shared-memory hand-over through an item stage (:func:`_link_items`, then
    :func:`_run_items`); returns (its size, 0 when the DIME is gone; whether a STOP record came)."""
    lineages, items, stop, size = _link_items(link)
    if size:
        _run_items(out, fn, lineages, items, ctx)
    return size, stop


def _run_link_c(out: Batcher, fn: Callable[..., Any], link: Any, ctx: Context) -> tuple[int, bool]:
    """:func:`_run_link_py` in one compiled loop (``_miceloop.run_message``): no lists, DONE records packed there."""
    view = link.recv()
    if view is None:
        return 0, False
    size = len(view)
    if not size:
        link.done()
        return 0, False
    _, stop = _loop.run_message(  # type: ignore[union-attr]
        view, link.done, fn, ctx, _emitter(out, ctx), out.add_packed, ITEM, STOP, DONE, DONES_MAX
    )
    return size, bool(stop)


def _run_batch_views(out: Batcher, fn: Callable[..., Any], link: Any, ctx: Context) -> tuple[int, bool]:
    """The next message of a shared-memory hand-over through a ``@batch(views=True)`` stage: its items are views
    of the ring, released after the call (a view the stage kept then raises ValueError when read), and only then is
    the message's space freed; returns (its size, 0 when the DIME is gone; whether a STOP record came)."""
    view = link.recv()
    if view is None:
        return 0, False
    size = len(view)
    items: list[memoryview] = []
    try:
        lineages, items, stop = item_views(view, ITEM, STOP)
        if items:
            _run_batch(out, fn, lineages, items, ctx)  # type: ignore[arg-type]
    finally:
        release_views(items)  # (one the stage took a buffer of stays: its own risk, as documented)
        link.done()
    return size, stop


def _link_items(link: Any) -> tuple[list[int], list[bytes], bool, int]:
    """The next message of a shared-memory hand-over as :func:`recv_items` gives it (items copied out of the ring,
    whose space is then freed); size 0 when the DIME is gone."""
    view = link.recv()
    if view is None:
        return [], [], False, 0
    try:
        lineages, items, stop = item_lists(view, ITEM, STOP)
        return lineages, items, stop, len(view)
    finally:
        link.done()


_loop = select.compiled("pxproto.node._miceloop")
LOOP_COMPILED = _loop is not None
"""Whether the per-item loops are the compiled ``pxproto.node._miceloop`` (else the ``*_py`` twins)."""
_emit_source = _emit_source_c if _loop is not None else _emit_source_py
_run_items = _run_items_c if _loop is not None else _run_items_py
_run_link = _run_link_c if _loop is not None else _run_link_py


def run_child(sock: socket.socket, package_dir: str, entry: str, ctx: Context, link: Any = None) -> int:
    """The body of the MICE child process; returns its exit status (never raises).  With ``link`` (a
    :class:`pxproto.node.shmring.Link`) the record batches go both ways through its shared rings, not ``sock``."""
    out = Batcher(sock, link)
    inbox = Inbox() if link is None else None
    try:
        fn = load_entry(package_dir, entry)
        if is_source(fn):
            produced = fn(ctx)
            if produced is not None:
                _emit_source(out, produced, ctx, 0)
            out.add(EOF, 0)
            out.flush()
            # Wait for STOP so the DIME decides when we are gone.
            while True:
                if inbox is not None:
                    msg = inbox.recv(sock)
                else:
                    view = link.recv()
                    msg = b"" if view is None else bytes(view)
                    if view is not None:
                        link.done()
                if not msg or any(k == STOP for k, _, _ in records(msg)):
                    return 0
        batched = getattr(fn, "px_batch", False)
        views = batched and getattr(fn, "px_views", False)
        large = False  # whether the last message opened with a large item: the next one's is then received whole
        while True:
            # the ITEM records before any STOP, in two lists (copied out of the reused buffer, or received straight)
            if link is not None and (views or not batched):
                size, stop = (_run_batch_views if views else _run_link)(out, fn, link, ctx)
                if not size:
                    return 0
            else:
                if inbox is not None:
                    lineages, items, stop, size, large = recv_items(sock, inbox.buf, ITEM, STOP, GATHER_BYTES, large)
                else:
                    lineages, items, stop, size = _link_items(link)
                if not size:
                    return 0
                if batched:
                    if items:
                        _run_batch(out, fn, lineages, items, ctx)
                else:
                    _run_items(out, fn, lineages, items, ctx)
            out.flush()
            if stop:
                return 0
    except MemoryError:
        return _fault(out, FaultCode.MEMORY_EXCEEDED, f"stage {ctx.name}: out of memory (memory limit reached)")
    except OSError as exc:
        if exc.errno != errno.ENOMEM:  # a refused mmap under RLIMIT_AS is the limit, not a crash
            return _fault(out, FaultCode.MICE_CRASHED, f"stage {ctx.name}: {type(exc).__name__}: {exc}")
        return _fault(out, FaultCode.MEMORY_EXCEEDED, f"stage {ctx.name}: {exc.strerror} (memory limit reached)")
    except BaseException as exc:  # the MICE's bug: report it, the DIME lives on
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return _fault(out, FaultCode.MICE_CRASHED, f"stage {ctx.name}: {tb}")


def _fault(out: Batcher, code: FaultCode, text: str) -> int:
    out.parts.clear()
    out.size = 0
    out.dones.clear()
    try:
        out.add(FAULT, int(code), text.encode()[:240])
        out.flush()
    except OSError:
        pass
    return 3 if code is FaultCode.MEMORY_EXCEEDED else 2
