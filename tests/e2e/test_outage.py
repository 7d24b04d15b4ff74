"""New connections ride out a broker outage: real broker, sink and source processes.

Clients connect through the source's SOCKS5 port while the broker is down (SIGKILL). Their
OPENs wait for the channel (the source's ``/status`` shows them waiting), go out when the
broker is back, and each reaches the target exactly once. When the broker stays down longer
than ``connecttimeout``, the client gets the honest SOCKS5 reply 0x04 (host unreachable).
"""

from __future__ import annotations

import json
import signal
import struct
from collections import Counter
from pathlib import Path

import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from support.net import free_port, listen
from support.ops import http_get
from support.properties import Properties, channel_url
from support.twistd import start, stop

BROKER_READY = b"BrokerFactory starting on"
CLIENTS = 8


class Target(protocol.Protocol):
    """Reads one ``REQ <id>`` line, counts it, answers ``OK <id>`` and closes."""

    def __init__(self, seen: Counter[str]) -> None:
        self.seen = seen
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\n" in self.buffer:
            line = self.buffer.split(b"\n", 1)[0].decode()
            self.seen[line] += 1
            self.transport.write(f"OK {line}\n".encode())
            self.transport.loseConnection()


class Socks5Request(protocol.Protocol):
    """A SOCKS5 client: no auth, CONNECT 127.0.0.1:port, then one request line.

    ``greeted`` fires once the proxy chose a method (the CONNECT is sent right after);
    ``done`` fires with (reply code, what the target answered).
    """

    def __init__(self, port: int, line: str) -> None:
        self.port = port
        self.line = line
        self.buffer = b""
        self.reply: int | None = None
        self.greeted: defer.Deferred = defer.Deferred()
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"\x05\x01\x00")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.greeted.called and len(self.buffer) >= 2:
            assert self.buffer[:2] == b"\x05\x00"
            self.buffer = self.buffer[2:]
            request = b"\x05\x01\x00\x01" + bytes([127, 0, 0, 1]) + struct.pack("!H", self.port)
            self.transport.write(request)
            self.greeted.callback(None)
        if self.greeted.called and self.reply is None and len(self.buffer) >= 10:
            self.reply = self.buffer[1]
            self.buffer = self.buffer[10:]
            if self.reply == 0:
                self.transport.write(f"{self.line}\n".encode())

    def connectionLost(self, reason=None) -> None:
        if not self.done.called:
            self.done.callback((self.reply, self.buffer.decode(errors="replace")))


async def socks_request(proxy: int, target: int, line: str) -> Socks5Request:
    client = Socks5Request(target, line)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proxy)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return client


def configs(tmp_path: Path, broker: int, proxy: int, status: int, wait: float):
    url = channel_url(broker, "outage")
    paths = {}
    for name, props in {
        "broker": Properties().broker(broker),
        "sink": Properties().sink("si", url),
        "source": Properties()
        .status(status)
        .sourcesink("so", url, serverport=proxy, peernode="si", connecttimeout=wait),
    }.items():
        paths[name] = tmp_path / f"{name}.properties"
        paths[name].write_text(str(props))
    return paths


async def waiting_opens(status: int) -> int:
    code, _, body = await http_get(f"http://127.0.0.1:{status}/status?format=json")
    assert code == 200
    (node,) = json.loads(body)["nodes"]
    return node["channel"]["waiting"]


async def until_status(status: int, waiting: int) -> None:
    """Poll the source's /status (bounded, about 20 s) until ``waiting`` OPENs wait."""
    for _ in range(400):
        if await waiting_opens(status) == waiting:
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    assert await waiting_opens(status) == waiting


class Site:
    """A broker, a sink and a source, each a real twistd process, and a counting target."""

    def __init__(self, tmp_path: Path, wait: float) -> None:
        self.broker, self.proxy, self.status = free_port(), free_port(), free_port()
        self.paths = configs(tmp_path, self.broker, self.proxy, self.status, wait)
        self.seen: Counter[str] = Counter()
        self.ports: list = []
        self.procs: list = []
        self.target = 0

    async def start(self) -> None:
        factory = protocol.Factory.forProtocol(lambda: Target(self.seen))
        self.target = await listen(factory, self.ports)
        self.procs.append(start(self.paths["broker"], 1, BROKER_READY))
        await self.procs[0].ready.addTimeout(30, reactor)
        self.procs += [start(self.paths["sink"], 1), start(self.paths["source"], 1)]
        for proc in self.procs[1:]:
            await proc.ready.addTimeout(30, reactor)

    async def kill_broker(self) -> None:
        self.procs[0].transport.signalProcess(signal.SIGKILL)
        await self.procs[0].ended.addTimeout(30, reactor)

    async def close(self) -> None:
        for proc in self.procs:
            if proc.result is None:
                proc.transport.signalProcess(signal.SIGCONT)  # a stopped one cannot stop
                await stop(proc)
        for port in self.ports:
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_connections_opened_during_a_broker_outage_succeed_once(tmp_path):
    site = Site(tmp_path, wait=20)
    try:
        await site.start()
        proxy, target, status, procs = site.proxy, site.target, site.status, site.procs
        first = await socks_request(proxy, target, "REQ before")
        assert await first.done.addTimeout(30, reactor) == (0, "OK REQ before\n")

        await site.kill_broker()
        # The sink comes back after the source: an OPEN that the source sends as soon as it is
        # reconnected finds no subscriber and is lost, unless the source sends it again.
        sink = procs[1]
        sink.transport.signalProcess(signal.SIGSTOP)
        clients = [await socks_request(proxy, target, f"REQ {i}") for i in range(CLIENTS)]
        for client in clients:
            await client.greeted.addTimeout(30, reactor)
        # Every OPEN is held by the source until the channel is back; none is answered yet.
        await until_status(status, CLIENTS)
        assert not any(c.done.called for c in clients)

        procs.append(start(site.paths["broker"], 1, BROKER_READY))
        await procs[-1].ready.addTimeout(30, reactor)
        await procs[2].seen(b"is on the channel", 2)
        # The source is back, but the OPENs still wait: for the sink to answer the source's
        # HELLO, which tells it the sink's incarnation (a restarted sink gets none of them).
        assert await waiting_opens(status) == CLIENTS
        sink.transport.signalProcess(signal.SIGCONT)
        results = [await c.done.addTimeout(60, reactor) for c in clients]
        assert results == [(0, f"OK REQ {i}\n") for i in range(CLIENTS)]
        # Each request reached the target exactly once, after the outage as before it.
        expected = {"REQ before": 1, **{f"REQ {i}": 1 for i in range(CLIENTS)}}
        assert site.seen == Counter(expected)
        assert await waiting_opens(status) == 0
    finally:
        await site.close()


@pytest_twisted.ensureDeferred
async def test_a_connection_waits_connecttimeout_then_hears_host_unreachable(tmp_path):
    site = Site(tmp_path, wait=1)
    try:
        await site.start()
        await site.kill_broker()
        client = await socks_request(site.proxy, site.target, "REQ never")
        started = reactor.seconds()
        reply, answer = await client.done.addTimeout(30, reactor)
        assert (reply, answer) == (0x04, "")
        assert reactor.seconds() - started >= 0.9  # it waited for the channel first
        assert not site.seen
        await site.procs[2].seen(b"no channel to the broker for 1s")
    finally:
        await site.close()
