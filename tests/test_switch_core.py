"""The switch's forwarding logic, sans I/O: learning, flooding, DIME-scope forwarding, priority, counters."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pxproto.switch.core import Switch, SwitchPolicy
from pxproto.switch.fdb import LEARN_FULL, LEARN_LIMIT, LEARN_MOVED, LEARN_NEW, PyFdb, fdb_key
from pxproto.switch.frames import data, heartbeat, mac, signaling
from pxproto.testing import frames, hostile_bytes, mutations
from pxproto.wire import encode

BROADCAST_MAC = b"\xff" * 6

FDBS = ["py"]
try:
    from pxproto.switch._fdb import Fdb as CFdb  # type: ignore[attr-defined]

    FDBS.append("compiled")
except ImportError:
    CFdb = None


def make_fdb(kind: str, capacity: int = 8192, aging: float = 300.0):  # type: ignore[no-untyped-def]
    return PyFdb(capacity, aging) if kind == "py" else CFdb(capacity, aging)


@pytest.fixture(params=FDBS)
def fdb_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_switch(fdb_kind: str, nports: int = 3, **policy: object) -> Switch:
    pol = SwitchPolicy(**policy)  # type: ignore[arg-type]
    sw = Switch(pol, make_fdb(fdb_kind, pol.fdb_capacity, pol.aging))
    for i in range(nports):
        sw.add_port(f"p{i}")
    return sw


def drain(sw: Switch, port: int) -> list[bytes]:
    out = sw.peek(port, 1 << 20)
    sw.consume(port, len(out))
    return out


def test_compiled_fdb_is_built_when_required() -> None:
    if os.environ.get("PXPROTO_REQUIRE_COMPILED") == "1":
        assert CFdb is not None, "pxproto.switch._fdb did not build"


def test_flood_then_learn(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind)
    a, b = mac(1), mac(2)
    f1 = signaling(b, a, seq=1)
    sw.receive(0, f1, 0.0)
    assert drain(sw, 1) == [f1] and drain(sw, 2) == [f1] and drain(sw, 0) == []
    f2 = signaling(a, b, seq=2)
    sw.receive(1, f2, 0.1)
    assert drain(sw, 0) == [f2] and drain(sw, 2) == []
    f3 = signaling(b, a, seq=3)
    sw.receive(0, f3, 0.2)
    assert drain(sw, 1) == [f3] and drain(sw, 2) == []
    st_ = sw.stats()
    assert st_["switch"]["flooded"] == 1 and st_["switch"]["unknown_unicast"] == 1
    assert st_["ports"]["p0"]["rx_class"]["signaling"] == 2
    assert st_["ports"]["p1"]["tx"] == 2


def test_broadcast_heartbeat_floods(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, 4)
    hb = heartbeat(mac(9), dime=3)
    sw.receive(2, hb, 0.0)
    assert [len(drain(sw, p)) for p in range(4)] == [1, 1, 0, 1]


def test_dime_scope_goes_to_learned_mac_dime(fdb_kind: str) -> None:
    """Two DIMEs behind one MAC on different ports (e.g. a server mid-migration): the (MAC, DIME) wins."""
    sw = make_switch(fdb_kind, 3)
    srv, orch = mac(1), mac(7)
    sw.receive(1, heartbeat(srv, dime=5), 0.0)
    sw.receive(2, heartbeat(srv, dime=6), 0.0)  # MAC moves to port 2; DIME 5 stays learned on 1
    for p in range(3):
        drain(sw, p)
    f5 = data(srv, orch, dst_dime=5)
    f6 = data(srv, orch, dst_dime=6)
    f9 = data(srv, orch, dst_dime=9)
    for f in (f5, f6, f9):
        sw.receive(0, f, 0.1)
    assert drain(sw, 1) == [f5]
    assert drain(sw, 2) == [f6, f9]  # DIME 9 unknown: where the MAC is
    sys_frame = signaling(srv, orch)
    sw.receive(0, sys_frame, 0.2)
    assert drain(sw, 2) == [sys_frame]  # system scope: to the server's MAC


def test_aging(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, 3, aging=10.0)
    a, b = mac(1), mac(2)
    sw.receive(1, signaling(a, b), 0.0)
    drain(sw, 0), drain(sw, 2)
    sw.receive(0, signaling(b, a), 5.0)
    assert len(drain(sw, 1)) == 1 and not drain(sw, 2)
    sw.receive(0, signaling(b, a), 20.0)  # b aged out: flood again
    assert len(drain(sw, 1)) == 1 and len(drain(sw, 2)) == 1
    t = sw.next_timer()
    assert t is not None
    sw.handle_timer(t + 100)
    assert len(sw.fdb) == 0


def test_random_source_macs_are_capped(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, 2, fdb_capacity=100, queue_data=10, queue_control=10)
    rnd = random.Random(1)
    for i in range(5000):
        src = bytes([rnd.randrange(256) & 0xFE]) + rnd.randbytes(5)
        sw.receive(0, heartbeat(src, dime=1 + i % 50) if i % 2 else signaling(mac(1), src), float(i) * 1e-3)
    assert len(sw.fdb) <= 100
    assert sw.fdb.refused > 0
    assert sw.pending(1) <= 20


def test_fdb_learn_codes(fdb_kind: str) -> None:
    fdb = make_fdb(fdb_kind, capacity=2, aging=5.0)
    k1, k2, k3 = fdb_key(mac(1)), fdb_key(mac(2), 7), fdb_key(mac(3))
    assert fdb.learn(k1, 0, 0.0) == LEARN_NEW
    assert fdb.learn(k1, 1, 0.0) == LEARN_MOVED
    assert fdb.learn(k2, 1, 0.0) == LEARN_NEW
    assert fdb.learn(k3, 1, 1.0) == LEARN_FULL
    assert fdb.learn(k3, 1, 6.0) == LEARN_NEW  # full, but aged entries make room
    assert fdb.lookup(k3, 6.0) == 1 and fdb.lookup(k1, 6.0) == -1
    assert fdb.flush_port(1) == 1 and len(fdb) == 0


@settings(max_examples=300)
@given(keys=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 5), st.floats(0, 50)), max_size=60))
def test_fdb_twins_agree(keys: list[tuple[int, int, float]]) -> None:
    if CFdb is None:
        pytest.skip("compiled fdb not built")
    a, b = PyFdb(16, 10.0), CFdb(16, 10.0)
    now = 0.0
    for key, port, dt in keys:
        now += dt
        assert a.learn(key, port, now) == b.learn(key, port, now)
        assert a.lookup(key ^ 1, now) == b.lookup(key ^ 1, now)
        assert len(a) == len(b)
    assert sorted(a.entries(now)) == sorted(b.entries(now))


def test_strict_priority_no_control_lost_under_saturation(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, 3, queue_data=64, queue_control=256)
    srv, orch = mac(1), mac(2)
    sw.receive(1, heartbeat(srv, dime=1), 0.0)
    drain(sw, 0), drain(sw, 2)
    controls = []
    flood = data(srv, orch)
    for i in range(6000):
        sw.receive(0, flood, 0.001)
        if i % 30 == 0:
            c = signaling(srv, orch, dst_dime=1, seq=i)
            controls.append(c)
            sw.receive(0, c, 0.001)
        if i % 15 == 0:  # the wire takes only a few frames per turn: data saturates
            out = sw.peek(1, 4)
            sw.consume(1, len(out))
            for f in out:
                if f in controls:
                    controls.remove(f)
    rest = drain(sw, 1)
    for f in rest:
        if f in controls:
            controls.remove(f)
    assert controls == []
    st_ = sw.stats()["ports"]["p1"]
    assert st_["tx_queue_drop"] > 3000 and st_["tx_queue_drop_control"] == 0
    assert st_["tx_class"]["signaling"] == 200


def test_control_goes_first(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, 2)
    d = [data(mac(1), mac(2), seq=i) for i in range(5)]
    for f in d:
        sw.receive(0, f, 0.0)
    hb = heartbeat(mac(2))
    sw.receive(0, hb, 0.0)
    assert sw.peek(1, 2) == [hb, d[0]]


@pytest.mark.parametrize("policy", ["drop", "pass"])
def test_malformed_counted_by_field(fdb_kind: str, policy: str) -> None:
    sw = make_switch(fdb_kind, 2, malformed=policy)
    good = bytearray(signaling(mac(1), mac(2)))
    bad_version = bytes(good[:14]) + b"\x07" + bytes(good[15:])
    bad_length = bytes(good) + b"\x01\x02"
    for f in (bad_version, bad_length, b"\x00" * 5, bytes(good[:20])):
        sw.receive(0, f, 0.0)
    st_ = sw.stats()
    assert st_["malformed"] == {"eth": 1, "header": 1, "len": 1, "version": 1}
    assert st_["ports"]["p0"]["rx_malformed"] == 4
    assert len(drain(sw, 1)) == (0 if policy == "drop" else 3)  # 5 bytes is never forwardable


def test_full_validation_uses_reference_decoder(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, 2, validation="full")
    f = bytearray(signaling(mac(1), mac(2)))
    f[34 + 4] = 0xEE  # an unknown command: only a full decode sees it
    sw.receive(0, bytes(f), 0.0)
    assert sw.stats()["malformed"] == {"cmd": 1}
    sw2 = make_switch(fdb_kind, 2, validation="header")
    sw2.receive(0, bytes(f), 0.0)
    assert sw2.stats()["malformed"] == {} and len(drain(sw2, 1)) == 1


@pytest.mark.parametrize("policy", ["drop", "pass"])
def test_non_parallax(fdb_kind: str, policy: str) -> None:
    sw = make_switch(fdb_kind, 2, non_parallax=policy)
    arp = b"\xff" * 6 + mac(3) + b"\x08\x06" + b"\x00" * 28
    sw.receive(0, arp, 0.0)
    assert len(drain(sw, 1)) == (1 if policy == "pass" else 0)
    assert sw.stats()["ports"]["p0"]["rx_class"]["other"] == 1


def test_port_down_flushes_queue_and_table(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, 3)
    sw.receive(1, heartbeat(mac(1)), 0.0)
    sw.receive(0, data(mac(1), mac(2)), 0.0)
    assert sw.pending(1) == 1
    sw.set_up(1, False)
    assert sw.pending(1) == 0 and len(sw.fdb) == 2  # only mac(2) (MAC and MAC, DIME) on port 0 stay
    sw.receive(0, heartbeat(mac(2)), 0.0)
    assert sw.pending(1) == 0 and sw.pending(2) == 2
    assert sw.fdb_table(0.0)[0]["port"] == "p0"


@settings(max_examples=150)
@given(raw=st.one_of(hostile_bytes(), frames().map(encode).flatmap(mutations)), port=st.integers(0, 2))
def test_hostile_input_never_raises(raw: bytes, port: int) -> None:
    for kind in FDBS:
        for v in ("none", "header", "full"):
            sw = make_switch(kind, 3, validation=v, malformed="pass", queue_data=4, queue_control=4)
            sw.receive(port, raw, 1.0)
            sw.stats()


@settings(max_examples=100)
@given(f=frames())
def test_every_valid_frame_is_forwarded(f) -> None:  # type: ignore[no-untyped-def]
    for v in ("none", "header", "full"):
        sw = make_switch("py", 2, validation=v)
        raw = encode(f)
        sw.receive(0, raw, 0.0)
        assert sw.stats()["malformed"] == {}
        hairpin = f.src_mac == f.dst_mac and not f.dst_mac[0] & 1  # learned on port 0, filtered there
        assert drain(sw, 1) == ([] if hairpin else [raw])


def test_port_learning_limit_holds_a_random_mac_flood(fdb_kind: str) -> None:
    """Regression (issue 15, 8): 30,000 random source MACs from one port filled all 8,192 table entries; now
    the port learns up to its limit, the others still learn, and the refusals are counted per port."""
    sw = make_switch(fdb_kind, nports=2, max_macs=2048)
    rng = random.Random(15)
    for i in range(30_000):
        src = bytes([rng.randrange(256) & 0xFE]) + rng.randbytes(5)
        sw.receive(0, data(mac(9), src, seq=i), 1.0)
    st = sw.stats()
    assert st["ports"]["p0"]["fdb_entries"] == 2048
    assert st["ports"]["p0"]["learn_refused"] > 25_000
    assert st["switch"]["fdb_entries"] < sw.policy.fdb_capacity
    sw.receive(1, heartbeat(mac(1), dime=2), 2.0)  # the other port still learns
    assert st["ports"]["p1"]["learn_refused"] == 0 and sw.stats()["ports"]["p1"]["fdb_entries"] >= 1
    drain(sw, 1)
    sw.receive(0, data(mac(1), mac(3)), 3.0)  # and is still found
    assert drain(sw, 1)


def test_learning_limit_refuses_a_move_and_frees_on_expiry(fdb_kind: str) -> None:
    fdb = make_fdb(fdb_kind, 64, 10.0)
    fdb.set_limit(0, 2)
    assert fdb.learn(fdb_key(mac(1)), 0, 0.0) == LEARN_NEW
    assert fdb.learn(fdb_key(mac(2)), 0, 0.0) == LEARN_NEW
    assert fdb.learn(fdb_key(mac(3)), 0, 0.0) == LEARN_LIMIT
    assert fdb.learn(fdb_key(mac(4)), 1, 0.0) == LEARN_NEW
    assert fdb.learn(fdb_key(mac(4)), 0, 1.0) == LEARN_LIMIT  # a move onto a full port is refused too
    assert fdb.lookup(fdb_key(mac(4)), 1.0) == 1
    assert fdb.limit_refused(0) == 2 and fdb.port_entries(0) == 2
    assert fdb.expire(20.0) == 3 and fdb.port_entries(0) == 0
    assert fdb.learn(fdb_key(mac(3)), 0, 20.0) == LEARN_NEW


def test_port_mtu_refuses_oversize_frames_both_ways(fdb_kind: str) -> None:
    """Regression (issue 15, 8): a 65,000-byte frame went through; now in and out are checked per port."""
    pol = SwitchPolicy()
    sw = Switch(pol, make_fdb(fdb_kind))
    big_in = sw.add_port("in", mtu=9000)
    small = sw.add_port("small")  # 1500
    jumbo = sw.add_port("jumbo", mtu=9000)
    huge = data(BROADCAST_MAC, mac(1), size=65_000)
    sw.receive(small, huge, 0.0)
    assert sw.stats()["ports"]["small"]["rx_oversize"] == 1 and not drain(sw, jumbo)
    f = data(BROADCAST_MAC, mac(1), size=4000)
    sw.receive(big_in, f, 0.0)
    assert drain(sw, jumbo) == [f] and drain(sw, small) == []
    st = sw.stats()["ports"]
    assert st["small"]["tx_oversize"] == 1 and st["jumbo"]["tx_oversize"] == 0
    ok = data(BROADCAST_MAC, mac(1), size=1500 + 18)
    sw.receive(big_in, ok, 0.0)
    assert drain(sw, small) == [ok]
    with pytest.raises(ValueError, match="mtu"):
        sw.add_port("bad", mtu=70_000)


def test_port_ids_are_reused_below_the_limit_range(fdb_kind: str) -> None:
    sw = make_switch(fdb_kind, nports=3)
    sw.remove_port(1)
    assert sw.add_port("again") == 1
