"""Streams that outlive real breakage: a killed broker, a failover, a killed sink.

Brokers and the sink run as real ``twistd socketeer`` children; the nodes under test run
in the test reactor. Transfers are checksummed end to end: the client must never notice a
broker restart, and must see a clean close (not a hang) when its sink dies.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import HostnameEndpoint

from socketeer.channel.client import ChannelService
from socketeer.channel.endpoints import client_endpoint
from socketeer.channel.url import parse_channel_url
from socketeer.sink.connect import Sink
from socketeer.source.forward import FixedForwardFactory
from socketeer.tunnel.node import Node

from support.net import Bulk, Digest, MiB, connect, free_port, listen
from support.properties import Properties, channel_url
from support.twistd import start, stop

SIZE = 200 * MiB
BROKER_READY = b"BrokerFactory starting on"


def broker_config(tmp_path: Path, port: int, name: str = "broker") -> Path:
    path = tmp_path / f"{name}.properties"
    path.write_text(str(Properties().broker(port)))
    return path


class Pair:
    """A sink node and a source node in this reactor, on a given channel URL."""

    def __init__(self, url: str, *, grace: float = 60.0, ping: float = 5.0) -> None:
        self.spec = parse_channel_url(url)
        self.sink_node = Node("c", "si", self.spec.topic, reactor, grace=grace, ping_interval=ping)
        self.source_node = Node(
            "c", "so", self.spec.topic, reactor, grace=grace, ping_interval=ping
        )
        self.services: list[ChannelService] = []
        self.endpoints: list = []
        self.ports: list = []

    def with_sink(self) -> Pair:
        Sink(self.sink_node, lambda h, p: HostnameEndpoint(reactor, h, p), reactor)
        return self

    async def start(self, nodes: list[Node]) -> None:
        for node in nodes:
            endpoint = client_endpoint(reactor, self.spec)
            self.endpoints.append(endpoint)
            svc = ChannelService(node, self.spec, endpoint, reactor)
            svc.startService()
            self.services.append(svc)
        await defer.gatherResults([n.when_ready() for n in nodes]).addTimeout(30, reactor)

    async def forward(self, target: int) -> int:
        factory = FixedForwardFactory(self.source_node, "si", "127.0.0.1", target, open_timeout=30)
        return await listen(factory, self.ports)

    async def stop(self) -> None:
        for svc in self.services:
            await svc.stopService()
        for port in self.ports:
            await port.stopListening()


async def transfer_through_breakage(pair: Pair, break_it) -> None:
    """Send SIZE bytes; when a third has arrived, run ``break_it``; check the digest."""
    progress: defer.Deferred = defer.Deferred()
    target = await listen(
        protocol.Factory.forProtocol(lambda: Digest(SIZE // 3, progress)), pair.ports
    )
    port = await pair.forward(target)
    client = await connect(port)
    bulk = Bulk(client.transport, SIZE)
    await progress.addTimeout(60, reactor)
    await break_it()
    answer = await client.lost.addTimeout(120, reactor)
    assert answer.decode() == f"{SIZE} {bulk.digest.hexdigest()}"


@pytest_twisted.ensureDeferred
async def test_broker_killed_and_restarted_mid_transfer(tmp_path):
    port = free_port()
    config = broker_config(tmp_path, port)
    brokers = [start(config, 1, BROKER_READY)]
    pair = Pair(f"stomp://127.0.0.1:{port}/resil").with_sink()
    try:
        await brokers[0].ready.addTimeout(30, reactor)
        await pair.start([pair.sink_node, pair.source_node])

        async def kill_and_restart() -> None:
            brokers[0].transport.signalProcess(signal.SIGKILL)
            await brokers[0].ended.addTimeout(30, reactor)
            brokers.append(start(config, 1, BROKER_READY))
            await brokers[-1].ready.addTimeout(30, reactor)

        await transfer_through_breakage(pair, kill_and_restart)
    finally:
        await pair.stop()
        for broker in brokers:
            await stop(broker)


@pytest_twisted.ensureDeferred
async def test_failover_to_the_second_broker_mid_transfer(tmp_path):
    ports = [free_port(), free_port()]
    brokers = [start(broker_config(tmp_path, p, f"b{p}"), 1, BROKER_READY) for p in ports]
    url = f"failover:(stomp://127.0.0.1:{ports[0]}/fo,stomp://127.0.0.1:{ports[1]}/fo)"
    pair = Pair(url + "?randomize=false").with_sink()
    try:
        for broker in brokers:
            await broker.ready.addTimeout(30, reactor)
        await pair.start([pair.sink_node, pair.source_node])

        async def kill_first() -> None:
            brokers[0].transport.signalProcess(signal.SIGKILL)
            await brokers[0].ended.addTimeout(30, reactor)

        await transfer_through_breakage(pair, kill_first)
        # Both nodes now talk through the second broker.
        assert [endpoint.current.port for endpoint in pair.endpoints] == [ports[1]] * 2
    finally:
        await pair.stop()
        for broker in brokers:
            await stop(broker)


@pytest_twisted.ensureDeferred
async def test_killed_sink_closes_the_client_within_the_grace_period(tmp_path):
    port = free_port()
    broker = start(broker_config(tmp_path, port), 1, BROKER_READY)
    sink_config = tmp_path / "sink.properties"
    sink_config.write_text(str(Properties().sink("si", channel_url(port, "k9"))))
    sink = None
    pair = Pair(channel_url(port, "k9"), grace=3.0, ping=1.0)
    try:
        await broker.ready.addTimeout(30, reactor)
        sink = start(sink_config, 1)
        await sink.ready.addTimeout(30, reactor)
        await pair.start([pair.source_node])
        progress: defer.Deferred = defer.Deferred()
        target = await listen(
            protocol.Factory.forProtocol(lambda: Digest(4 * MiB, progress)), pair.ports
        )
        client = await connect(await pair.forward(target))
        Bulk(client.transport, SIZE)
        await progress.addTimeout(60, reactor)
        sink.transport.signalProcess(signal.SIGKILL)
        await sink.ended.addTimeout(30, reactor)
        killed_at = reactor.seconds()
        await client.eof.addTimeout(30, reactor)  # closed, not hung
        assert reactor.seconds() - killed_at < 3.0 + 2 * 1.0 + 2.0
        assert pair.source_node.stats.streams_expired == 1
        client.transport.loseConnection()
    finally:
        await pair.stop()
        for proc in (sink, broker):
            if proc is not None:
                await stop(proc)
