"""pxkernel: the node kernel; every core of a Linux server becomes a DIME.

Process model (one ``pxkernel`` = one server = one MAC address)::

    pxkernel (server process, DIME id 0xffff)      owns the wire port; answers discovery probes
     |                                             for the whole server; relays frames by DIME id
     +-- DIME 0 process, pinned to core c0         FCAPS loop: signaling, heartbeats, data channels
     |    +-- MICE child (fork), same core,        runs one service stage; memory capped by the OS
     |        RLIMIT_DATA = baseline + chunks
     +-- DIME 1 process ...

Modules:

- :mod:`kernel.package`  service package format, deterministic archive, central store, signature
- :mod:`kernel.mice`     the MICE API (stage functions, Context, lineage) and the MICE child runtime
- :mod:`kernel.channel`  data channels: fragmentation, reassembly, transport + completion acks, credit
- :mod:`kernel.security` key file, replay window, frame signing, access lists
- :mod:`kernel.memory`   2 MiB chunk accounting and the OS limit on a MICE
- :mod:`kernel.dime`     one DIME process (the FCAPS loop)
- :mod:`kernel.server`   the server process: port, relay, discovery, DIME supervision
- :mod:`kernel.cli`      ``pxkernel`` command line

Command line::

    pxkernel --port udp:HOST:PORT | --port stream:PATH | --iface IF
             [--dimes N] [--memory-chunks M] [--key FILE] [--store DIR] [--state-dir DIR]
             [--local-store DIR] [--mac MAC] [--heartbeat-ms MS]

DIME ids on a server are 0..N-1; the server process itself is 0xffff
(system-scope frames).  Epochs persist in ``--state-dir`` and grow on every
restart of a DIME (process start or RESET).
"""
