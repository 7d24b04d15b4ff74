"""The public, immutable picture of a node: its channel, peers, streams and counters.

``Node.snapshot()`` builds one; status pages and metrics read it, never the node's live
state, so what they show is consistent within one request and they need no private access.
Times are the node clock's seconds (``time`` is when the snapshot was taken).
"""

from __future__ import annotations

from dataclasses import dataclass

from socketeer.tunnel.stats import Counts

__all__ = ["ChannelState", "NodeSnapshot", "PeerState", "StreamState"]


@dataclass(frozen=True)
class ChannelState:
    """The node's broker connection."""

    connected: bool
    #: Connected, but the broker connection's send buffer is full: local sockets are not read.
    congested: bool
    #: ``host:port`` of the broker the current connection reached, if known.
    broker: str | None
    #: Successful connections (and subscriptions) so far.
    connects: int
    #: New OPENs and RESOLVEs waiting for the channel to come back.
    waiting: int = 0

    @property
    def reconnects(self) -> int:
        return max(self.connects - 1, 0)


@dataclass(frozen=True)
class PeerState:
    """A peer node as this node knows it."""

    node: str
    #: Its incarnation ("" until a message from it arrived).
    incarnation: str
    #: When it was last heard from.
    last_heard: float
    #: When its last PONG came, and the round trip that PONG measured.
    last_pong: float | None
    rtt: float | None


@dataclass(frozen=True)
class StreamState:
    """One live stream."""

    id: str
    peer: str
    #: The local client's address (a source's), or "" (a sink's).
    client: str
    target: str
    #: :class:`socketeer.tunnel.stream.Phase` value (``opening``, ``open``, ``closing``).
    phase: str
    sent: int
    received: int
    started: float
    window: int
    unacknowledged: int


@dataclass(frozen=True)
class NodeSnapshot:
    """One node at ``time``: identity, channel, peers (by name), live streams (oldest first)."""

    cluster: str
    node: str
    incarnation: str
    time: float
    channel: ChannelState
    peers: tuple[PeerState, ...]
    streams: tuple[StreamState, ...]
    counts: Counts

    @property
    def streams_opened(self) -> int:
        """Streams started so far: live, closed and failed ones."""
        c = self.counts
        return len(self.streams) + c.streams_closed + sum(c.open_failed.values())

    @property
    def bytes_out(self) -> int:
        """Payload bytes sent to peers, by ended and live streams."""
        return self.counts.bytes_out + sum(s.sent for s in self.streams)

    @property
    def bytes_in(self) -> int:
        """Payload bytes written to local sockets, by ended and live streams."""
        return self.counts.bytes_in + sum(s.received for s in self.streams)
