"""``pxorch demo --bare-metal``: the demo with one more server, a QEMU guest of the bare-metal kernel.

The guest (``kernel/build/dime.elf``, built with ``make -C kernel``; TCG, or KVM where it works)
is a pxswitch port of its own, ``-smp 2``: two more DIMEs in the pool.  They run any of the demo's
stages (the image has each in C: source, parse, transform, sink) when the orchestrator places them
there.  The guest's store, where a sink there commits, is its second serial port: a file the demo
reads as the store of one more server (``WORKDIR/serverN/store/objects/wordcount/results``), so
its records count in the answer beside the Linux servers' (``mono=`` times them on the host's clock).
The Linux kernels send 1500-byte frames (``--mtu 1500``), the guest NIC's size.  The kill, when
the bare-metal server holds a stage, is QEMU's (the whole server); the repair moves its stages onto
Linux DIMEs.

The image's package is the demo's with rate 400 and one pass (:mod:`pxproto.baremetal.builtin`):
LOAD verifies the deployed package against it, so ``--rate`` and ``--passes`` keep their defaults.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from pxproto.baremetal import builtin
from pxproto.link import Port, UdpPort, free_udp_ports
from pxproto.orch.core import Orchestrator
from pxproto.orch.demo import Demo, DemoError, Result
from pxproto.orch.demo import main as demo_main
from pxproto.orch.events import RepairDone, key_text
from pxproto.orch.sinkread import SinkReader

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "kernel" / "build" / "dime.elf"
VM_MAC = bytes.fromhex("525400bb0001")
VCPUS = 2


def build() -> Path:
    """``make -C kernel``: the image (a clear error when gcc or make are missing)."""
    if shutil.which("make") is None or shutil.which("gcc") is None:
        raise DemoError("--bare-metal builds kernel/ with make and gcc: install them (apt install build-essential)")
    r = subprocess.run(["make", "-C", str(ROOT / "kernel"), "-s"], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise DemoError(f"make -C kernel failed:\n{r.stdout}{r.stderr}")
    return IMAGE


class BareMetalDemo(Demo):
    """The demo with a bare-metal server beside the pxkernel ones (rootless, UDP ports of the switch)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("rate", builtin.RATE)  # the package the image carries, unless asked otherwise (refused)
        kw.setdefault("passes", builtin.PASSES)
        super().__init__(*args, **kw)
        self.kernel_args = ["--mtu", "1500"]
        self.extra_dimes = VCPUS
        self.qemu: subprocess.Popen[bytes] | None = None
        self.on_vm: set[str] = set()
        """Stages seen running on the bare-metal DIMEs."""
        self.killed_stage = ""
        """The stage the bare-metal DIME ran when its VM was killed."""
        self.vm_store = self.wd / f"server{self.servers}" / "store" / "objects" / "wordcount" / "results"
        """The guest's store object (its COM2): the records of a sink on the guest."""
        self.sink = SinkReader(self.wd, self.servers + 1, "wordcount/results")

    def _start(self, capture: Path, store: Path, keyfile: Path) -> Port:
        if self.netns is not None:
            raise DemoError("--bare-metal runs rootless (UDP ports of the switch), not with --netns")
        if self.rate != builtin.RATE or self.passes != builtin.PASSES or self.work_us is not None:
            raise DemoError(
                f"--bare-metal: the image carries the package with rate {builtin.RATE}, passes {builtin.PASSES}"
                " and the default work; leave --rate, --passes and --work-us"
            )
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise DemoError("--bare-metal needs qemu-system-x86_64 (apt install qemu-system-x86)")
        image = build()
        self.vm_store.parent.mkdir(parents=True, exist_ok=True)
        ports = free_udp_ports(self.servers + 3)
        vm_side, qemu_side = ports[-2], ports[-1]
        switch = [f"udp:local=127.0.0.1:{p}" for p in ports[: self.servers + 1]]
        switch.append(f"udp:local=127.0.0.1:{vm_side},remote=127.0.0.1:{qemu_side},mtu=1500")
        self.start_switch(switch, capture)
        time.sleep(0.3)
        for i in range(self.servers):
            self.start_kernel(i, ports[i], store, keyfile)
        hb = self.regulator.get("heartbeat_ms", 50)
        vk = f"vk={self.signer.key_id}:{self.signer.public_bytes().hex()}"  # LOAD checks PACKAGE_SIG under it
        netdev = (f"dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={qemu_side},"
                  f"remote.type=inet,remote.host=127.0.0.1,remote.port={vm_side}")  # fmt: skip
        self.qemu = subprocess.Popen(
            [qemu, "-m", "256", "-smp", str(VCPUS), "-display", "none", "-monitor", "none", "-no-reboot",
             "-serial", f"file:{self.wd / 'baremetal.log'}", "-serial", f"file:{self.vm_store}",
             "-kernel", str(image),
             "-append", f"key=1:{self.key.hex()} {vk} hb={hb} chunks=8 mono={int(time.monotonic() * 1000)}",
             "-netdev", netdev, "-device", f"virtio-net-pci,netdev=n0,disable-modern=on,mac={VM_MAC.hex(':')}"],
            stdout=subprocess.DEVNULL, stderr=open(self.wd / "qemu.err", "wb"),
        )  # fmt: skip
        self.procs.append(self.qemu)
        self.say(f"pxswitch on {len(switch)} UDP ports; {self.servers} pxkernel servers of {self.dimes} DIMEs each"
                 f" and a bare-metal server (QEMU, {VCPUS} vCPUs, MAC {VM_MAC.hex(':')})")  # fmt: skip
        return UdpPort("127.0.0.1", ports[self.servers])

    service = "wordcount"

    def _vm_stages(self, core: Orchestrator, service: str) -> list[tuple[str, tuple[bytes, int]]]:
        return [(st, k) for st, keys in core.replicas(service).items() for k in keys if k[0] == VM_MAC]

    def _kill(self, core: Orchestrator, service: str, res: Result, state: dict[str, Any]) -> None:
        on_vm = self._vm_stages(core, service)
        self.on_vm.update(st for st, _ in on_vm)
        if not on_vm or self.qemu is None:
            res.notes.append("no stage on the bare-metal server at the kill: a pxkernel DIME is killed instead")
            super()._kill(core, service, res, state)
            return
        stage, victim = on_vm[0]
        self.killed_stage = stage
        self.qemu.kill()
        self.kill_t = time.monotonic()
        state["killed"] = (victim, self.kill_t)
        self.say(f"KILL: the bare-metal server (QEMU pid {self.qemu.pid}), its DIME {key_text(victim)} ran {stage}")

    def _settled(self, core: Orchestrator, state: dict[str, Any]) -> bool:
        self.on_vm.update(st for st, _ in self._vm_stages(core, self.service))
        killed = state["killed"]
        if killed is not None and killed[0][0] == VM_MAC:  # a dead VM is not reborn: the repair is enough
            return bool(self._repairs(core, killed[1])) and not self._vm_stages(core, self.service)
        return super()._settled(core, state)

    def _repairs(self, core: Orchestrator, kill_t: float | None) -> list[RepairDone]:
        """Repairs of the killed stage since the kill (the first replacement may itself be replaced, when a busy
        host makes its DIME look dead: the chain counts)."""
        if kill_t is None:
            return []
        return [e for e in core.log.of(RepairDone) if e.stage == self.killed_stage and e.t >= kill_t]

    def _measure(self, res: Result, core: Orchestrator, state: dict[str, Any], expected: dict[int, bytes],
                 answer: dict[str, Any]) -> None:  # fmt: skip
        super()._measure(res, core, state, expected, answer)
        killed = state["killed"]
        if killed is not None and killed[0][0] == VM_MAC and res.repair is None:
            done = self._repairs(core, killed[1])
            if done:
                res.repair = done[0].t - killed[1]
                self.say(f"repair: {res.repair * 1e3:.0f} ms from the VM's kill to its {self.killed_stage} running"
                         f" on {key_text(done[0].replacement)}")  # fmt: skip
        if self.on_vm:
            self.say(f"bare metal: {', '.join(sorted(self.on_vm))} ran on the QEMU guest's DIMEs")
        else:
            res.ok = False
            self.say("bare metal: no stage ran on the QEMU guest (not a bare-metal run)")


def main(**kw: Any) -> int:
    return demo_main(demo_class=BareMetalDemo, **kw)


__all__ = ["VM_MAC", "BareMetalDemo", "build", "main"]
