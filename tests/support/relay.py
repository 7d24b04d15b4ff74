"""Test helpers: a real loopback relay (broker, sink node, source node) in this reactor, and
a link that records what a node sends."""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import HostnameEndpoint

from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.channel.client import ChannelService
from socketeer.channel.endpoints import client_endpoint
from socketeer.channel.url import parse_channel_url
from socketeer.sink.connect import Sink
from socketeer.sink.resolve import SystemResolver
from socketeer.source.forward import FixedForwardFactory
from socketeer.source.proxy import ProxyFactory, ProxySettings
from socketeer.tunnel.node import Node
from socketeer.wire.envelope import Envelope, MsgType, from_frame
from socketeer.wire.stompframing import StompFrameParser

from support.net import Digest, connect, listen, sha256

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
            self.broker_port = await listen(self.broker_factory, self.ports)
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
        return await listen(factory, self.ports)

    async def proxy(self, **settings) -> int:
        """Listen on a fresh loopback port serving SOCKS and HTTP through sink node ``si``."""
        settings.setdefault("open_timeout", 10)
        factory = ProxyFactory(self.source_node, ProxySettings(peer="si", **settings), reactor)
        return await listen(factory, self.ports)

    async def stop(self) -> None:
        await defer.gatherResults([defer.maybeDeferred(s.stopService) for s in self.services])
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])


async def check_concurrent_streams(relay: Relay, payloads: list[bytes], timeout: float) -> None:
    """One stream per payload at once through *relay* to a Digest target; each answer must be
    that payload's length and sha256."""
    target = await listen(protocol.Factory.forProtocol(Digest), relay.ports)
    port = await relay.forward(target)
    clients = await defer.gatherResults([defer.ensureDeferred(connect(port)) for _ in payloads])
    for client, payload in zip(clients, payloads, strict=True):
        client.transport.write(payload)
        client.transport.loseWriteConnection()
    answers = await defer.gatherResults([c.lost for c in clients]).addTimeout(timeout, reactor)
    for answer, payload in zip(answers, payloads, strict=True):
        assert answer.decode() == f"{len(payload)} {sha256(payload)}"


class Link:
    """Records what the node sends, decoded back into envelopes."""

    def __init__(self) -> None:
        self.parser = StompFrameParser("1.2", server=True)
        self.sent: list[Envelope] = []
        self.frames: list = []

    def send_bytes(self, data: bytes) -> None:
        for frame in self.parser.feed(data):
            self.frames.append(frame)
            if "sk-seal" not in frame.headers:  # a sealed frame is kept as it is
                self.sent.append(from_frame(frame))

    def kinds(self) -> list[MsgType]:
        return [e.type for e in self.sent]

    def answers(self) -> list[tuple[MsgType, dict[str, str]]]:
        """What was sent but acknowledgements: each message's type and parameters."""
        return [(e.type, e.params()) for e in self.sent if e.type is not MsgType.ACK]
