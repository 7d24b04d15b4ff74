"""The same relay through a real broker: RabbitMQ's STOMP plugin on 127.0.0.1:61613.

CI enables the plugin (.ci/run) and these tests must run there; elsewhere they skip when
nothing answers on 61613. Each test uses its own topic, so runs never see each other.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue

from support.net import Bulk, Digest, MiB, connect, listen, sha256
from support.relay import Relay, check_concurrent_streams

RABBIT = ("127.0.0.1", 61613)


def rabbit_up() -> bool:
    try:
        socket.create_connection(RABBIT, timeout=2).close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not os.environ.get("CI") and not rabbit_up(),
    reason="RabbitMQ STOMP is not on 127.0.0.1:61613 (CI enables rabbitmq_stomp)",
)


def rabbit_url() -> str:
    topic = "sk" + uuid.uuid4().hex[:12]
    return f"stomp://guest:guest@{RABBIT[0]}:{RABBIT[1]}/{topic}?vhost=/"


@pytest_twisted.async_yield_fixture
async def rabbit_relay():
    relay = Relay(rabbit_url())
    await relay.start()
    yield relay
    await relay.stop()


class Sender(protocol.Protocol):
    payload = b""

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_fixed_forward_upload_and_download_through_rabbitmq(rabbit_relay):
    relay = rabbit_relay
    up = os.urandom(16 * MiB)
    target = await listen(protocol.Factory.forProtocol(Digest), relay.ports)
    client = await connect(await relay.forward(target))
    client.transport.write(up)
    client.transport.loseWriteConnection()
    answer = await client.lost.addTimeout(60, reactor)
    assert answer.decode() == f"{len(up)} {sha256(up)}"

    down = os.urandom(16 * MiB)
    sender = type("BigSender", (Sender,), {"payload": down})
    target = await listen(protocol.Factory.forProtocol(sender), relay.ports)
    client = await connect(await relay.forward(target))
    data = await client.eof.addTimeout(60, reactor)
    client.transport.loseConnection()
    assert sha256(data) == sha256(down)


@pytest_twisted.ensureDeferred
async def test_socks5_through_rabbitmq(rabbit_relay):
    relay = rabbit_relay
    target = await listen(protocol.Factory.forProtocol(Digest), relay.ports)
    proxy = await relay.proxy()
    client = await connect(proxy)
    payload = os.urandom(4 * MiB)
    host = b"localhost"
    client.transport.write(
        b"\x05\x01\x00"
        + b"\x05\x01\x00\x03"
        + bytes([len(host)])
        + host
        + target.to_bytes(2, "big")
    )
    replied: defer.Deferred = defer.Deferred()
    original = client.dataReceived

    def watch(data: bytes) -> None:
        original(data)
        if len(client.data) >= 12 and not replied.called:  # method reply + IPv4 reply
            replied.callback(bytes(client.data[:12]))

    client.dataReceived = watch
    reply = await replied.addTimeout(30, reactor)
    assert reply[:2] == b"\x05\x00" and reply[2:4] == b"\x05\x00"
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    answer = await client.lost.addTimeout(60, reactor)
    assert answer[12:].decode() == f"{len(payload)} {sha256(payload)}"


@pytest_twisted.ensureDeferred
async def test_fifty_concurrent_streams_through_rabbitmq(rabbit_relay):
    relay = rabbit_relay
    payloads = [os.urandom(256 * 1024 + i) for i in range(50)]
    await check_concurrent_streams(relay, payloads, 90)


@pytest_twisted.ensureDeferred
async def test_clusters_on_one_rabbitmq_do_not_see_each_other():
    """Two clusters with the same node names on one topic: each node gets only its own."""
    url = rabbit_url()
    relays = [Relay(url, cluster="alpha"), Relay(url, cluster="beta")]
    for relay in relays:
        await relay.start()
    try:
        for relay in relays:
            target = await listen(protocol.Factory.forProtocol(Digest), relay.ports)
            payload = os.urandom(MiB)
            client = await connect(await relay.forward(target))
            client.transport.write(payload)
            client.transport.loseWriteConnection()
            answer = await client.lost.addTimeout(60, reactor)
            assert answer.decode() == f"{len(payload)} {sha256(payload)}"
        for relay in relays:
            for node in (relay.sink_node, relay.source_node):
                # Everything that arrived was addressed to this node: what the other sent
                # never reached it (the broker routes by cluster and node).
                assert node.stats.foreign == 0
                assert node.stats.messages_in > 0
                assert node.stats.unknown_stream == 0
    finally:
        for relay in relays:
            await relay.stop()


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl is not installed")
@pytest_twisted.ensureDeferred
async def test_transfer_survives_a_rabbitmq_restart(rabbit_relay):
    """200 MiB through RabbitMQ while its application is stopped and started again."""
    relay = rabbit_relay
    size = 200 * MiB
    progress: defer.Deferred = defer.Deferred()
    target = await listen(
        protocol.Factory.forProtocol(lambda: Digest(size // 3, progress)), relay.ports
    )
    client = await connect(await relay.forward(target))
    bulk = Bulk(client.transport, size)
    await progress.addTimeout(60, reactor)
    for command in ("stop_app", "start_app"):
        out, err, code = await getProcessOutputAndValue(
            shutil.which("rabbitmqctl"), [command], env=dict(os.environ)
        )
        assert code == 0, err
    answer = await client.lost.addTimeout(180, reactor)
    assert answer.decode() == f"{size} {bulk.digest.hexdigest()}"
    assert relay.source_node.stats.streams_expired == 0
