"""pxorch: the orchestrator: discovery, the DIME pool, deployment, scaling and self-repair of services.

:mod:`pxproto.orch.core` is the state machine (sans I/O); the pool, discovery
and failure detection are :mod:`pxproto.dime.liveness`'s; :mod:`pxproto.orch.service` the service file
format; :mod:`pxproto.orch.events` what it reports.  The drivers (daemon, CLI, demo)
move frames and call the core.  Simulated servers for tests and the bench, running the
node's real DIME machine, are in :mod:`pxproto.sim` (above both the orchestrator and the node).
"""

from pxproto.dime.liveness import Health, Liveness, Pool
from pxproto.orch.core import OrchConfig, Orchestrator, PackageRef
from pxproto.orch.service import ServiceError, ServiceSpec, load_service, parse_service

__all__ = [
    "Health",
    "Liveness",
    "OrchConfig",
    "Orchestrator",
    "PackageRef",
    "Pool",
    "ServiceError",
    "ServiceSpec",
    "load_service",
    "parse_service",
]
