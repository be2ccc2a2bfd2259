"""The bpf(2) system call from Python: maps, program loads, links, and a small eBPF assembler with labels.

Enough for :mod:`pxproto.switch.kpath`, which builds its programs here at run
time (the EtherTypes and port limits are immediates), so the switch needs no
compiler and no libbpf.  Every failure is an :class:`OSError` naming the
command; a program the verifier refuses carries the verifier's log.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine())
ATTR_SIZE = 128

MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = 0, 1, 2, 3, 4, 5
LINK_CREATE = 28
PROG_TEST_RUN = 10
MAP_HASH, MAP_ARRAY, MAP_PERCPU_ARRAY = 1, 2, 6
PROG_SOCKET_FILTER, PROG_SCHED_CLS = 1, 3
ATTACH_TCX_INGRESS = 46
SO_ATTACH_BPF = 50
SO_DETACH_FILTER = 27

# helpers (enum bpf_func_id)
MAP_LOOKUP, SKB_LOAD_BYTES, REDIRECT, REDIRECT_PEER = 1, 26, 23, 155

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, FP = range(11)

_libc = ctypes.CDLL(None, use_errno=True)


def _call(cmd: int, attr: bytes, what: str) -> int:
    if SYS_BPF is None:
        raise OSError(errno.ENOSYS, f"bpf {what}: no bpf system call number for {platform.machine()}")
    buf = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    r = int(_libc.syscall(SYS_BPF, cmd, buf, ATTR_SIZE))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf {what}: {os.strerror(e)}")
    return r


def map_create(kind: int, key_size: int, value_size: int, entries: int, name: str) -> int:
    """A new map's descriptor."""
    attr = struct.pack("IIIIIII16s", kind, key_size, value_size, entries, 0, 0, 0, name.encode()[:15])
    return _call(MAP_CREATE, attr, f"map {name}")


def _elem(cmd: int, fd: int, key: bytes, value: ctypes.Array[ctypes.c_char] | None, flags: int, what: str) -> int:
    k = ctypes.create_string_buffer(key, len(key))
    vaddr = ctypes.addressof(value) if value is not None else 0
    return _call(cmd, struct.pack("IIQQQ", fd, 0, ctypes.addressof(k), vaddr, flags), what)


