"""Discovery: probes with state filters, boot announces split across frames, and the orchestrator's pool
(:class:`pxproto.dime.liveness.Pool`, the one production runs)."""

from __future__ import annotations

import zlib

import pytest

from pxproto.dime.discovery import DiscoveryResponder, dimes_per_frame
from pxproto.dime.endpoint import Address
from pxproto.dime.liveness import DimeDiscovered, DimeReborn, DimeUpdated, Pool, ServerDiscovered
from pxproto.dime.simlink import SimLink, SimNet
from pxproto.wire import spec
from pxproto.wire.codec import decode, encode
from pxproto.wire.codes import DIME_ALL, STATE_ANY, Capability, DimeState, DiscoveryOp
from pxproto.wire.frame import BROADCAST, DimeInfo, Discovery, Frame

ORCH = Address(bytes.fromhex("02000000aaaa"))
CAPS = int(Capability.FASTPATH | Capability.AUTH)


def server_mac(i: int) -> bytes:
    return bytes.fromhex("0200000100") + bytes([i])


def infos(n: int, epoch: int = 1) -> list[DimeInfo]:
    states = [DimeState.FREE, DimeState.BUSY, DimeState.FREE, DimeState.FAULTED]
    return [DimeInfo(i, i % 64, states[i % 4], 8, 8 - i % 5, epoch) for i in range(n)]


def server(i: int, n: int, **kw: float) -> DiscoveryResponder:
    return DiscoveryResponder(Address(server_mac(i)), infos(n), caps=CAPS, sw_version=0x010203, **kw)  # type: ignore[arg-type]


def test_records_per_frame() -> None:
    assert dimes_per_frame(1500) == (1500 - 20 - 16) // 17 == 86
    assert dimes_per_frame(9000) == 527
    with pytest.raises(ValueError, match="no DIME record"):
        dimes_per_frame(40)


def test_boot_announce_of_many_dimes_is_split_across_frames_and_repeated() -> None:
    srv = server(1, 200, boot_repeats=2, boot_interval=0.1)
    out = srv.boot(0.0)
    assert len(out.frames) == 3 and out.timer == pytest.approx(0.1)
    seen = []
    for f in out.frames:
        raw = encode(f)
        assert len(raw) - spec.ETH_LEN <= 1500
        back = decode(raw)
        assert isinstance(back.body, Discovery) and back.body.op is DiscoveryOp.GRATUITOUS
        assert back.dst_mac == BROADCAST and back.dst_dime == DIME_ALL and back.body.probe_id == 0
        seen += [d.dime for d in back.body.dimes]
    assert seen == list(range(200))
    assert len(srv.handle_timer(0.05).frames) == 0
    assert len(srv.handle_timer(0.1).frames) == 3 and srv.get_timer() is None


def probe_frame(state_filter: int, probe_id: int = 42) -> Frame:
    return Frame(body=Discovery(DiscoveryOp.PROBE, probe_id, state_filter=state_filter), src_mac=ORCH.mac)


def test_probe_is_answered_to_the_prober_with_the_filtered_dimes() -> None:
    srv = server(1, 10)
    (f,) = srv.receive(probe_frame(DimeState.FREE), 0.0).frames
    assert isinstance(f.body, Discovery) and f.body.op is DiscoveryOp.ANNOUNCE and f.body.probe_id == 42
    assert f.dst_mac == ORCH.mac and f.body.state_filter == DimeState.FREE
    assert [d.dime for d in f.body.dimes] == [0, 2, 4, 6, 8] and f.body.caps == CAPS
    assert len(srv.receive(probe_frame(STATE_ANY), 0.0).frames[0].body.dimes) == 10  # type: ignore[union-attr]
    assert srv.receive(probe_frame(DimeState.STOPPING), 0.0).frames == []
    assert srv.counters["probes_filtered"] == 1
    srv.update(DimeInfo(3, 3, DimeState.STOPPING, 8, 8, 1))
    (f,) = srv.receive(probe_frame(DimeState.STOPPING), 0.0).frames
    assert [d.dime for d in f.body.dimes] == [3]  # type: ignore[union-attr]
    assert srv.receive(f, 0.0).frames == [] and srv.counters["not_probe"] == 1


