"""The typed status snapshot of a running service: each sourcesink's node and the embedded broker.

Taken at request time from the service tree; ``/status`` (:mod:`socketeer.ops.status`) and
``/metrics`` (:mod:`socketeer.ops.metrics`) render the same snapshot, so the two always
agree and neither touches a node's live state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from socketeer import __version__
from socketeer.tunnel.snapshot import NodeSnapshot

__all__ = ["ServiceSnapshot", "SourcesinkState", "take_snapshot"]


@dataclass(frozen=True)
class SourcesinkState:
    """One sourcesink: what its configuration says, and its node."""

    id: str
    #: ``sink``, ``forward``, ``proxy``, ``sink+forward``, ... (``node`` when neither).
    role: str
    #: The sink node a source sends to (None for a sink only).
    peernode: str | None
    #: The channel URL, credentials redacted, and the brokers it lists (None if unknown).
    url: str | None
    brokers: tuple[str | None, ...]
    node: NodeSnapshot


@dataclass(frozen=True)
class ServiceSnapshot:
    """The whole service at ``time`` (the service clock's seconds)."""

    version: str
    time: float
    uptime: float
    #: The configuration file's path.
    config: str | None
    #: Clients of the embedded broker; None when this process runs none.
    broker_connections: int | None
    sourcesinks: tuple[SourcesinkState, ...]
    #: The embedded broker's flow control (None without one): bytes waiting in the queues
    #: of congested subscribers, publishers paused for them, and subscribers disconnected
    #: for staying over their queue bound.
    broker_queued_bytes: int | None = None
    broker_paused_publishers: int | None = None
    broker_slow_disconnects: int | None = None
    #: Connections the embedded broker refused, by cause (see socketeer.broker.admission).
    broker_refused: Mapping[str, int] = field(default_factory=dict)


def _role(ss: Any) -> str:
    """What a sourcesink does, as ``/status`` names it."""
    roles = []
    if ss is not None and ss.spawning_sink:
        roles.append("sink")
    if ss is not None and ss.is_source:
        roles.append("proxy" if ss.proxy is not None else "forward")
    return "+".join(roles) or "node"


def _broker_name(spec: Any) -> str | None:
    """``host:port`` of a broker in a channel specification."""
    return None if spec is None else f"{spec.host}:{spec.port}"


def _child(parent: Any, name: str) -> Any:
    try:
        return parent.getServiceNamed(name)
    except (KeyError, AttributeError):
        return None


def take_snapshot(root: Any, config: Any, clock: Any, started: float) -> ServiceSnapshot:
    """Everything ``/status`` and ``/metrics`` show: ``root`` is the service tree."""
    now = clock.seconds()
    by_id = {ss.id: ss for ss in config.sourcesinks} if config is not None else {}
    broker = _child(root, "broker") or _child(root, "broker-tls")
    factory = getattr(broker, "factory", None)
    # Behind the TLS listener the broker's own factory is wrapped.
    factory = getattr(factory, "wrappedFactory", factory)
    sourcesinks = []
    for sid, node in root.nodes.items():
        ss = by_id.get(sid)
        channel = _child(_child(root, f"sourcesink-{sid}"), "channel")
        spec = getattr(channel, "spec", None)
        sourcesinks.append(
            SourcesinkState(
                id=sid,
                role=_role(ss),
                peernode=getattr(ss, "peernode", None),
                url=spec.redacted() if spec is not None else None,
                brokers=tuple(_broker_name(b) for b in spec.brokers) if spec is not None else (),
                node=node.snapshot(),
            )
        )
    return ServiceSnapshot(
        version=__version__,
        time=now,
        uptime=now - started,
        config=getattr(config, "path", None),
        broker_connections=None if factory is None else len(getattr(factory, "connections", ())),
        broker_refused=dict(getattr(getattr(factory, "admission", None), "refused", {})),
        sourcesinks=tuple(sourcesinks),
        **_broker_flow(factory),
    )


def _broker_flow(factory: Any) -> dict[str, int | None]:
    """The embedded broker's queue figures, or Nones (no broker, or another factory)."""
    counters = getattr(factory, "counters", None)
    if counters is None:
        return {}
    connections = list(factory.connections)
    return {
        "broker_queued_bytes": sum(p.queued_bytes for p in connections),
        "broker_paused_publishers": sum(1 for p in connections if p.paused),
        "broker_slow_disconnects": counters.slow_disconnects,
    }
