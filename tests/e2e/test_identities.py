"""Node identities as a user meets them: real twistd processes, real sockets (issue 13).

Every node has its own X25519 key (``identity``) and lists the keys of the nodes it may talk
to (``peerkeys``), with and without a cluster codekey. Four processes: a broker of its own,
the sink ``si``, a source process with ``so`` (a fixed forward) and ``px`` (a SOCKS5 proxy),
and, where a test needs it, an impostor: a process that calls itself ``so`` and has the
codekey (if any) and everyone's public keys, but its own private key, which no allowlist
lists. The client and the target are sockets in this process; processes are stopped and
killed by PID; every wait is on an event (a log line, a reply, a count in ``/status``) and
bounded.

What must hold:

* with identities a request goes through end to end, by fixed forward and by SOCKS5;
* the impostor gets no stream through: its client gets the SOCKS5 reply 0x04 (host
  unreachable) within ``connecttimeout``, the target never sees its request, the sink
  counts the refused handshake (``seal-peer-key`` in ``/status``) and logs it, and the real
  ``so`` goes on working meanwhile;
* a sink restart resets the source's stream (the client sees a reset, never a FIN) and a new
  connection works afterwards;
* a source that died has its streams ended at the sink within the grace period, impostor or
  not (it fails today: the impostor's PONGs to the sink's PINGs count as ``so`` alive).
"""

from __future__ import annotations

import json
import signal
import struct
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from socketeer.wire.noise import Identity

from support.faults import (
    Outcome,
    Requests,
    client,
    http_reply_complete,
    http_request,
    http_target,
    outcome_within,
)
from support.net import free_port, listen
from support.ops import http_get
from support.properties import Properties, channel_url
from support.twistd import Twistd, start, stop

BROKER_READY = b"BrokerFactory starting on"
ON_CHANNEL = b"is on the channel"
TOPIC = "idtopic"
CODEKEY = "issue-13-identities-test-key"
#: The impostor's connecttimeout: how long its OPEN waits for a session that never comes.
IMPOSTOR_WAIT = 2
#: How the sink logs a handshake it refused (``Node._key_refusal``).
REFUSED = b"refused a session message from node so (peer-key"

CODEKEYS = pytest.mark.parametrize("codekey", [None, CODEKEY], ids=["identities", "and-codekey"])


# -- a SOCKS5 client ---------------------------------------------------------------------------


