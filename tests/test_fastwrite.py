"""fastwrite: bytes leave at once when nothing is queued, in order and with back-pressure
when something is, through real loopback sockets."""

from __future__ import annotations

import hashlib
import os
import socket

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from socketeer import fastwrite

from support.net import Collector, Echo, connect, listen, until
from support.relay import Relay


class Holder(protocol.Protocol):
    """The server side: keeps its transport so the test can write through it."""

    def __init__(self, made: defer.Deferred) -> None:
        self.made = made

    def connectionMade(self) -> None:
        self.made.callback(self)


async def _pair(ports: list) -> tuple[Holder, Collector]:
    made: defer.Deferred = defer.Deferred()
    port = await listen(protocol.Factory.forProtocol(lambda: Holder(made)), ports)
    client = await connect(port)
    server = await made
    return server, client


async def _close(ports: list, *transports) -> None:
    for t in transports:
        t.loseConnection()
    await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])


@pytest_twisted.ensureDeferred
async def test_an_idle_transport_sends_at_once_without_buffering():
    ports: list = []
    server, client = await _pair(ports)
    fastwrite.write(server.transport, b"hello")
    # Nothing was queued for a later reactor turn: the kernel has the bytes already.
    assert not server.transport.dataBuffer and not server.transport._tempDataBuffer
    fastwrite.write_sequence(server.transport, (b" ", b"wor", b"ld"))
    assert not server.transport.dataBuffer and not server.transport._tempDataBuffer
    await until(lambda: bytes(client.data) == b"hello world", "the bytes")
    await _close(ports, server.transport, client.transport)


@pytest_twisted.ensureDeferred
async def test_queued_bytes_keep_their_order():
    ports: list = []
    server, client = await _pair(ports)
    server.transport.write(b"first ")  # queued by Twisted until the next reactor turn
    assert server.transport._tempDataBuffer or server.transport.dataBuffer
    fastwrite.write(server.transport, b"second ")
    fastwrite.write_sequence(server.transport, (b"third", b"."))
    await until(lambda: bytes(client.data) == b"first second third.", "ordered bytes")
    await _close(ports, server.transport, client.transport)


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_a_full_socket_queues_the_rest_and_pauses_the_producer():
    ports: list = []
    server, client = await _pair(ports)
    client.transport.pauseProducing()  # a slow reader: the kernel buffers fill up
    producer = Producer()
    server.transport.registerProducer(producer, True)
    data = os.urandom(8 * 1024 * 1024)
    half = len(data) // 2
    fastwrite.write(server.transport, data[:half])
    fastwrite.write_sequence(server.transport, (data[half:-10], data[-10:]))
    # More than the kernel takes: the rest waits in Twisted's buffer, which asks the
    # producer to pause, as transport.write() would.
    assert server.transport.dataBuffer or server.transport._tempDataBuffer
    assert producer.paused >= 1
    client.transport.resumeProducing()
    await until(lambda: len(client.data) >= len(data), "all bytes")
    assert hashlib.sha256(client.data).digest() == hashlib.sha256(data).digest()
    await until(lambda: producer.resumed >= 1, "the producer to resume")
    server.transport.unregisterProducer()
    await _close(ports, server.transport, client.transport)


@pytest_twisted.ensureDeferred
async def test_after_lose_connection_it_does_what_twisted_does():
    """Writes after loseConnection() follow Twisted's rules, whatever those are."""
    received = []
    for fast in (False, True):
        ports: list = []
        server, client = await _pair(ports)
        write = fastwrite.write if fast else server.transport.write
        write(server.transport, b"before") if fast else write(b"before")
        server.transport.loseConnection()
        write(server.transport, b"after") if fast else write(b"after")
        received.append(await client.eof.addTimeout(10, reactor))
        await _close(ports, client.transport)
    assert received[0].startswith(b"before")
    assert received[1] == received[0]


def test_other_transports_use_their_own_write():
    transport = StringTransport()
    fastwrite.write(transport, b"a")
    fastwrite.write_sequence(transport, (b"b", b"c"))
    assert transport.value() == b"abc"


@pytest_twisted.ensureDeferred
async def test_no_delay_turns_nagle_off():
    ports: list = []
    server, client = await _pair(ports)
    handle = server.transport.getHandle()
    handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
    fastwrite.no_delay(server.transport)
    assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    fastwrite.no_delay(StringTransport())  # not a socket: nothing to do, no error
    await _close(ports, server.transport, client.transport)


@pytest_twisted.ensureDeferred
async def test_every_relay_socket_is_tuned():
    """Broker, channel, and both local sockets of a stream: small messages leave at once
    (no Nagle), and a whole data message is read at once."""
    relay = Relay()
    await relay.start()
    ports: list = []
    try:
        target = await listen(protocol.Factory.forProtocol(Echo), ports)
        front = await relay.forward(target)
        client = await connect(front)
        client.transport.write(b"ping")
        await until(lambda: bytes(client.data) == b"ping", "the echo")
        transports = [c.transport for c in relay.broker_factory.connections]
        for node in (relay.sink_node, relay.source_node):  # the outbound and accepted sockets
            transports.append(next(iter(node.streams.values())).protocol.socket)
        assert len(transports) >= 4
        for t in transports:
            assert t.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert t.bufferSize == fastwrite.LARGE_READ
        client.transport.loseConnection()
    finally:
        await relay.stop()
        await _close(ports)
