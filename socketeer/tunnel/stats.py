"""A node's counters: plain totals and counts by label, and their immutable snapshot.

The node and the front-ends count into :class:`NodeStats` on the data path (attribute
increments, no string keys to build); status and metrics read a :class:`Counts` snapshot,
whose properties group the counters the way ``/status`` and ``/metrics`` show them, so no
reader has to take a key apart again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from socketeer.tunnel.reasons import OpenFailure

__all__ = ["DROPPED", "EVENTS", "SEAL_PREFIX", "TOTALS", "Counts", "NodeStats"]


@dataclass(eq=False)
class NodeStats:
    """What one node counted since it started (mutable; read it through :meth:`snapshot`)."""

    #: Streams this node started (a source's OPENs).
    streams_opened: int = 0
    #: Streams that ended after opening.
    streams_closed: int = 0
    #: Streams ended because their peer went silent for longer than the grace period.
    streams_expired: int = 0
    #: Payload bytes of ended streams, read from local sockets and sent to peers.
    bytes_out: int = 0
    #: Payload bytes of ended streams, received from peers and written to local sockets.
    bytes_in: int = 0
    messages_out: int = 0
    messages_in: int = 0
    #: Successful broker connections (connected and subscribed).
    channel_connects: int = 0
    #: Messages dropped: unreadable, for another cluster or node, for a stream we do not
    #: know, or sent while no channel was up.
    malformed: int = 0
    foreign: int = 0
    unknown_stream: int = 0
    dropped_unconnected: int = 0
    #: OPENs refused because this node is not a sink.
    open_refused: int = 0
    #: PONGs received (answers to our pings).
    pongs: int = 0
    #: OPENs and RESOLVEs that waited for the channel to the broker; those that waited in
    #: vain (``channel_wait`` passed), and those refused because too many waited already.
    channel_waits: int = 0
    channel_wait_expired: int = 0
    channel_wait_refused: int = 0
    #: OPENs and RESOLVEs sent again because no answer had come, and streams that
    #: resynchronised because their outbox went unacknowledged too long.
    retransmits: int = 0
    #: Streams reset because the peer sent past the window it was granted.
    window_violations: int = 0
    #: Streams refused because maxstreams or maxstreamsperpeer was reached; RESOLVEs
    #: refused because too many lookups ran.
    stream_limit: int = 0
    lookup_limit: int = 0
    #: Streams reset because their session ended (the peer restarted or forgot us).
    session_resets: int = 0
    #: Messages of a session we do not have (answered with SESSION_RESET).
    stale_session: int = 0
    #: OPENs of a stream that was opened here before (refused, never run twice).
    repeated_opens: int = 0
    #: HELLOs not answered with a handshake because too many were started that second.
    handshake_limit: int = 0
    #: Windows that grew (auto-tuning: the window limited a stream whose reader kept up).
    windows_grown: int = 0
    #: Connections and streams a policy refused, by rule.
    denied: Counter[str] = field(default_factory=Counter)
    #: Streams that could not open, by reason.
    open_failed: Counter[OpenFailure] = field(default_factory=Counter)
    #: Sealed messages refused (``unsealed``, ``auth``, ``replay``, ``stale``).
    seal_refused: Counter[str] = field(default_factory=Counter)

    def snapshot(self) -> Counts:
        """The counters as they are now, detached from further counting."""
        return Counts(
            **{name: getattr(self, name) for name in TOTALS},
            denied=MappingProxyType(dict(self.denied)),
            open_failed=MappingProxyType(dict(self.open_failed)),
            seal_refused=MappingProxyType(dict(self.seal_refused)),
        )


_LABELLED = ("denied", "open_failed", "seal_refused")
#: The plain totals' names, in declaration order.
TOTALS = tuple(f.name for f in fields(NodeStats) if f.name not in _LABELLED)
#: Totals that count a dropped message (``/status`` ``dropped``, the ``reason`` label of
#: ``socketeer_messages_dropped_total``), with their label.
DROPPED = {
    "malformed": "malformed",
    "foreign": "foreign",
    "unknown_stream": "unknown-stream",
    "dropped_unconnected": "dropped-unconnected",
    "stale_session": "stale-session",
}
#: Totals with no metric of their own (the ``event`` label of ``socketeer_events_total``).
EVENTS = {
    "open_refused": "open-refused",
    "pongs": "pongs",
    "channel_waits": "channel-waits",
    "channel_wait_expired": "channel-wait-expired",
    "channel_wait_refused": "channel-wait-refused",
    "retransmits": "retransmits",
    "window_violations": "window-violations",
    "stream_limit": "stream-limit",
    "lookup_limit": "lookup-limit",
    "session_resets": "session-resets",
    "repeated_opens": "repeated-opens",
    "handshake_limit": "handshake-limit",
    "windows_grown": "windows-grown",
}
#: The label of a sealed message refused for ``reason``, among the dropped ones.
SEAL_PREFIX = "seal-"


@dataclass(frozen=True)
class Counts:
    """An immutable copy of a node's counters, grouped the way status and metrics show them."""

    streams_opened: int = 0
    streams_closed: int = 0
    streams_expired: int = 0
    bytes_out: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    messages_in: int = 0
    channel_connects: int = 0
    malformed: int = 0
    foreign: int = 0
    unknown_stream: int = 0
    dropped_unconnected: int = 0
    open_refused: int = 0
    pongs: int = 0
    channel_waits: int = 0
    channel_wait_expired: int = 0
    channel_wait_refused: int = 0
    retransmits: int = 0
    window_violations: int = 0
    stream_limit: int = 0
    lookup_limit: int = 0
    session_resets: int = 0
    stale_session: int = 0
    repeated_opens: int = 0
    handshake_limit: int = 0
    windows_grown: int = 0
    denied: Mapping[str, int] = field(default_factory=dict)
    open_failed: Mapping[OpenFailure, int] = field(default_factory=dict)
    seal_refused: Mapping[str, int] = field(default_factory=dict)

    @property
    def dropped(self) -> dict[str, int]:
        """Messages dropped, by reason label; only reasons that happened."""
        out = {label: getattr(self, name) for name, label in DROPPED.items()}
        out.update((SEAL_PREFIX + k, v) for k, v in self.seal_refused.items())
        return {k: v for k, v in out.items() if v}

    @property
    def events(self) -> dict[str, int]:
        """The counters that have no metric of their own, by event label; only nonzero ones."""
        out = {label: getattr(self, name) for name, label in EVENTS.items()}
        return {k: v for k, v in out.items() if v}

    def by_name(self) -> dict[str, int]:
        """Every counter under the flat name operators know it by (``/status`` ``counters``).

        Totals are named with dashes (``streams-closed``) and left out while zero; counts by
        label are ``denied:<rule>``, ``open-failed:<reason>`` and ``seal-<reason>``. Sorted.
        """
        out = {name.replace("_", "-"): getattr(self, name) for name in TOTALS}
        out = {k: v for k, v in out.items() if v}
        out.update((f"denied:{k}", v) for k, v in self.denied.items())
        out.update((f"open-failed:{k.value}", v) for k, v in self.open_failed.items())
        out.update((SEAL_PREFIX + k, v) for k, v in self.seal_refused.items())
        return dict(sorted(out.items()))