class Socks5(protocol.Protocol):
    """A SOCKS5 client: no authentication, CONNECT 127.0.0.1:``port``; ``replied`` fires with
    the reply code (None: closed without one). After a success it sends ``request`` and the
    connection is the tunnel (``data``, ``ended``)."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.buffer = b""
        self.greeted = False
        self.reply: int | None = None
        self.data = b""
        self.replied: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"\x05\x01\x00")

    def dataReceived(self, data: bytes) -> None:
        if self.reply is not None:
            self.data += data
            return
        self.buffer += data
        if not self.greeted and len(self.buffer) >= 2:
            assert self.buffer[:2] == b"\x05\x00", self.buffer
            self.greeted = True
            self.buffer = self.buffer[2:]
            self.transport.write(
                b"\x05\x01\x00\x01" + bytes([127, 0, 0, 1]) + struct.pack("!H", self.port)
            )
        if self.greeted and len(self.buffer) >= 10:
            self.reply = self.buffer[1]
            self.data, self.buffer = self.buffer[10:], b""
            if self.reply == 0:
                self.transport.write(self.request)
            self.replied.callback(self.reply)

    def connectionLost(self, reason=None) -> None:
        if not self.replied.called:
            self.replied.callback(None)  # closed without a reply
        self.ended.callback(None)


async def socks5(proxy: int, target: int, request: bytes) -> Socks5:
    """A Socks5 client connected to ``proxy``, asking for 127.0.0.1:``target``."""
    proto = Socks5(target, request)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", proxy)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: proto))
    return proto


# -- the site ----------------------------------------------------------------------------------


def peerkeys(keys: dict[str, Identity]) -> str:
    """The ``peerkeys`` value listing ``keys`` (inline: ``node=publickey`` entries)."""
    return ", ".join(f"{node}={key.public_text()}" for node, key in keys.items())


class Site:
    """A broker, the sink ``si``, a source process (``so`` forward, ``px`` SOCKS5) and, on
    demand, an impostor ``so`` with a SOCKS5 port; each its own twistd, with identities."""

    def __init__(self, tmp_path: Path, target: int, codekey: str | None, **keys: object) -> None:
        """``keys``: more sourcesink keys for every node (``graceperiod=2``, say)."""
        self.tmp_path = tmp_path
        self.more = keys
        self.target = target
        self.broker = free_port()
        self.forward, self.proxy, self.impostor_proxy = free_port(), free_port(), free_port()
        self.status = {"sink": free_port(), "source": free_port(), "impostor": free_port()}
        query = "" if codekey is None else f"?codekey={codekey}"
        self.url = channel_url(self.broker, TOPIC) + query
        self.keys = {name: Identity.generate() for name in ("si", "so", "px")}
        self.impostor_key = Identity.generate()
        self.procs: dict[str, Twistd] = {}
        self.paths: dict[str, Path] = {}
        self._write_configs()

    def _node(self, key: Identity, allowed: dict[str, Identity]) -> dict[str, object]:
        return {"identity": key.to_text(), "peerkeys": peerkeys(allowed), **self.more}

    def _write_configs(self) -> None:
        keys = self.keys
        # The impostor lists everyone's public keys (they are public) and itself as ``so``.
        impostor_allows = {**keys, "so": self.impostor_key}
        texts = {
            "broker": Properties().broker(self.broker),
            "sink": Properties()
            .status(self.status["sink"])
            .sink("si", self.url, **self._node(keys["si"], keys)),
            "source": Properties()
            .status(self.status["source"])
            .sourcesink(
                "so",
                self.url,
                serverport=self.forward,
                peernode="si",
                fixedHost="127.0.0.1",
                fixedPort=self.target,
                **self._node(keys["so"], keys),
            )
            .sourcesink(
                "px",
                self.url,
                serverport=self.proxy,
                peernode="si",
                **self._node(keys["px"], keys),
            ),
            # Sourcesink "imp" under node name "so": only the key is not so's.
            "impostor": Properties()
            .status(self.status["impostor"])
            .sourcesink(
                "imp",
                self.url,
                nodename="so",
                serverport=self.impostor_proxy,
                peernode="si",
                connecttimeout=IMPOSTOR_WAIT,
                **self._node(self.impostor_key, impostor_allows),
            ),
        }
        for name, props in texts.items():
            self.paths[name] = self.tmp_path / f"{name}.properties"
            self.paths[name].write_text(str(props))

    async def start(self, *names: str) -> None:
        """Start ``names`` in order, each once it is ready (the source has two nodes)."""
        for name in names:
            if name == "broker":
                proc = start(self.paths[name], 1, BROKER_READY)
            else:
                proc = start(self.paths[name], 2 if name == "source" else 1)
            self.procs[name] = proc
            await proc.ready.addTimeout(30, reactor)

    async def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.transport.signalProcess(signal.SIGKILL)
        await proc.ended.addTimeout(30, reactor)

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.result is None:
                await stop(proc)

    async def node(self, process: str, name: str) -> dict:
        """Node ``name``'s part of ``process``'s ``/status``."""
        url = f"http://127.0.0.1:{self.status[process]}/status?format=json"
        code, _, body = await http_get(url)
        assert code == 200
        (node,) = [n for n in json.loads(body)["nodes"] if n["node"] == name]
        return node

    async def until_counter(self, process: str, name: str, counter: str, timeout=15) -> int:
        """Poll (bounded) until node ``name`` of ``process`` counts ``counter``; its value."""
        deadline = reactor.seconds() + timeout
        while True:
            node = await self.node(process, name)
            value = node["counters"].get(counter, 0)
            if value:
                return value
            assert reactor.seconds() < deadline, (
                f"{process}/{name} counted no {counter} in {timeout}s: {node['counters']}"
            )
            await task.deferLater(reactor, 0.05, lambda: None)


async def request_through_forward(site: Site, path: str) -> None:
    """One HTTP request through ``so``'s fixed forward, answered in full; then closed."""
    user = await client(site.forward)
    user.transport.write(http_request("POST", path, b"x=1"))
    await user.until(http_reply_complete)
    user.transport.loseConnection()
    await outcome_within(user, 15)


