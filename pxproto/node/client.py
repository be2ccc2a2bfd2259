"""A small blocking management client on a wire: what tests, the bench and operators use to talk to DIMEs.

It is an endpoint like any other (its own MAC, DIME id 0xffff): it sends
signaling requests reliably (:class:`pxproto.dime.signaling.Requester`),
signs them when it has keys, probes for DIMEs, and records the heartbeats,
announces and fault reports it sees.
"""

from __future__ import annotations

import os
import select
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, frame_to
from pxproto.dime.keys import KeyRing
from pxproto.dime.signaling import Requester, RequestTimedOut, ResponseReceived, RetransmitPolicy
from pxproto.errors import ProtocolError
from pxproto.fastpath import decode, encode
from pxproto.link import Port
from pxproto.wire.codes import DIME_ALL, STATE_ANY, Command, DiscoveryOp, Op, Status
from pxproto.wire.frame import Data, Discovery, Frame, Heartbeat, Sealed, Signaling, Tlv


@dataclass
class Seen:
    """What the client has heard besides its responses."""

    heartbeats: list[tuple[float, bytes, int, Heartbeat]] = field(default_factory=list)
    """(arrival time, server MAC, DIME id, body)."""
    announces: list[tuple[float, bytes, Discovery]] = field(default_factory=list)
    faults: list[tuple[float, Address, Signaling]] = field(default_factory=list)


class Client:
    def __init__(
        self, wire: Port, mac: bytes | None = None, keys: dict[int, bytes] | None = None, encrypt: Iterable[int] = ()
    ) -> None:
        self.wire = wire
        self.mac = mac or bytes([0x02]) + os.urandom(5)
        self.local = Address(self.mac, DIME_ALL, 0)
        self.keyring = KeyRing(dict(keys or {}), epoch=int(time.time()) & 0xFFFFFFFF, encrypt=encrypt)
        self.requester = Requester(self.local, RetransmitPolicy(initial=0.05, retries=6), first_req_id=os.getpid())
        self.seen = Seen()
        self.done: dict[tuple[bytes, int, int], ResponseReceived | RequestTimedOut] = {}
        self.keep_heartbeats = True
        self.rejected: Counter[str] = Counter()
        """Frames dropped because their trailer failed (with a key), by reason."""

    def send_frames(self, frames: Sequence[Frame]) -> None:
        for f in frames:
            self.wire.send(self.keyring.protect(encode(f), f.cls))

    def send_raw(self, raw: bytes) -> None:
        self.wire.send(raw)

    def poll(self, timeout: float) -> None:
        """Wait up to ``timeout`` for frames and handle what came (and due retransmissions)."""
        r, _, _ = select.select([self.wire.fileno()], [], [], max(0.0, timeout))
        now = time.monotonic()
        if r:
            for raw in self.wire.recv_batch() or []:
                self.on_raw(raw, now)
        t = self.requester.get_timer()
        if t is not None and t <= now:
            out = self.requester.handle_timer(now)
            self.send_frames(out.frames)
            self._events(out.events)

    def on_raw(self, raw: bytes, now: float) -> None:
        try:
            f = decode(raw)
        except ProtocolError:
            return
        if f.dst_mac != self.mac and f.dst_mac[0] & 1 == 0:
            return
        if isinstance(f.body, Sealed):  # the AEAD mode: opened under the ring (tag, replay window)
            got = self.keyring.open_frame(f, raw, now, decode)
            if isinstance(got, str):
                self.rejected[got] += 1
                return
            f, raw = got
        elif self.keyring.enabled and not isinstance(f.body, Data):  # with a key, heartbeats and announces too
            a = f.auth
            why = "unauthenticated" if a is None else None
            if a is not None:
                why = self.keyring.check(raw, f.src_mac, f.src_dime, a.key_id, a.counter, f.padding, now)
            if why is not None:
                self.rejected[why] += 1
                return
        b = f.body
        if isinstance(b, Heartbeat):
            if self.keep_heartbeats:
                self.seen.heartbeats.append((now, f.src_mac, f.src_dime, b))
        elif isinstance(b, Discovery):
            if b.op is not DiscoveryOp.PROBE:
                self.seen.announces.append((now, f.src_mac, b))
        elif isinstance(b, Signaling):
            if b.op is Op.RESPONSE:
                self._events(self.requester.receive(f, now).events)
            elif b.cmd is Command.FAULT_REPORT:
                peer = Address(f.src_mac, f.src_dime, f.src_thread)
                self.seen.faults.append((now, peer, b))
                reply = Signaling(b.cmd, Op.RESPONSE, b.req_id, Status.OK, ())
                self.send_frames([frame_to(self.local, peer, reply)])

    def _events(self, events: list) -> None:  # type: ignore[type-arg]
        for e in events:
            if isinstance(e, ResponseReceived | RequestTimedOut):
                self.done[(e.peer.mac, e.peer.dime, e.req_id)] = e

    def request(
        self, dest: Address, cmd: Command, params: Sequence[Tlv] = (), timeout: float = 5.0
    ) -> ResponseReceived | RequestTimedOut:
        req_id, out = self.requester.request(dest, cmd, params, now=time.monotonic())
        self.send_frames(out.frames)
        key = (dest.mac, dest.dime, req_id)
        end = time.monotonic() + timeout
        while key not in self.done and time.monotonic() < end:
            self.poll(0.01)
        if key not in self.done:
            self.requester.cancel(dest, req_id)
            return RequestTimedOut(dest, req_id, cmd, 0)
        return self.done.pop(key)

    def probe(self, wait: float = 0.5, state_filter: int = STATE_ANY) -> list[tuple[bytes, Discovery]]:
        self.seen.announces.clear()
        body = Discovery(DiscoveryOp.PROBE, probe_id=int(time.time() * 1000) & 0xFFFFFFFF, state_filter=state_filter)
        self.send_frames([frame_to(self.local, BROADCAST_ADDRESS, body)])
        end = time.monotonic() + wait
        while time.monotonic() < end:
            self.poll(0.01)
        return [(mac, d) for _, mac, d in self.seen.announces]

    def wait_for(self, cond, timeout: float) -> bool:  # type: ignore[no-untyped-def]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            self.poll(0.01)
        return bool(cond())
