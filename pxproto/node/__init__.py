"""pxkernel: the node kernel; every core of a Linux server becomes a DIME.

Process model (one ``pxkernel`` = one server = one MAC address)::

    pxkernel (server process, DIME id 0xffff)      owns the wire port; answers discovery probes and
     |                                             system-scope PING/USAGE/FAULT_REPORT; relays frames
     |                                             from the wire to DIMEs by id
     +-- DIME 0 process, pinned to core c0         FCAPS loop: signaling, data channels; on a datagram
     |    |                                        wire it sends its data frames and heartbeats on the
     |    |                                        shared socket itself (no relay hop)
     |    +-- heartbeat sender thread (C, SCHED_FIFO): sends each heartbeat, built a period ahead, on time
     |    +-- MICE child (fork), same core,        runs one service stage; nice -5 (as the loop); memory capped by
     |        own memory cgroup, or RLIMIT_AS       the OS (see pxproto.node.memory: shared maps count too)
     +-- DIME 1 process ...

Small items share data frames: a DIME packs what waits for an output into
messages that fill one fragment (:func:`pxproto.node.mice.pack_items`).

Modules (the FCAPS machine is sans I/O: bytes and ``now`` in, frames and timers out; the
process loop around it is thin):

- :mod:`pxproto.node.machine`  the DIME machine: signaling, auth, counters, thresholds, faults, heartbeats
- :mod:`pxproto.node.fcaps`    the 20 command handlers, one dispatch table
- :mod:`pxproto.node.channels` data channels, item flow and the MICE's queue (part of the machine)
- :mod:`pxproto.node.dime`     one DIME process: the loop that owns sockets, fork, signals and the clock
- :mod:`pxproto.node.mice`     the MICE API (stage functions, Context, lineage) and the MICE child runtime
- :mod:`pxproto.node.flow`     lineage bookkeeping (exactly-once hand-over, completion, replay; watermarks)
- :mod:`pxproto.node.beat`     the real-time heartbeat sender (``pxproto.node._beat``) and its pure twin
- :mod:`pxproto.node.memory`   2 MiB chunk accounting and the OS limit on a MICE
- :mod:`pxproto.node.memcg`    a memory cgroup per MICE (v1 or v2), where one is writable
- :mod:`pxproto.node.server`   the server process: port, relay, discovery, DIME supervision
- :mod:`pxproto.node.cli`      ``pxkernel`` command line

Shared with the orchestrator, outside the node: :mod:`pxproto.package` (service package format,
central and local stores), :mod:`pxproto.dime.keys` (key file, frame signing, access lists),
:mod:`pxproto.link` (ports and wires), counter ids in :mod:`pxproto.wire.codes`.  The
orchestrator's simulated servers (:mod:`pxproto.sim`) run :class:`pxproto.node.machine.DimeMachine`.

Command line::

    pxkernel --port udp:HOST:PORT | --port stream:PATH | --iface IF
             --key FILE [--verify-key FILE] | --insecure
             [--dimes N] [--memory-chunks M] [--store DIR] [--state-dir DIR]
             [--local-store DIR] [--mac MAC] [--heartbeat-ms MS] [--mice-memory auto|cgroup|rlimit]

DIME ids on a server are 0..N-1; the server process itself is 0xffff
(system-scope frames).  Epochs persist in ``--state-dir`` and grow on every
restart of a DIME (process start or RESET).
"""