def test_server_without_dimes_answers_an_any_probe_with_an_empty_announce() -> None:
    (f,) = DiscoveryResponder(Address(server_mac(9))).receive(probe_frame(STATE_ANY), 0.0).frames
    assert isinstance(f.body, Discovery) and f.body.dimes == ()


@pytest.mark.parametrize("seed", range(3))
def test_pool_discovers_every_dime_over_a_lossy_wire(seed: int) -> None:
    net = SimNet(link=lambda s, d: SimLink(zlib.crc32(s + d, seed), loss=0.15, reorder=0.2, jitter=0.01))
    pool = Pool(ORCH, probe_repeats=5, probe_interval=0.05)
    net.add(ORCH.mac, pool)
    sizes = {server_mac(i): 30 + 40 * i for i in range(6)}  # up to 230 DIMEs: three frames
    for i in range(6):
        net.add(server_mac(i), server(i, sizes[server_mac(i)]))
    net.emit(ORCH.mac, pool.probe(net.now)[1])
    net.run(2.0)
    assert {m: len(s.dimes) for m, s in pool.servers.items()} == sizes
    assert len(net.events_of(ServerDiscovered)) == 6
    assert len(net.events_of(DimeDiscovered)) == sum(sizes.values())
    assert not net.events_of(DimeUpdated) and pool.counters["probes"] == 5
    s0 = pool.servers[server_mac(0)]
    assert s0.caps == CAPS and s0.sw_version == 0x010203
    assert s0.dimes[5].info == infos(30)[5] and s0.dimes[5].address == Address(server_mac(0), 5)


def announce(dimes: list[DimeInfo], mac: bytes = b"\x02\x00\x00\x00\x00\x07") -> Frame:
    return Frame(body=Discovery(DiscoveryOp.GRATUITOUS, dimes=tuple(dimes)), src_mac=mac)


def test_pool_tracks_updates_rebirths_and_ignores_late_epochs() -> None:
    pool = Pool(ORCH)
    mac = b"\x02\x00\x00\x00\x00\x07"
    first = pool.receive(announce([DimeInfo(1, 1, DimeState.FREE, 8, 8, 5)]), 0.0).events
    assert [type(e) for e in first] == [ServerDiscovered, DimeDiscovered]
    (upd,) = pool.receive(announce([DimeInfo(1, 1, DimeState.BUSY, 8, 2, 5)]), 1.0).events
    assert isinstance(upd, DimeUpdated) and upd.old.state is DimeState.FREE and upd.new.mem_free == 2
    assert pool.receive(announce([DimeInfo(1, 1, DimeState.BUSY, 8, 2, 5)]), 1.5).events == []
    (reborn,) = pool.receive(announce([DimeInfo(1, 1, DimeState.FREE, 8, 8, 6)]), 2.0).events
    assert isinstance(reborn, DimeReborn) and (reborn.old_epoch, reborn.epoch) == (5, 6)
    assert pool.receive(announce([DimeInfo(1, 1, DimeState.BUSY, 8, 1, 5)]), 3.0).events == []
    assert pool.counters["late_epoch"] == 1
    d = pool.get((mac, 1))
    assert d is not None and d.info.epoch == 6 and d.info.state is DimeState.FREE and d.last_seen == 2.0


def test_pool_queries_and_marks() -> None:
    pool = Pool(ORCH)
    pool.receive(announce(infos(8)), 0.0)
    mac = b"\x02\x00\x00\x00\x00\x07"
    assert [d.info.dime for d in pool.free()] == [0, 6, 2, 4]  # most free memory first
    assert [d.info.mem_free for d in pool.free(min_mem_chunks=6)] == [8, 7, 6]
    pool.set_state((mac, 0), DimeState.BUSY)
    assert [d.info.dime for d in pool.in_state(DimeState.BUSY)] == [0, 1, 5]
    assert len(pool.in_state()) == 8
    with pytest.raises(KeyError, match="no DIME 99"):
        pool.set_state((mac, 99), DimeState.BUSY)
    assert pool.receive(probe_frame(STATE_ANY), 0.0).events == [] and pool.counters["not_announce"] == 1
