"""The stream registry: a node's live streams by (peer, id), and the ids that ended recently.

Remembering ended ids lets the node refuse a retransmitted OPEN of a stream that already ran
(after a broker failover a peer resends what it had not seen acknowledged), instead of
opening the connection a second time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

from socketeer.tunnel.snapshot import StreamState
from socketeer.tunnel.stream import Stream

__all__ = ["RECENTLY_CLOSED", "StreamRegistry"]

#: How many ended streams a node remembers, to refuse their retransmitted OPENs.
RECENTLY_CLOSED = 4096

StreamKey = tuple[str, str]


class StreamRegistry(Mapping[StreamKey, Stream]):
    """Live streams by ``(peer, resource)``, in the order they were added."""

    def __init__(self, remember: int = RECENTLY_CLOSED) -> None:
        self._streams: dict[StreamKey, Stream] = {}
        self._ended: OrderedDict[StreamKey, None] = OrderedDict()
        self._remember = remember

    def __getitem__(self, key: StreamKey) -> Stream:
        return self._streams[key]

    def __iter__(self) -> Iterator[StreamKey]:
        return iter(self._streams)

    def __len__(self) -> int:
        return len(self._streams)

    def get(self, key: StreamKey, default: Stream | None = None) -> Stream | None:
        return self._streams.get(key, default)  # on every message: skip Mapping's try/except

    def add(self, stream: Stream) -> None:
        self._streams[stream.key] = stream

    def ended(self, stream: Stream) -> None:
        """``stream`` is over: forget it (unless another took its key) and remember its id."""
        key = stream.key
        if self._streams.get(key) is stream:
            del self._streams[key]
        self.remember_ended(key)

    def remember_ended(self, key: StreamKey) -> None:
        """Remember ``key`` as ended, forgetting the oldest one beyond the limit."""
        self._ended[key] = None
        if len(self._ended) > self._remember:
            self._ended.popitem(last=False)

    def recently_ended(self, key: StreamKey) -> bool:
        return key in self._ended

    def by_peer(self) -> dict[str, list[Stream]]:
        """Live streams grouped by peer node."""
        out: dict[str, list[Stream]] = {}
        for stream in self._streams.values():
            out.setdefault(stream.peer, []).append(stream)
        return out

    def stale(self, peer: str, incarnation: str) -> list[Stream]:
        """``peer``'s streams that belong to an incarnation other than ``incarnation``."""
        return [
            s
            for s in self._streams.values()
            if s.peer == peer and s.peer_incarnation not in ("", incarnation)
        ]

    def states(self) -> tuple[StreamState, ...]:
        """Every live stream, oldest first."""
        return tuple(
            StreamState(
                id=s.resource,
                peer=s.peer,
                client=s.client,
                target=s.target,
                phase=s.phase.value,
                sent=s.sent,
                received=s.delivered,
                started=s.started,
                window=s.window,
                unacknowledged=s.unacknowledged,
            )
            for s in sorted(self._streams.values(), key=lambda s: s.started)
        )
