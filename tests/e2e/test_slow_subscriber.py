"""A frozen node delays no one else on the embedded broker (issue 14, head-of-line blocking).

Four nodes on one in-process broker over loopback: an echo pair ``so`` -> ``si``, and ``s2``
flooding ``zz``, whose channel stops reading its socket (a frozen process, as far as the
broker can tell), while ``so`` pings its whole cluster, ``zz`` included. The echo must keep
completing round trips while ``zz``'s queue in the broker is over its bound and ``s2`` is
paused; then ``zz`` is disconnected with an ERROR.
"""

from __future__ import annotations

import socket

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import HostnameEndpoint

from socketeer.broker.protocol import BrokerFactory, BrokerProtocol
from socketeer.broker.router import Router
from socketeer.channel.client import ChannelService
from socketeer.channel.endpoints import client_endpoint
from socketeer.channel.url import parse_channel_url
from socketeer.sink.connect import Sink
from socketeer.source.forward import FixedForwardFactory
from socketeer.tunnel.node import Node
from socketeer.wire.envelope import node_destination

from support.net import Bulk, MiB, connect, echo_server, listen, until

BOUND = 256 * 1024
SLOW_TIMEOUT = 5.0
TIMEOUT = 30.0


class Recording:
    """A client endpoint that keeps the protocols it connected, to freeze one."""

    def __init__(self, endpoint) -> None:
        self.endpoint = endpoint
        self.protocols: list[protocol.Protocol] = []

    def connect(self, factory) -> defer.Deferred:
        def keep(proto):
            self.protocols.append(proto)
            return proto

        return self.endpoint.connect(factory).addCallback(keep)


class RoundTrips(protocol.Protocol):
    """An echo client: each ``ask`` fires when its line has come back."""

    def __init__(self) -> None:
        self.buffer = b""
        self.waiting: tuple[bytes, defer.Deferred] | None = None

    def ask(self, line: bytes) -> defer.Deferred:
        self.waiting = (line, defer.Deferred())
        self.transport.write(line)
        return self.waiting[1].addTimeout(TIMEOUT, reactor)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.waiting is not None and self.buffer == self.waiting[0]:
            self.buffer = b""
            d, self.waiting = self.waiting[1], None
            d.callback(None)


class Discard(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_frozen_subscriber_does_not_stall_a_healthy_echo():
    ports: list = []
    services: list[ChannelService] = []
    factory = BrokerFactory(
        Router(),
        reactor,
        heartbeat_ms=(0, 0),
        subscriber_queue=BOUND,
        slow_subscriber_timeout=SLOW_TIMEOUT,
    )
    broker_port = await listen(factory, ports)
    # Accepted sockets inherit a small send buffer: the frozen reader congests quickly.
    ports[0].socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    spec = parse_channel_url(f"stomp://127.0.0.1:{broker_port}/hol?heartbeat=0")
    nodes = {name: Node("c", name, spec.topic, reactor) for name in ("so", "si", "s2", "zz")}
    for sink in ("si", "zz"):
        Sink(nodes[sink], lambda h, p: HostnameEndpoint(reactor, h, p), reactor)
    endpoints = {}
    try:
        for name, node in nodes.items():
            endpoints[name] = Recording(client_endpoint(reactor, spec))
            svc = ChannelService(node, spec, endpoints[name], reactor)
            svc.startService()
            services.append(svc)
        await defer.gatherResults([n.when_ready() for n in nodes.values()]).addTimeout(
            TIMEOUT, reactor
        )

        def broker_side(name: str) -> BrokerProtocol:
            mine = node_destination(spec.topic, "c", name)
            [proto] = [
                p for p in factory.connections if mine in factory.router.subscriptions(p).values()
            ]
            return proto

        so, s2, zz = broker_side("so"), broker_side("s2"), broker_side("zz")

        echo = await echo_server(ports)
        echo_forward = FixedForwardFactory(nodes["so"], "si", "127.0.0.1", echo, open_timeout=30)
        echo_port = await listen(echo_forward, ports)
        client = RoundTrips()
        await HostnameEndpoint(reactor, "127.0.0.1", echo_port).connect(
            protocol.Factory.forProtocol(lambda: client)
        )
        await client.ask(b"warm-up\n")

        # zz freezes: its channel stops reading the broker's socket.
        [zz_channel] = endpoints["zz"].protocols
        zz_channel.transport.pauseProducing()
        sink_target = await listen(protocol.Factory.forProtocol(Discard), ports)
        flood_forward = FixedForwardFactory(
            nodes["s2"], "zz", "127.0.0.1", sink_target, open_timeout=30
        )
        flooder = await connect(await listen(flood_forward, ports))
        Bulk(flooder.transport, 64 * MiB)
        await until(lambda: zz.queued_bytes > BOUND and s2.paused, "zz over its bound")

        # The healthy pair goes on, while zz stays frozen and its flooder paused; so also
        # pings its whole cluster, zz included, as its status server does.
        for i in range(20):
            nodes["so"].ping()
            await client.ask(b"round trip %d\n" % i)
            assert not so.paused
        assert zz in factory.connections and zz.queued_bytes > BOUND and s2.paused

        # zz stays over its bound: disconnected after the timeout, its flooder released.
        await until(lambda: zz not in factory.connections, "zz dropped", timeout=TIMEOUT)
        assert factory.counters.slow_disconnects == 1
        assert not s2.paused and factory.queued_bytes == 0
        await client.ask(b"after\n")
        zz_channel.transport.resumeProducing()
        flooder.transport.abortConnection()
        client.transport.loseConnection()
    finally:
        for svc in services:
            await svc.stopService()
        for port in ports:
            await port.stopListening()
