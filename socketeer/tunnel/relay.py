"""Joining a local socket to a stream: bytes, FIN and back-pressure in both directions.

A relay is a pair of ordinary protocols, as ``twisted.protocols.portforward`` joins two TCP
connections: ``SocketRelay`` on the socket's transport writes to the stream, and
``SocketWriter`` on the stream's transport writes to the socket. The pair serves the
source's accepted client socket (the fixed forward, and the proxy port once its handshake is
done), the sink's outbound socket, and ``socketeer connect``'s standard input and output.

Half-close is the one subtle part, and it lives here once. A FIN read from the socket
half-closes the stream (EOF to the peer); the peer's EOF half-closes the socket. Twisted
does not end a connection whose halves were closed separately, so when both are closed the
relay closes the socket, which ends the stream.

Endings keep their kind both ways: a stream that ended cleanly (the peer's CLOSE) closes the
socket with a FIN; one that was dropped (a RESET, a lost session, an expired peer) resets it,
so that a client never takes a truncated reply for a whole one. A socket that closes cleanly
closes the stream; one that is reset (the target's RST) resets the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import fastwrite
from socketeer.tunnel.stream import Stream


@implementer(IHalfCloseableProtocol)
class SocketRelay(Protocol):
    """The local socket's protocol: what it reads goes to a stream, its FIN too.

    ``stream_for_connection`` finds the stream once the socket is connected (None closes
    the socket); without it, a subclass calls ``relay`` when it is ready (the proxy port,
    after its handshake).
    """

    stream: Stream | None = None
    read_closed = False  # the socket's FIN arrived
    write_closed = False  # the socket is half-closed after the peer's EOF

    def __init__(
        self, stream_for_connection: Callable[[SocketRelay], Stream | None] | None = None
    ) -> None:
        self._stream_for_connection = stream_for_connection

    def connectionMade(self) -> None:
        fastwrite.large_reads(self.transport)
        fastwrite.no_delay(self.transport)
        if self._stream_for_connection is None:
            return
        stream = self._stream_for_connection(self)
        if stream is None:
            self.transport.loseConnection()
            return
        self.relay(stream)

    def relay(self, stream: Stream) -> None:
        """Join this socket to ``stream``: from now on bytes, FIN and back-pressure flow."""
        self.stream = stream
        stream.attach_protocol(SocketWriter(self))

    def dataReceived(self, data: bytes) -> None:
        if self.stream is not None:
            self.stream.write(data)

    def readConnectionLost(self) -> None:
        self.read_closed = True
        if self.stream is not None:
            self.stream.loseWriteConnection()
        self._maybe_done()

    def writeConnectionLost(self) -> None:
        self.write_closed = True  # we half-closed on the peer's EOF; reading may go on
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self.read_closed and self.write_closed:
            self.both_closed()

    def both_closed(self) -> None:
        """Both halves are closed: end the connection (Twisted does not, on its own)."""
        self.transport.loseConnection()

    def stream_ended(self) -> None:
        """The stream ended cleanly (the peer's CLOSE, or our own loseConnection)."""
        self.transport.loseConnection()

    def stream_reset(self) -> None:
        """The stream was dropped: reset the socket (RST), never a FIN."""
        fastwrite.reset(self.transport)

    def connectionLost(self, reason: Failure | None = None) -> None:
        stream = self.stream
        if stream is not None:
            if reason is None or reason.check(ConnectionDone) is not None:
                stream.loseConnection()
            else:  # reset, or lost: the peer must not take it for a clean end
                stream.reset()


@implementer(IHalfCloseableProtocol)
class SocketWriter(Protocol):
    """The protocol on a stream that writes to its relay's socket.

    Back-pressure both ways, wired before the first byte: the socket's full buffer pauses
    the stream (the peer gets no credit), and the stream's spent window pauses reading the
    socket.
    """

    def __init__(self, relay: SocketRelay) -> None:
        self.relay = relay
        self.socket = relay.transport
        self._registered = False
        # Bound once: the stream's bytes go straight to fastwrite, with no frame of ours
        # in between (this is the per-message path).
        self.dataReceived = partial(fastwrite.write, self.socket)

    def connectionMade(self) -> None:
        self.socket.registerProducer(self.transport, True)
        self._registered = True
        self.transport.registerProducer(self.socket, True)

    def readConnectionLost(self) -> None:
        # The peer's EOF. No more writes: drop our producer first, or Twisted never
        # half-closes a transport whose producer it had paused.
        self._unregister()
        self.socket.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass  # the relay sent EOF on the socket's FIN; it knows

    def connectionLost(self, reason: Failure | None = None) -> None:
        # The producer goes first: Twisted keeps a connection open while a registered
        # producer is paused.
        self._unregister()
        if reason is None or reason.check(ConnectionDone) is not None:
            self.relay.stream_ended()
        else:
            self.relay.stream_reset()

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.socket.unregisterProducer()
