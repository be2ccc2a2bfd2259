"""pxfuzz: fire generated and mutated Parallax frames at a live target, and see whether it survives.

The library behind the ``pxfuzz`` command, for use from tests::

    from pxproto.fuzz import Campaign, FrameGenerator, PingProbe, UdpWire

Generation (:mod:`pxproto.fuzz.generate`, over the drawing and the mutation table of
:mod:`pxproto.testing`) is seeded and fast; wires
(:mod:`pxproto.link`) reach a UDP or stream virtual wire, an interface
or an in-process handler; probes (:mod:`pxproto.fuzz.probe`) check liveness
between bursts; :mod:`pxproto.fuzz.campaign` runs, records to pcapng and replays.
"""

from pxproto.fuzz.campaign import Campaign, Report, SavedFrame, load_cases, process_rss_kib, replay
from pxproto.fuzz.generate import HOSTILE_KINDS, KINDS, Case, FrameGenerator, random_frame, valid_pool
from pxproto.fuzz.probe import ForwardProbe, HeartbeatProbe, PingProbe, Probe
from pxproto.fuzz.verdict import OK, fast_verdict, reference_verdict, tally
from pxproto.link import AfPacketWire, FunctionWire, StreamWire, UdpWire, Wire, open_wire

__all__ = [
    "HOSTILE_KINDS",
    "KINDS",
    "OK",
    "AfPacketWire",
    "Campaign",
    "Case",
    "ForwardProbe",
    "FrameGenerator",
    "FunctionWire",
    "HeartbeatProbe",
    "PingProbe",
    "Probe",
    "Report",
    "SavedFrame",
    "StreamWire",
    "UdpWire",
    "Wire",
    "fast_verdict",
    "load_cases",
    "open_wire",
    "process_rss_kib",
    "random_frame",
    "reference_verdict",
    "replay",
    "tally",
    "valid_pool",
]