async def request_through_socks(site: Site, proxy: int, path: str) -> Socks5:
    """An HTTP request through a SOCKS5 port (sent if the proxy says yes): the client, once
    connected to the proxy; ``replied`` tells the rest."""
    return await socks5(proxy, site.target, http_request("POST", path, b"x=1"))


# -- (a) identities carry streams ---------------------------------------------------------------


@CODEKEYS
@pytest_twisted.ensureDeferred
async def test_streams_go_through_between_nodes_with_identities(
    tmp_path: Path, codekey: str | None
) -> None:
    """Every node with its own key and the others' in peerkeys: a fixed-forward request and
    a SOCKS5 request each reach the target once and come back whole; nothing is refused."""
    requests, ports = Requests(), []
    site = Site(tmp_path, await http_target(requests, ports), codekey)
    try:
        await site.start("broker", "sink", "source")
        await request_through_forward(site, "/forward")
        user = await request_through_socks(site, site.proxy, "/socks")
        assert await user.replied.addTimeout(15, reactor) == 0, f"SOCKS5 reply {user.reply}"
        await _until(lambda: http_reply_complete(user.data), "the SOCKS5 reply")
        user.transport.loseConnection()
        assert requests.lines == {"POST /forward HTTP/1.1": 1, "POST /socks HTTP/1.1": 1}
        sink = await site.node("sink", "si")
        refused = {k: v for k, v in sink["counters"].items() if k.startswith("seal-")}
        assert not refused, f"the sink refused {refused}"
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


async def _until(condition, what: str, timeout: float = 15) -> None:
    deadline = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < deadline, f"no {what} within {timeout}s"
        await task.deferLater(reactor, 0.02, lambda: None)


# -- (b) an impostor gets nothing through -------------------------------------------------------


@CODEKEYS
@pytest_twisted.ensureDeferred
async def test_an_impostor_with_the_right_name_but_its_own_key_gets_no_stream_through(
    tmp_path: Path, codekey: str | None
) -> None:
    """The impostor (node name ``so``, the codekey if any, its own key) is on the broker
    before the sink, so it hears the sink's HELLO and runs a handshake with it: the sink
    refuses it (``peer-key``) and says so. Its SOCKS5 client gets 0x04 within its
    ``connecttimeout``; the target never sees its request; the real ``so`` works before,
    during and after. An impostor that starts later (the sink then starts the handshake,
    which only the real ``so`` can answer) gets nothing through either."""
    requests, ports = Requests(), []
    site = Site(tmp_path, await http_target(requests, ports), codekey)
    try:
        await site.start("broker", "impostor", "sink", "source")
        assert await site.until_counter("sink", "si", "seal-peer-key") >= 1
        await site.procs["sink"].seen(REFUSED, timeout=5)
        await request_through_forward(site, "/real-before")

        started = reactor.seconds()
        intruder = await request_through_socks(site, site.impostor_proxy, "/impostor")
        # The real so, while the impostor's OPEN waits for a session.
        await request_through_forward(site, "/real-during")
        await intruder.replied.addTimeout(IMPOSTOR_WAIT + 10, reactor)
        took = reactor.seconds() - started
        assert intruder.reply == 0x04, (
            f"the impostor's client got SOCKS5 reply {intruder.reply} after {took:.1f}s"
        )
        assert took < IMPOSTOR_WAIT + 5, f"the impostor's client waited {took:.1f}s"
        await intruder.ended.addTimeout(10, reactor)

        # A late impostor: the sink is up, so it answers the impostor's HELLO with a
        # handshake of its own, encrypted to so's real key; the impostor cannot read it.
        await site.kill("impostor")
        await site.start("impostor")
        late = await request_through_socks(site, site.impostor_proxy, "/impostor-late")
        await late.replied.addTimeout(IMPOSTOR_WAIT + 10, reactor)
        assert late.reply == 0x04, f"the late impostor's client got SOCKS5 reply {late.reply}"
        # The sink's handshake failed at the impostor, which says so.
        await site.procs["impostor"].seen(b"refused a session message from node si", timeout=5)
        await request_through_forward(site, "/real-after")

        assert requests.lines == {
            "POST /real-before HTTP/1.1": 1,
            "POST /real-during HTTP/1.1": 1,
            "POST /real-after HTTP/1.1": 1,
        }, f"the target saw {dict(requests.lines)}"
        source = await site.node("source", "so")
        assert not source["counters"].get("session-resets"), source["counters"]
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


