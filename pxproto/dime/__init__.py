"""The DIME protocol state machines, sans I/O.

Each machine takes frames and ``now`` and returns an :class:`Output` (frames to
send, events, next timer).  The node kernel and the orchestrator are drivers
over them; :mod:`pxproto.dime.simlink` drives them over a simulated lossy wire.

- :mod:`~pxproto.dime.signaling`: Requester, Responder (reliable FCAPS signaling)
- :mod:`~pxproto.dime.channel`: ChannelSender, ChannelReceiver (the data channel)
- :mod:`~pxproto.dime.discovery`: DiscoveryResponder (a server's announces)
- :mod:`~pxproto.dime.heartbeat`: HeartbeatEmitter (a DIME's heartbeats), ping_handler
- :mod:`~pxproto.dime.liveness`: Pool (the orchestrator's pool and failure detector, one machine);
  its events in :mod:`~pxproto.dime.liveness_events`, its policy in :mod:`~pxproto.dime.liveness_policy`,
  its records (DimeView, ServerView) in :mod:`~pxproto.dime.liveness_views`
- :mod:`~pxproto.dime.replay`: KeyStore, Signer, Verifier, ReplayWindow
"""

from pxproto.dime.endpoint import BROADCAST_ADDRESS, Address, Event, Output

__all__ = ["BROADCAST_ADDRESS", "Address", "Event", "Output"]