def map_update(fd: int, key: bytes, value: bytes) -> None:
    v = ctypes.create_string_buffer(value, len(value))
    _elem(MAP_UPDATE_ELEM, fd, key, v, 0, "map update")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value at ``key`` (for a per-CPU map, every CPU's in turn, each rounded up to 8 bytes), or None."""
    v = ctypes.create_string_buffer(value_size)
    try:
        _elem(MAP_LOOKUP_ELEM, fd, key, v, 0, "map lookup")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return v.raw


def map_delete(fd: int, key: bytes) -> bool:
    try:
        _elem(MAP_DELETE_ELEM, fd, key, None, 0, "map delete")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return False
        raise
    return True


def prog_load(kind: int, insns: bytes, name: str, attach_type: int = 0) -> int:
    """Load a program; when the verifier refuses it, the OSError's message ends with the verifier's last lines."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    attr = struct.pack(
        "IIQQIIQII16sII",
        kind,
        len(insns) // 8,
        ctypes.addressof(code),
        ctypes.addressof(lic),
        1,
        len(log),
        ctypes.addressof(log),
        0,
        0,
        name.encode()[:15],
        0,
        attach_type,
    )
    try:
        return _call(PROG_LOAD, attr, f"program {name}")
    except OSError as exc:
        tail = " | ".join(log.value.decode("ascii", "replace").strip().splitlines()[-4:])
        raise OSError(exc.errno, f"{exc.strerror}{': ' + tail if tail else ''}") from None


def link_create(prog_fd: int, ifindex: int, attach_type: int) -> int:
    """Attach ``prog_fd`` to ``ifindex`` by a link: closing the link's descriptor (or exiting) detaches it."""
    return _call(LINK_CREATE, struct.pack("IIII", prog_fd, ifindex, attach_type, 0), "link")


def prog_test_run(prog_fd: int, data: bytes, ctx: bytes = b"") -> tuple[int, bytes]:
    """Run a loaded program once on ``data`` (BPF_PROG_TEST_RUN, with ``ctx`` as its context if given): its
    return value and the packet as it left.  For tests."""
    din = ctypes.create_string_buffer(data, len(data))
    dout = ctypes.create_string_buffer(len(data) + 256)
    cin = ctypes.create_string_buffer(ctx, max(1, len(ctx)))
    attr = struct.pack(
        "IIIIQQIIIIQQ",
        prog_fd,
        0,
        len(data),
        len(dout),
        ctypes.addressof(din),
        ctypes.addressof(dout),
        1,
        0,
        len(ctx),
        0,
        ctypes.addressof(cin) if ctx else 0,
        0,
    )
    buf = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    if SYS_BPF is None or _libc.syscall(SYS_BPF, PROG_TEST_RUN, buf, ATTR_SIZE) < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf test run: {os.strerror(e)}")
    retval, _, size_out = struct.unpack_from("iII", buf.raw, 4)
    return retval, dout.raw[: min(size_out, len(dout))]


def possible_cpus() -> int:
    """CPUs a per-CPU map holds a value for (/sys/devices/system/cpu/possible)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n = max(n, int(hi or lo) + 1)
    return n


# ---------------------------------------------------------------- assembler

SIZE_BITS = {4: 0x00, 2: 0x08, 1: 0x10, 8: 0x18}
"""Memory access size in bytes -> its opcode bits."""
JUMP_BITS = {"==": 0x10, "!=": 0x50, ">": 0x20, ">=": 0x30, "<": 0xA0, "<=": 0xB0, "&": 0x40}
"""A jump's comparison (unsigned) -> its opcode bits."""

Insn = tuple[int, int, int, int | str, int]
"""(opcode, dst, src, offset or a label's name, immediate)."""


class Asm:
    """eBPF instructions with labels: jumps name their target and :meth:`code` resolves the offsets."""

    def __init__(self) -> None:
        self.ins: list[Insn | tuple[str]] = []

    def label(self, name: str) -> None:
        self.ins.append((name,))

    def raw(self, op: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        self.ins.append((op, dst, src, off, imm))

    # ALU64 and moves
    def mov(self, dst: int, src: int) -> None:
        self.raw(0xBF, dst, src)

    def movi(self, dst: int, imm: int) -> None:
        self.raw(0xB7, dst, 0, 0, imm)

    def addi(self, dst: int, imm: int) -> None:
        self.raw(0x07, dst, 0, 0, imm)

    def add(self, dst: int, src: int) -> None:
        self.raw(0x0F, dst, src)

    def lshi(self, dst: int, imm: int) -> None:
        self.raw(0x67, dst, 0, 0, imm)

    def ori(self, dst: int, imm: int) -> None:
        self.raw(0x47, dst, 0, 0, imm)

    def orr(self, dst: int, src: int) -> None:
        self.raw(0x4F, dst, src)

    def andi(self, dst: int, imm: int) -> None:
        self.raw(0x57, dst, 0, 0, imm)

    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        self.raw(0x61 | SIZE_BITS[size], dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> None:
        self.raw(0x63 | SIZE_BITS[size], dst, src, off)

    def sti(self, size: int, dst: int, off: int, imm: int) -> None:
        self.raw(0x62 | SIZE_BITS[size], dst, 0, off, imm)

    def ld_map(self, dst: int, map_fd: int) -> None:
        self.raw(0x18, dst, 1, 0, map_fd)  # BPF_LD | BPF_IMM | BPF_DW, src BPF_PSEUDO_MAP_FD
        self.raw(0x00, 0, 0, 0, 0)

    # jumps: op is one of "==", "!=", ">", ">=", "<", "<=", "&" (unsigned)

    def jmp(self, label: str) -> None:
        self.raw(0x05, 0, 0, label)

    def jimm(self, op: str, dst: int, imm: int, label: str) -> None:
        self.raw(0x05 | JUMP_BITS[op], dst, 0, label, imm)

    def jreg(self, op: str, dst: int, src: int, label: str) -> None:
        self.raw(0x0D | JUMP_BITS[op], dst, src, label)

    def call(self, helper: int) -> None:
        self.raw(0x85, 0, 0, 0, helper)

    def exit(self) -> None:
        self.raw(0x95)

    def ret(self, imm: int) -> None:
        self.movi(R0, imm)
        self.exit()

    def code(self) -> bytes:
        where: dict[str, int] = {}
        flat: list[Insn] = []
        for i in self.ins:
            if len(i) == 1:
                name = i[0]
                if name in where:
                    raise ValueError(f"label {name!r} twice")
                where[name] = len(flat)
            else:
                flat.append(i)  # type: ignore[arg-type]
        out = []
        for pc, (op, dst, src, off, imm) in enumerate(flat):
            if isinstance(off, str):
                if off not in where:
                    raise ValueError(f"no label {off!r}")
                off = where[off] - pc - 1
            out.append(struct.pack("<BBhi", op, (src << 4) | dst, off, imm))
        return b"".join(out)


def swap16(v: int) -> int:
    """A big-endian 16-bit field as a little-endian load of it reads."""
    return ((v & 0xFF) << 8) | (v >> 8)
