"""End to end through real loopback sockets: client -> source -> broker -> sink -> target."""

from __future__ import annotations

import os

import pytest_twisted
from twisted.internet import defer, protocol

from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stream import MAX_DATA_MESSAGE, Stream

from support.net import Collector, Digest, Echo, MiB, connect, free_port, listen, sha256, until
from support.relay import check_concurrent_streams


class Sender(protocol.Protocol):
    """Speaks first: sends a payload as soon as a client connects, then closes."""

    payload = b""

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        self.transport.loseConnection()


class Greeter(Echo):
    """A MariaDB/SMTP-like server: greets first, then echoes in upper case."""

    def connectionMade(self) -> None:
        self.transport.write(b"220 hello from the target\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data.upper())


def with_timeout(d: defer.Deferred, seconds: float = 30) -> defer.Deferred:
    from twisted.internet import reactor

    return d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_echo_round_trip(relay):
    target = await listen(protocol.Factory.forProtocol(Echo), relay.ports)
    port = await relay.forward(target)
    client = await connect(port)
    client.transport.write(b"ping through the broker")
    client.transport.loseWriteConnection()
    data = await with_timeout(client.lost)
    assert data == b"ping through the broker"


@pytest_twisted.ensureDeferred
async def test_upload_16mib_with_half_close(relay):
    target = await listen(protocol.Factory.forProtocol(Digest), relay.ports)
    port = await relay.forward(target)
    payload = os.urandom(16 * MiB)
    client = await connect(port)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    answer = await with_timeout(client.lost, 60)
    assert answer.decode() == f"{len(payload)} {sha256(payload)}"


@pytest_twisted.ensureDeferred
async def test_download_16mib_server_closes(relay):
    payload = os.urandom(16 * MiB)
    sender = type("BigSender", (Sender,), {"payload": payload})
    target = await listen(protocol.Factory.forProtocol(sender), relay.ports)
    port = await relay.forward(target)
    client = await connect(port)
    data = await with_timeout(client.eof, 60)  # the target's close arrives as a half-close
    client.transport.loseConnection()
    await with_timeout(client.lost)
    assert len(data) == len(payload)
    assert sha256(data) == sha256(payload)


@pytest_twisted.ensureDeferred
async def test_server_speaks_first(relay):
    target = await listen(protocol.Factory.forProtocol(Greeter), relay.ports)
    port = await relay.forward(target)
    client = await connect(port)
    greeted: defer.Deferred = defer.Deferred()
    original = client.dataReceived

    def watch(data: bytes) -> None:
        original(data)
        if b"\r\n" in client.data and not greeted.called:
            greeted.callback(bytes(client.data))

    client.dataReceived = watch
    assert await with_timeout(greeted) == b"220 hello from the target\r\n"
    client.transport.write(b"quit")
    client.transport.loseWriteConnection()
    assert await with_timeout(client.lost) == b"220 hello from the target\r\nQUIT"


@pytest_twisted.ensureDeferred
async def test_target_refusing_closes_client(relay):
    port = await relay.forward(free_port())
    client = await connect(port)
    client.transport.write(b"anyone there?")
    assert await with_timeout(client.eof) == b""  # closed without a byte
    client.transport.loseConnection()
    assert relay.source_node.stats.open_failed[OpenFailure.REFUSED] == 1
    assert relay.sink_node.stats.open_failed[OpenFailure.REFUSED] == 1


@pytest_twisted.ensureDeferred
async def test_target_closing_early(relay):
    sender = type("Closer", (Sender,), {"payload": b"bye"})
    target = await listen(protocol.Factory.forProtocol(sender), relay.ports)
    port = await relay.forward(target)
    client = await connect(port)
    assert await with_timeout(client.eof) == b"bye"
    client.transport.loseConnection()
    await with_timeout(client.lost)


@pytest_twisted.ensureDeferred
async def test_fifty_concurrent_streams(relay):
    payloads = [os.urandom(64 * 1024 + i) for i in range(50)]
    await check_concurrent_streams(relay, payloads, 60)
    # A stream that sent CLOSE stays (CLOSING) until the peer acknowledges it: then none.
    await until(lambda: not relay.source_node.streams and not relay.sink_node.streams)


@pytest_twisted.ensureDeferred
async def test_client_closing_closes_target(relay):
    accepted: defer.Deferred = defer.Deferred()

    def make() -> Collector:
        c = Collector()
        accepted.callback(c)
        return c

    target = await listen(protocol.Factory.forProtocol(make), relay.ports)
    port = await relay.forward(target)
    client = await connect(port)
    client.transport.write(b"x")
    server_side = await with_timeout(accepted)
    client.transport.loseConnection()
    # The client's FIN reaches the target as a FIN (a half-close, as with ssh -L).
    assert await with_timeout(server_side.eof) == b"x"
    server_side.transport.loseConnection()
    await with_timeout(server_side.lost)


@pytest_twisted.ensureDeferred
async def test_slow_reader_pauses_the_far_writer(relay, monkeypatch):
    """A client that stops reading makes the sink stop reading the target (bounded memory)."""
    payload = os.urandom(32 * MiB)
    sender = type("BigSender", (Sender,), {"payload": payload})
    target = await listen(protocol.Factory.forProtocol(sender), relay.ports)
    port = await relay.forward(target)

    paused: defer.Deferred = defer.Deferred()
    outstanding: list[int] = []
    original = Stream.update_reading

    def watch(self: Stream) -> None:
        original(self)
        if self.host is relay.sink_node and self.protocol is not None:
            outstanding.append(self.sent - self._peer_consumed)
            if self._reading_paused and not paused.called:
                paused.callback(self.sent)

    monkeypatch.setattr(Stream, "update_reading", watch)
    client = await connect(port)
    client.transport.pauseProducing()  # a reader that does not read
    pulled_when_paused = await with_timeout(paused)
    assert pulled_when_paused < len(payload)
    assert max(outstanding) <= relay.sink_node.window + MAX_DATA_MESSAGE
    client.transport.resumeProducing()
    data = await with_timeout(client.eof, 60)
    client.transport.loseConnection()
    assert sha256(data) == sha256(payload)
    # Once the client reads again the window may grow (auto-tuning: the reader keeps up),
    # up to the node's cap, never beyond.
    assert max(outstanding) <= relay.sink_node.max_window + MAX_DATA_MESSAGE


@pytest_twisted.ensureDeferred
async def test_fixed_forward_on_a_unix_socket(relay, tmp_path):
    from twisted.internet import reactor
    from twisted.internet.endpoints import UNIXClientEndpoint, serverFromString

    from socketeer.source.forward import FixedForwardFactory

    target = await listen(protocol.Factory.forProtocol(Echo), relay.ports)
    path = tmp_path / "forward.sock"
    factory = FixedForwardFactory(relay.source_node, "si", "127.0.0.1", target, open_timeout=30)
    port = await serverFromString(reactor, f"unix:{path}").listen(factory)
    relay.ports.append(port)
    client = Collector()
    await UNIXClientEndpoint(reactor, str(path)).connect(
        protocol.Factory.forProtocol(lambda: client)
    )
    client.transport.write(b"over a unix socket")
    client.transport.loseWriteConnection()
    assert await with_timeout(client.lost) == b"over a unix socket"
    assert relay.source_node.stats.streams_opened == 1
