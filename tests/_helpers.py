"""Helpers shared by several test modules (not tests themselves)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from pxproto import package
from pxproto.dime.endpoint import Address
from pxproto.fuzz import Campaign, FrameGenerator, Report, Wire
from pxproto.node.testbed import SIGNER, Cluster
from pxproto.orch.core import OrchConfig, PackageRef
from pxproto.orch.events import ServiceDeployed
from pxproto.orch.service import parse_service
from pxproto.sim import DEMO_SERVICE, SimCluster
from pxproto.wire.codes import Command, Status, TlvType
from pxproto.wire.frame import Tlv

NETNS = [
    pytest.mark.root,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2 for network namespaces"
    ),
]
"""``pytestmark`` of a module whose tests make network namespaces."""


def manifest(service: str, stages: list[str], *, version: str | None = None, params: dict | None = None) -> str:
    """A package's service.toml: ``stages`` in order, stage ``s`` running ``stages:s`` with ``params[s]``."""
    lines = ["[service]", f'name = "{service}"'] + ([f'version = "{version}"'] if version else [])
    for s in stages:
        lines += ["", "[[stage]]", f'name = "{s}"', f'entry = "stages:{s}"']
        if params and s in params:
            lines.append("params = { " + ", ".join(f"{k} = {v!r}" for k, v in params[s].items()) + " }")
    return "\n".join(lines) + "\n"


def packaged_cluster(tmp: Path, manifest: str, stages: str, **cluster: object) -> Cluster:
    """A keyed pxkernel testbed (:class:`Cluster` keywords in ``cluster``) whose store holds one package,
    built from ``manifest`` (service.toml) and ``stages`` (stages.py): ``c.archive``, ``c.digest``.
    The caller closes it."""
    c = Cluster(tmp, key=True, **cluster)  # type: ignore[arg-type]
    pkg = tmp / "pkg"
    pkg.mkdir()
    (pkg / "service.toml").write_text(manifest)
    (pkg / "stages.py").write_text(stages)
    c.archive = package.pack(pkg)  # type: ignore[attr-defined]
    c.digest = package.store_put(c.store, c.archive)  # type: ignore[attr-defined]
    return c


def load_params(
    archive: bytes, service: int, stage: int, name: str, sig: bytes | None = None, digest: bytes | None = None
) -> list[Tlv]:
    """The TLVs of a LOAD of ``archive``'s stage ``stage`` (MICE ``name``), signed with the testbed key
    unless ``sig`` is given."""
    return [
        Tlv(TlvType.SERVICE_ID, service),
        Tlv(TlvType.STAGE, stage),
        Tlv(TlvType.MICE_NAME, name),
        Tlv(TlvType.PACKAGE_DIGEST, digest or package.digest(archive)),
        Tlv(TlvType.PACKAGE_SIZE, len(archive)),
        Tlv(TlvType.PACKAGE_SIG, package.sign(archive, SIGNER) if sig is None else sig),
    ]


def start(c: Cluster, dest: Address, service: int, stage: int, name: str) -> None:
    """LOAD then START stage ``stage`` of the cluster's package on ``dest``; both must answer OK."""
    r = c.ask(dest, Command.LOAD, *load_params(c.archive, service, stage, name))  # type: ignore[attr-defined]
    assert r.status is Status.OK, r
    r = c.ask(dest, Command.START, Tlv(TlvType.SERVICE_ID, service), Tlv(TlvType.STAGE, stage))
    assert r.status is Status.OK, r


# ------------------------------------------------------------------ the orchestrator on simulated servers

SIM_PKG = PackageRef(b"\x11" * 32, 1234, b"\x22" * 32)
"""A package reference for simulated servers (they load any)."""


def deployed(service: str = DEMO_SERVICE, **kw: object) -> tuple[SimCluster, str]:
    """A :class:`SimCluster` (keywords ``kw``) whose orchestrator discovered the pool and deployed ``service``."""
    spec = parse_service(service)
    c = SimCluster(config=OrchConfig.from_regulator(spec.regulator), **kw)  # type: ignore[arg-type]
    c.emit(c.orch.probe(c.net.now))
    c.run(0.2)
    c.emit(c.orch.deploy(spec, SIM_PKG, c.net.now))
    assert c.run_until(lambda: bool(c.orch.log.of(ServiceDeployed)), 5.0), [e.text() for e in c.orch.log]
    return c, spec.name


def finish(c: SimCluster, limit: float = 20.0) -> None:
    """Run until the sink collected every item; it must hold exactly the expected items, none twice."""
    assert c.run_until(lambda: len(c.plane.collected) == c.plane.items, limit), (
        len(c.plane.collected),
        [e.text() for e in list(c.orch.log)[-15:]],
    )
    assert c.plane.collected == c.expected() and c.plane.duplicates == 0


# ------------------------------------------------------------------ hostile campaigns


def survive_campaign(wire: Wire, gen: FrameGenerator, *, count: int, burst: int, probes: int, **kw: Any) -> Report:
    """Fire ``count`` frames of ``gen`` at ``wire`` in bursts of ``burst``, probing about ``probes`` times in all
    (no reference verdicts; other :class:`Campaign` keywords in ``kw``): the target must answer to the end."""
    every = max(1, count // burst // probes)
    report = Campaign(wire, gen, count=count, burst=burst, verdict=None, probe_every=every, **kw).run()
    assert report.alive, report.summary()
    return report
