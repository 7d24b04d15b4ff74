"""Test helpers for streams without a node: a host that records, a half-closeable transport."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from socketeer.tunnel.stream import Stream
from socketeer.wire.envelope import Envelope, MsgType, decode_params


class FakeHost:
    """A StreamHost that records what the stream sends, when it is done, and which streams
    it was told sent past their window; its clock (a Clock) runs the delayed ACKs."""

    channel_paused = False

    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[MsgType, int, bytes]] = []
        self.done: list[Stream] = []
        self.violations: list[Stream] = []

    def call_later(self, delay: float, f: Callable[[], object]) -> IDelayedCall:
        return self.clock.callLater(delay, f)

    def window_violated(self, stream: Stream) -> None:
        self.violations.append(stream)

    def send_stream_message(self, stream, kind, seq, body=b""):
        self.sent.append((kind, seq, body))

    def stream_done(self, stream):
        self.done.append(stream)

    def seconds(self):
        return self.clock.seconds()

    def kinds(self) -> list[MsgType]:
        return [k for k, _, _ in self.sent]

    def acks(self) -> list[dict[str, str]]:
        """The parameters of every ACK sent, in order."""
        return [decode_params(b) for k, _, b in self.sent if k is MsgType.ACK]

    def payload(self) -> list[tuple[MsgType, int, bytes]]:
        """What was sent but acknowledgements."""
        return [m for m in self.sent if m[0] is not MsgType.ACK]


class HalfCloseTransport(StringTransport):
    """A StringTransport that records a half-close, and an abort (a TCP reset) apart from a
    clean close (StringTransport's own ``abortConnection`` does not tell them apart)."""

    def __init__(self) -> None:
        super().__init__()
        self.write_closed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def env(kind: MsgType, seq: int, body: bytes = b"") -> Envelope:
    """A message from node ``peer`` on stream ``r1``."""
    return Envelope(kind, "c", "peer", "me", "r1", seq, 0, "inc", body)
