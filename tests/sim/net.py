"""Simulated time and local sockets: a per-process clock and an in-memory TCP connection.

Everything runs on one ``twisted.internet.task.Clock`` (the world's); no reactor, no wall
clock. A process sees that clock through :class:`ProcessClock`, which adds the process's
clock skew and remembers every timer it set, so that a crash can cancel them all (a killed
process's timers do not fire). :class:`SimTransport` is one end of a local TCP connection
(a client socket to a source, a sink's socket to its target): bytes, FIN, RST and
back-pressure, each hop one simulated turn later, as a real reactor would deliver them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IHalfCloseableProtocol,
    IProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

#: One hop on a local socket (the reactor turn between a write and the peer's read).
LOCAL_LATENCY = 0.0005
#: A transport pauses its producer past this many queued bytes (a socket's send buffer).
HIGH_WATER = 2 * 1024  # scaled down with the windows (KiB for MiB)
#: The most one read hands the protocol (a transport's ``bufferSize``, scaled down).
READ_SIZE = 8 * 1024


@implementer(IReactorTime)
class ProcessClock:
    """The world clock as one process sees it: skewed by ``offset``, and killable.

    Skew only shifts ``seconds()`` (timestamps, ping times, seal ages); delays are relative,
    so timers fire at the same world time whatever the skew.
    """

    def __init__(self, world: Clock, offset: float = 0.0) -> None:
        self.world = world
        self.offset = offset
        self._calls: list[IDelayedCall] = []
        self._prune_at = 64

    def seconds(self) -> float:
        return self.world.seconds() + self.offset

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> IDelayedCall:
        call = self.world.callLater(delay, f, *args, **kw)
        self._calls.append(call)
        if len(self._calls) > self._prune_at:  # keep only the live ones, amortised
            self._calls = [c for c in self._calls if c.active()]
            self._prune_at = max(64, 2 * len(self._calls))
        return call

    def getDelayedCalls(self) -> list[IDelayedCall]:
        return [c for c in self._calls if c.active()]

    def kill(self) -> None:
        """The process died: none of its timers fire."""
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []


def address(host: str, port: int) -> IPv4Address:
    return IPv4Address("TCP", host, port)


@implementer(ITransport, IConsumer, IPushProducer)
class SimTransport:
    """One end of a simulated local TCP connection (make pairs with :func:`socket_pair`)."""

    def __init__(self, clock: Clock, host: IPv4Address, peer: IPv4Address) -> None:
        self.clock = clock
        self._host = host
        self._peer_address = peer
        self.other: SimTransport | None = None
        self.protocol: IProtocol | None = None
        self._buf: list[bytes] = []
        self._buffered = 0
        self._scheduled = False
        self._fin = False  # loseWriteConnection asked
        self._fin_sent = False
        self._closing = False  # loseConnection asked
        self.closed = False
        self.reading_paused = False  # our protocol paused us: deliver nothing to it
        self._producer: IPushProducer | None = None
        self._producer_paused = False
        #: The most bytes ever queued here (what a slow reader made the sender buffer).
        self.peak = 0

    # -- ITransport ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.closed or self._fin or self._closing or not data:
            return
        self._buf.append(data)
        self._buffered += len(data)
        if self._buffered > self.peak:
            self.peak = self._buffered
        self._schedule()
        # Full kernel buffers push back on the writer, as a real socket does, whether its
        # reader has stopped or is only slower than the writer.
        if self._producer is not None and not self._producer_paused:
            other = self.other
            if self._buffered > HIGH_WATER and other is not None:
                self._producer_paused = True
                self._producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        if self.closed or self._fin:
            return
        self._fin = True
        self._schedule()

    def loseConnection(self) -> None:
        if self.closed or self._closing:
            return
        self._closing = True
        self._schedule()

    def abortConnection(self) -> None:
        """RST: queued bytes are dropped, both ends see ConnectionLost."""
        if self.closed:
            return
        self._drop(ConnectionLost("connection reset (abortConnection)"))
        other = self.other
        self.clock.callLater(LOCAL_LATENCY, other.reset_by_peer)

    def getPeer(self) -> IPv4Address:
        return self._peer_address

    def getHost(self) -> IPv4Address:
        return self._host

    # -- IConsumer -----------------------------------------------------------------------

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._producer = producer
        self._producer_paused = False

    def unregisterProducer(self) -> None:
        self._producer = None

    # -- IPushProducer: our protocol stops (or resumes) reading --------------------------

    def pauseProducing(self) -> None:
        self.reading_paused = True

    def resumeProducing(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if self.other is not None:
                self.other._schedule()

    def stopProducing(self) -> None:
        self.loseConnection()

    # -- moving bytes --------------------------------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and not self.closed:
            self._scheduled = True
            self.clock.callLater(LOCAL_LATENCY, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        other = self.other
        if self.closed or other is None:
            return
        if other.closed:
            self._buf.clear()
            self._buffered = 0
            return
        if other.reading_paused:
            return  # other.resumeProducing schedules us again
        if self._buf:
            data = b"".join(self._buf)
            self._buf.clear()
            if len(data) > READ_SIZE:  # one read at a time, as a socket is read
                self._buf.append(data[READ_SIZE:])
                data = data[:READ_SIZE]
            self._buffered = len(self._buf[0]) if self._buf else 0
            other.protocol.dataReceived(data)
            if self.closed or other.closed:
                return
            if self._producer is not None and self._producer_paused and not self._buf:
                # As Twisted does: the producer resumes once the buffer is all written.
                self._producer_paused = False
                self._producer.resumeProducing()
            if self._buf:
                self._schedule()
                return
        if (self._fin or self._closing) and not self._fin_sent:
            self._fin_sent = True
            if IHalfCloseableProtocol.providedBy(other.protocol) and not self._closing:
                other.protocol.readConnectionLost()
                if not self.closed and IHalfCloseableProtocol.providedBy(self.protocol):
                    self.protocol.writeConnectionLost()
            else:
                self._closing = True
        if self._closing and not self.closed:
            # A full close: once our bytes are out, both ends see a clean end.
            self._drop(ConnectionDone("connection closed cleanly"))
            if not other.closed:
                other._drop(ConnectionDone("connection closed cleanly"))

    def _drop(self, why: Exception) -> None:
        self.closed = True
        self._buf.clear()
        self._buffered = 0
        self._producer = None
        protocol = self.protocol
        if protocol is not None:
            protocol.connectionLost(Failure(why))

    def reset_by_peer(self) -> None:
        """The other end sent RST (it aborted, or its process died)."""
        if not self.closed:
            self._drop(ConnectionLost("connection reset by peer"))

    def die(self) -> None:
        """Our process was killed: the kernel resets the connection; no callback here."""
        if self.closed:
            return
        self.closed = True
        self._buf.clear()
        self._producer = None
        if self.other is not None:
            self.clock.callLater(LOCAL_LATENCY, self.other.reset_by_peer)


def socket_pair(clock: Clock, a: IPv4Address, b: IPv4Address) -> tuple[SimTransport, SimTransport]:
    """Two connected ends: the first at address ``a``, the second at ``b``."""
    left, right = SimTransport(clock, a, b), SimTransport(clock, b, a)
    left.other, right.other = right, left
    return left, right
