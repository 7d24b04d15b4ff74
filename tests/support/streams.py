"""Test helpers for streams without a node: a host that records, a half-closeable transport."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from socketeer.tunnel.stream import Stream
from socketeer.wire.envelope import Envelope, MsgType


class FakeHost:
    """A StreamHost that records what the stream sends and when it is done."""

    channel_paused = False

    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[MsgType, int, bytes]] = []
        self.done: list[Stream] = []

    def send_stream_message(self, stream, kind, seq, body=b""):
        self.sent.append((kind, seq, body))

    def stream_done(self, stream):
        self.done.append(stream)

    def seconds(self):
        return self.clock.seconds()

    def kinds(self) -> list[MsgType]:
        return [k for k, _, _ in self.sent]


class HalfCloseTransport(StringTransport):
    """A StringTransport that records a half-close."""

    def __init__(self) -> None:
        super().__init__()
        self.write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def env(kind: MsgType, seq: int, body: bytes = b"") -> Envelope:
    """A message from node ``peer`` on stream ``r1``."""
    return Envelope(kind, "c", "peer", "me", "r1", seq, 0, "inc", body)
