"""Server-wide fencing of orchestrators: a request older than the newest LEADER_EPOCH any DIME of a server
accepted is refused by every DIME of that server (a restarted one too) and by the server itself at 0xffff."""

from __future__ import annotations

from pathlib import Path

from pxproto.dime.endpoint import Address, Output, frame_to
from pxproto.fastpath import decode, encode
from pxproto.node import state
from pxproto.node.server import Server, ServerConfig
from pxproto.sim import SimCluster
from pxproto.wire.codes import DIME_ALL, Command, CounterId, Op, ServerCounterId, Status, TlvType
from pxproto.wire.frame import Frame, Signaling, Tlv

ORCH = Address(b"\x02\x00\x00\x00\x00\xee", DIME_ALL, 0)


class Asker:
    """An orchestrator that only sends what the test says and keeps the answers."""

    def __init__(self) -> None:
        self.answers: list[Signaling] = []

    def receive(self, frame: Frame, now: float) -> Output:
        if isinstance(frame.body, Signaling):
            self.answers.append(frame.body)
        return Output()

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> Output:
        return Output()


def _ask(c: SimCluster, key: tuple[bytes, int], epoch: int, req_id: int) -> Signaling:
    asker = Asker()
    c.net.add(ORCH.mac, asker)
    body = Signaling(Command.USAGE, Op.REQUEST, req_id, Status.OK, (Tlv(TlvType.LEADER_EPOCH, epoch),))
    c.net.emit(ORCH.mac, Output(frames=[frame_to(ORCH, Address(key[0], key[1], 0), body)]))
    c.run(0.05)
    assert len(asker.answers) == 1
    return asker.answers[0]


def test_every_dime_of_a_server_refuses_a_leader_older_than_one_any_of_them_accepted() -> None:
    c = SimCluster(servers=1, dimes=3)
    c.run(0.3)
    s = c.servers[0]
    a, b = (s.mac, 0), (s.mac, 1)
    assert _ask(c, a, 9, 1).status is Status.OK  # the new leader reached DIME 0 only
    refused = _ask(c, b, 8, 2)  # the old leader tries DIME 1, which never heard of epoch 9
    assert refused.status is Status.DENIED and refused.param(TlvType.TEXT) == "stale leader epoch"
    assert s.dimes[1].machine.counters[CounterId.REJECTED_FENCED] == 1
    c.kill_dime(a)
    c.run(0.1)
    c.restart_dime(a)  # a new process: its own memory is empty, the server's fence is not
    c.run(0.2)
    assert _ask(c, a, 8, 3).status is Status.DENIED
    assert _ask(c, b, 9, 4).status is Status.OK and s.leader_fence == 9


def test_the_fence_file_only_rises(tmp_path: Path) -> None:
    assert state.raise_leader_fence(tmp_path, 5) == 0
    assert state.raise_leader_fence(tmp_path, 3) == 5
    assert state.raise_leader_fence(tmp_path, 1 << 40) == 5
    assert state.raise_leader_fence(tmp_path, 0) == 1 << 40
    assert (tmp_path / "leader-epoch").stat().st_mode & 0o777 == 0o600


class Wire:
    shareable = False
    name = "test"

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, raw: bytes) -> None:
        self.sent.append(raw)


def test_the_server_itself_refuses_a_stale_leader(tmp_path: Path) -> None:
    mac = b"\x02\x00\x00\x00\x00\x51"
    cfg = ServerConfig(mac, 0, [0], 1, str(tmp_path), str(tmp_path / "local"), None, {})
    wire = Wire()
    server = Server(cfg, wire)  # type: ignore[arg-type]
    state.raise_leader_fence(tmp_path, 7)  # as one of its DIMEs would have, accepting epoch 7

    def ping(epoch: int, req_id: int) -> Signaling:
        params = (Tlv(TlvType.ECHO, b"x"), Tlv(TlvType.LEADER_EPOCH, epoch))
        body = Signaling(Command.PING, Op.REQUEST, req_id, Status.OK, params)
        server.from_wire(encode(frame_to(ORCH, Address(mac, DIME_ALL, 0), body)), 0.0)
        reply = decode(wire.sent.pop()).body
        assert isinstance(reply, Signaling)
        return reply

    assert ping(6, 1).status is Status.DENIED
    assert server.counters["rejected_fenced"] == 1
    assert ping(7, 2).status is Status.OK and ping(8, 3).status is Status.OK
    assert ping(7, 4).status is Status.DENIED, "epoch 8 raised the fence"
    assert server._sys_counters(None, Signaling(Command.COUNTERS, Op.REQUEST, 5, Status.OK, (  # type: ignore[arg-type]
        Tlv(TlvType.COUNTER_ID, int(ServerCounterId.REJECTED_FENCED)),)))[1][1].value == 2  # fmt: skip
