"""Test helpers: a real loopback relay (broker, sink node, source node) and a client."""

from __future__ import annotations

import hashlib
import os

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.channel.client import ChannelService
from socketeer.channel.endpoints import client_endpoint
from socketeer.channel.url import parse_channel_url
from socketeer.sink.connect import Sink
from socketeer.sink.resolve import SystemResolver
from socketeer.source.forward import FixedForwardFactory
from socketeer.tunnel.node import Node
from socketeer.wire.envelope import Envelope, MsgType, from_frame
from socketeer.wire.stompframing import StompFrameParser


@implementer(IHalfCloseableProtocol)
class Collector(protocol.Protocol):
    """A client/server protocol that records what it receives and when it ends."""

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

    write_closed = False

    def writeConnectionLost(self) -> None:
        self.write_closed = True
        if self.eof.called:
            self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        if not self.eof.called:
            self.eof.callback(bytes(self.data))
        self.lost.callback(bytes(self.data))


#: Stream window of the test relay: small, so tests exercise flow control.
WINDOW = 256 * 1024


class Relay:
    """A broker, a spawning sink node and a source node, all on loopback in this reactor."""

    def __init__(self, channel_url: str | None = None, cluster: str = "c") -> None:
        """With ``channel_url`` the nodes use that broker (e.g. RabbitMQ) instead of one
        started here."""
        self.ports: list = []
        self.services: list = []
        self.channel_url = channel_url
        self.cluster = cluster

    async def start(self) -> None:
        if self.channel_url is None:
            self.broker_factory = BrokerFactory(Router(), reactor)
            port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
                self.broker_factory
            )
            self.ports.append(port)
            self.broker_port = port.getHost().port
            spec = parse_channel_url(f"stomp://127.0.0.1:{self.broker_port}/testtopic")
        else:
            spec = parse_channel_url(self.channel_url)
        self.spec = spec
        self.sink_node = Node(self.cluster, "si", spec.topic, reactor, window=WINDOW)
        self.source_node = Node(self.cluster, "so", spec.topic, reactor, window=WINDOW)

        def endpoint_for(host: str, port: int) -> HostnameEndpoint:
            return HostnameEndpoint(reactor, host, port, timeout=5)

        self.sink = Sink(
            self.sink_node,
            endpoint_for,
            reactor,
            connect_timeout=5,
            resolver=SystemResolver(reactor).resolve,
        )
        for node in (self.sink_node, self.source_node):
            svc = ChannelService(node, spec, client_endpoint(reactor, spec), reactor)
            svc.startService()
            self.services.append(svc)
        await defer.gatherResults(
            [self.sink_node.when_ready(), self.source_node.when_ready()]
        ).addTimeout(30, reactor)

    async def forward(self, target_port: int, host: str = "127.0.0.1") -> int:
        """Listen on a fresh loopback port that forwards to ``host:target_port``."""
        factory = FixedForwardFactory(self.source_node, "si", host, target_port, open_timeout=30)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.ports.append(port)
        return port.getHost().port

    async def proxy(self, **settings) -> int:
        """Listen on a fresh loopback port serving SOCKS and HTTP through sink node ``si``."""
        from socketeer.source.proxy import ProxyFactory, ProxySettings

        settings.setdefault("open_timeout", 10)
        factory = ProxyFactory(self.source_node, ProxySettings(peer="si", **settings), reactor)
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
        self.ports.append(port)
        return port.getHost().port

    async def stop(self) -> None:
        await defer.gatherResults([defer.maybeDeferred(s.stopService) for s in self.services])
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])


async def listen(factory: protocol.Factory, ports: list) -> int:
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    ports.append(port)
    return port.getHost().port


async def connect(port: int) -> Collector:
    proto = Collector()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(lambda: proto)
    )
    return proto


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


MiB = 1024 * 1024


@implementer(IHalfCloseableProtocol)
class Digest(protocol.Protocol):
    """Reads until EOF, then answers with the sha256; fires ``progress`` at a byte count."""

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


#: A target that reads until the client half-closes, then answers "<bytes> <sha256>".
DigestServer = Digest


@implementer(IHalfCloseableProtocol)
class Echo(protocol.Protocol):
    """Echoes; on the client's FIN it finishes writing and closes (a half-close aware server)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Link:
    """Records what the node sends, decoded back into envelopes."""

    def __init__(self) -> None:
        self.parser = StompFrameParser("1.2", server=True)
        self.sent: list[Envelope] = []

    def send_bytes(self, data: bytes) -> None:
        for frame in self.parser.feed(data):
            self.sent.append(from_frame(frame))

    def kinds(self) -> list[MsgType]:
        return [e.type for e in self.sent]