# -- (c) a sink restart ---------------------------------------------------------------------------


@CODEKEYS
@pytest_twisted.ensureDeferred
async def test_a_sink_restart_resets_the_stream_and_a_new_connection_works(
    tmp_path: Path, codekey: str | None
) -> None:
    """A kept-alive client has its answer; the sink is SIGKILLed and started again (same
    key, new incarnation). The kept connection must end in a reset (its far end is gone and
    a new session never takes over an old stream), the request must not run again, and a new
    connection must work."""
    requests, ports = Requests(), []
    site = Site(tmp_path, await http_target(requests, ports), codekey)
    try:
        await site.start("broker", "sink", "source")
        kept = await client(site.forward)
        kept.transport.write(http_request("POST", "/orders?item=42", b"qty=1"))
        await kept.until(http_reply_complete)

        await site.kill("sink")
        await site.start("sink")
        outcome: Outcome = await outcome_within(kept, 15)
        assert outcome.reset, f"the kept connection ended: {outcome}"

        await request_through_forward(site, "/orders?item=43")
        assert requests.lines == {
            "POST /orders?item=42 HTTP/1.1": 1,
            "POST /orders?item=43 HTTP/1.1": 1,
        }, f"the target saw {dict(requests.lines)}"
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


# -- an impostor must not keep a dead peer's streams alive ----------------------------------------

GRACE = 2


class KeptTarget(protocol.Protocol):
    """A target that answers one line and keeps the connection; ``lost`` fires when it ends."""

    def __init__(self, lost: defer.Deferred) -> None:
        self.lost = lost

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"ok\n")

    def connectionLost(self, reason=None) -> None:
        if not self.lost.called:
            self.lost.callback(reactor.seconds())


@pytest.mark.parametrize(
    "impostor",
    [
        False,
        True,
    ],
    ids=["alone", "impostor-on-the-bus"],
)
@pytest_twisted.ensureDeferred
async def test_a_dead_sources_stream_ends_at_the_sink_within_the_grace_period(
    tmp_path: Path, impostor: bool
) -> None:
    """The source process is SIGKILLed for good while a kept-alive stream is open. The
    sink must give up on it within ``graceperiod`` (plus pings and a second): the target's
    connection ends. With an impostor under ``so``'s name on the bus (it gets what the sink
    sends to ``so``, and answers what it can), it must end all the same."""
    lost: defer.Deferred = defer.Deferred()
    ports: list = []
    factory = protocol.Factory.forProtocol(lambda: KeptTarget(lost))
    target = await listen(factory, ports)
    site = Site(tmp_path, target, CODEKEY, graceperiod=GRACE, pinginterval=0.5)
    try:
        await site.start("broker", "sink", "source", *(["impostor"] if impostor else []))
        user = await client(site.forward)
        user.transport.write(b"hello\n")
        await user.until(lambda data: data == b"ok\n")
        await site.kill("source")
        died = reactor.seconds()
        try:
            ended = await lost.addTimeout(GRACE + 8, reactor)
        except defer.TimeoutError:
            pytest.fail(f"the target's connection was still open {GRACE + 8}s after so died")
        assert ended - died < GRACE + 3, f"the target's connection ended after {ended - died:.1f}s"
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()
