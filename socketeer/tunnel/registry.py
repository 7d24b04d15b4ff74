"""The stream registry: a node's streams by (peer, id), and how recent ones ended.

A stream that ended cleanly is remembered with the sequence number after the peer's CLOSE,
so that a CLOSE resent by a peer whose acknowledgement got lost is acknowledged again
(the peer's CLOSING stream can end) rather than reset. Bounded: an id forgotten answers
RESET, which is safe (the peer's client was told the stream closed only if it did).
Whether an OPEN already ran is the session's business (``peers.SeenCounters``), not this map's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

from socketeer.tunnel.snapshot import StreamState
from socketeer.tunnel.stream import Stream

__all__ = ["RECENTLY_CLOSED", "StreamRegistry"]

#: How many ended streams a node remembers, to acknowledge their resent CLOSEs.
RECENTLY_CLOSED = 4096

StreamKey = tuple[str, str]


class StreamRegistry(Mapping[StreamKey, Stream]):
    """Live streams by ``(peer, resource)``, in the order they were added."""

    def __init__(self, remember: int = RECENTLY_CLOSED) -> None:
        self._streams: dict[StreamKey, Stream] = {}
        self._ended: OrderedDict[StreamKey, int | None] = OrderedDict()
        self._per_peer: dict[str, dict[StreamKey, Stream]] = {}
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
        key = stream.key
        self._streams[key] = stream
        self._per_peer.setdefault(stream.peer, {})[key] = stream

    def count(self, peer: str) -> int:
        """Streams with ``peer``."""
        return len(self._per_peer.get(peer, ()))

    def of_peer(self, peer: str) -> list[Stream]:
        """Streams with ``peer`` (a copy: it may change while the caller goes through it)."""
        return list(self._per_peer.get(peer, {}).values())

    def ended(self, stream: Stream) -> None:
        """``stream`` is over: forget it (unless another took its key) and remember its id."""
        key = stream.key
        if self._streams.get(key) is stream:
            del self._streams[key]
            mine = self._per_peer[stream.peer]
            del mine[key]
            if not mine:
                del self._per_peer[stream.peer]
        self.remember_ended(key, stream.final_rx_seq)

    def remember_ended(self, key: StreamKey, final_seq: int | None = None) -> None:
        """Remember ``key`` as ended (cleanly, after ``final_seq``), forgetting the oldest
        one beyond the limit."""
        self._ended[key] = final_seq
        if len(self._ended) > self._remember:
            self._ended.popitem(last=False)

    def recently_ended(self, key: StreamKey) -> bool:
        return key in self._ended

    def final_seq(self, key: StreamKey) -> int | None:
        """The sequence number after the peer's CLOSE of a stream that ended cleanly here."""
        return self._ended.get(key)

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
