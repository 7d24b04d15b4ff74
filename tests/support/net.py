"""Loopback networking for tests: free ports, polling, listeners and clients, echo and
digest servers, a bulk sender."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
from collections.abc import Callable, Iterator

from twisted.internet import defer, error, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

MiB = 1024 * 1024


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port whose accept queue is full while inside: the kernel drops further
    SYNs, so a connect to it neither succeeds nor fails until the connector's timeout."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(4):
            filler = socket.socket()
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex(address)
        yield address[1]
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def until(
    condition: Callable[[], object],
    what: str = "the condition",
    timeout: float = 20.0,
    step: float = 0.01,
) -> None:
    """Poll *condition* every *step* seconds until it holds; fail after *timeout* seconds."""
    deadline = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await task.deferLater(reactor, step, lambda: None)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- listeners and clients ---------------------------------------------------------------------


async def listen(factory: protocol.Factory, ports: list) -> int:
    """Listen on a fresh loopback port (appended to *ports*, for the caller to stop)."""
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    ports.append(port)
    return port.getHost().port


@implementer(IHalfCloseableProtocol)
class Collector(protocol.Protocol):
    """A client/server protocol that records what it receives and when it ends."""

    write_closed = False

    def __init__(self) -> None:
        self.data = bytearray()
        self.made: defer.Deferred = defer.Deferred()
        self.eof: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.made.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def readConnectionLost(self) -> None:
        if not self.eof.called:
            self.eof.callback(bytes(self.data))
        if self.write_closed:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.write_closed = True
        if self.eof.called:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.reason = reason
        if not self.eof.called:
            self.eof.callback(bytes(self.data))
        self.lost.callback(bytes(self.data))

    @property
    def was_reset(self) -> bool:
        """The connection ended with a reset (RST), not a FIN."""
        return self.reason is not None and self.reason.check(error.ConnectionDone) is None


async def connection_ending(port: int, timeout: float = 20.0) -> tuple[str, bytes]:
    """Connect to 127.0.0.1:*port* and wait for the connection to end: ("reset", data) if it
    was reset (even before the connect completed), ("fin", data) if it was closed."""
    try:
        proto = await connect(port)
    except error.ConnectError as e:
        if e.osError == errno.ECONNRESET or "104" in str(e):
            return ("reset", b"")
        raise
    data = await proto.lost.addTimeout(timeout, reactor)
    return ("reset" if proto.was_reset else "fin", data)


async def connect(port: int) -> Collector:
    """A Collector connected to 127.0.0.1:*port*."""
    proto = Collector()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(lambda: proto)
    )
    return proto


# -- servers -----------------------------------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class Echo(protocol.Protocol):
    """Echoes; on the client's FIN it finishes writing and closes (a half-close aware server)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


async def echo_server(ports: list) -> int:
    """An Echo server on a fresh loopback port (appended to *ports*)."""
    return await listen(protocol.Factory.forProtocol(Echo), ports)


@implementer(IHalfCloseableProtocol)
class Digest(protocol.Protocol):
    """Reads until the client half-closes, then answers "<bytes> <sha256>" and closes;
    fires ``progress`` once ``progress_at`` bytes arrived."""

    def __init__(self, progress_at: int = 0, progress: defer.Deferred | None = None) -> None:
        self.h = hashlib.sha256()
        self.n = 0
        self.progress_at, self.progress = progress_at, progress

    def dataReceived(self, data: bytes) -> None:
        self.h.update(data)
        self.n += len(data)
        progress = self.progress
        if progress is not None and self.n >= self.progress_at and not progress.called:
            progress.callback(self.n)

    def readConnectionLost(self) -> None:
        self.transport.write(f"{self.n} {self.h.hexdigest()}".encode())
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Bulk:
    """A pull producer writing ``size`` bytes of numbered 1 MiB blocks, then half-closing."""

    def __init__(self, transport, size: int) -> None:
        self.transport = transport
        self.block = bytearray(os.urandom(MiB))
        self.left = size
        self.index = 0
        self.digest = hashlib.sha256()
        transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        if self.left <= 0:
            return
        self.block[:8] = self.index.to_bytes(8, "big")  # reordering would show in the digest
        chunk = bytes(self.block[: min(MiB, self.left)])
        self.index += 1
        self.left -= len(chunk)
        self.digest.update(chunk)
        self.transport.write(chunk)
        if self.left <= 0:
            self.transport.unregisterProducer()
            self.transport.loseWriteConnection()

    def stopProducing(self) -> None:
        self.left = 0
