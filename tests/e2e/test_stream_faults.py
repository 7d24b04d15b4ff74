"""Streams under faults, as a user meets them: real twistd processes, real sockets (issue 13).

Each test runs the layout of ``etc/examples/sink.properties`` + ``source.properties`` (the
broker and sink ``si`` in one process, the fixed-forward source ``so`` in another) or, where
the broker must die on its own, a broker process of its own. The client and the target are
sockets in this process; processes are stopped and killed by PID. Every wait is on an event
(a log line, a reply, a RECEIPT, a swallowed frame, the source's /status) and bounded.

What must hold, whatever goes wrong underneath:

* a request reaches its target at most once: a sink restart does not replay it, and frames
  recorded at the broker are no use after one;
* a client gets every byte and a FIN, or a reset; a clean FIN after a truncated answer is a
  lie the application cannot detect;
* different (valid) windows at the two ends do not stall a transfer;
* a target's reset, and a stream that had to be abandoned, reach the client as a reset.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from support.faults import (
    Outcome,
    Requests,
    SwallowingLink,
    client,
    http_reply_complete,
    http_request,
    http_target,
    outcome_within,
    recorder,
)
from support.net import Bulk, Digest, Echo, MiB, free_port, listen
from support.ops import http_get
from support.properties import Properties, channel_url
from support.twistd import Twistd, start, stop

BROKER_READY = b"BrokerFactory starting on"
ON_CHANNEL = b"is on the channel"
TOPIC = "sisotopic"  # as in etc/examples
CODEKEY = "issue-13-replay-test-key"


class Site:
    """A sink ``si`` and a fixed-forward source ``so`` to one target port, each its own twistd.

    ``broker_alone``: the broker runs in a third process and the sink reaches it through
    ``link`` (a SwallowingLink in this process); otherwise the broker runs with the sink, as
    in ``etc/examples/sink.properties``.
    """

    def __init__(
        self,
        tmp_path: Path,
        target: int,
        *,
        sink: dict[str, object] | None = None,
        source: dict[str, object] | None = None,
        query: str = "",
        broker_alone: bool = False,
    ) -> None:
        self.tmp_path = tmp_path
        self.broker, self.forward, self.status = free_port(), free_port(), free_port()
        self.broker_alone = broker_alone
        self.link: SwallowingLink | None = SwallowingLink(self.broker) if broker_alone else None
        self.link_port = 0
        self.target = target
        self.sink_keys = sink or {}
        self.source_keys = source or {}
        self.query = query
        self.procs: dict[str, Twistd] = {}
        self.ports: list = []
        self.paths: dict[str, Path] = {}

    def _url(self, port: int) -> str:
        return channel_url(port, TOPIC) + self.query

    def _write_configs(self) -> None:
        url = self._url(self.broker)
        sink_url = self._url(self.link_port) if self.broker_alone else url
        texts = {
            "sink": Properties().sink("si", sink_url, **self.sink_keys),
            "source": Properties()
            .status(self.status)
            .sourcesink(
                "so",
                url,
                serverport=self.forward,
                peernode="si",
                fixedHost="127.0.0.1",
                fixedPort=self.target,
                **self.source_keys,
            ),
        }
        if self.broker_alone:
            texts["broker"] = Properties().broker(self.broker)
        else:
            texts["sink"] = Properties().broker(self.broker).add(str(texts["sink"]))
        for name, props in texts.items():
            self.paths[name] = self.tmp_path / f"{name}.properties"
            self.paths[name].write_text(str(props))

    def start_process(self, name: str) -> Twistd:
        if name == "broker":
            proc = start(self.paths[name], 1, BROKER_READY)
        else:
            proc = start(self.paths[name], 1)
        self.procs[name] = proc
        return proc

    async def start(self) -> None:
        if self.link is not None:
            self.link_port = await listen(self.link, self.ports)
        self._write_configs()
        if self.broker_alone:
            await self.start_process("broker").ready.addTimeout(30, reactor)
        await self.start_process("sink").ready.addTimeout(30, reactor)
        await self.start_process("source").ready.addTimeout(30, reactor)

    def send_signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].transport.signalProcess(sig)

    async def kill(self, name: str) -> None:
        """SIGKILL ``name``: no goodbye to its peers, its sockets' contents lost."""
        proc = self.procs.pop(name)
        proc.transport.signalProcess(signal.SIGKILL)
        await proc.ended.addTimeout(30, reactor)

    async def restart(self, name: str) -> Twistd:
        """SIGKILL ``name`` and start it again with the same configuration (same ports)."""
        await self.kill(name)
        proc = self.start_process(name)
        await proc.ready.addTimeout(30, reactor)
        return proc

    async def close(self) -> None:
        for proc in self.procs.values():
            if proc.result is None:
                proc.transport.signalProcess(signal.SIGCONT)  # a stopped one cannot stop
                await stop(proc)
        for port in self.ports:
            await port.stopListening()

    async def source_streams(self) -> list:
        """The source's live streams, as its /status shows them."""
        code, _, body = await http_get(f"http://127.0.0.1:{self.status}/status?format=json")
        assert code == 200
        (node,) = json.loads(body)["nodes"]
        return node["streams"]

    async def until_source_idle(self, timeout: float = 10) -> None:
        """Poll the source's /status (bounded) until it carries no stream: every client it
        served has been seen to go."""
        deadline = reactor.seconds() + timeout
        while streams := await self.source_streams():
            assert reactor.seconds() < deadline, f"the source still has {streams}"
            await task.deferLater(reactor, 0.05, lambda: None)


# -- 1. a sink restart must not replay a request -------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_sink_restart_does_not_replay_a_request(tmp_path: Path) -> None:
    """Reproduction 1. The client keeps its HTTP connection open after the reply (keep-alive,
    as browsers and pools do), the broker+sink process is killed and started again. The POST
    must reach the target once; the kept connection, whose far end is gone, ends in a reset.

    The source is stopped while the sink restarts, so it comes back after the new sink is
    subscribed (as it does whenever its reconnect backoff is longer than the restart): what
    it sends on reconnecting then certainly reaches the new sink.
    """
    requests, ports = Requests(), []
    site = Site(tmp_path, await http_target(requests, ports))
    try:
        await site.start()
        first = await client(site.forward)
        first.transport.write(http_request("POST", "/orders?item=42", b"qty=1"))
        await first.until(http_reply_complete)
        assert requests.lines == {"POST /orders?item=42 HTTP/1.1": 1}

        site.send_signal("source", signal.SIGSTOP)
        await site.restart("sink")
        site.send_signal("source", signal.SIGCONT)
        await site.procs["source"].seen(ON_CHANNEL, 2)
        # A fresh request end to end: the channel and both nodes are back. What the source
        # sent on reconnecting went out before this request was even accepted.
        second = await client(site.forward)
        second.transport.write(http_request("POST", "/orders?item=43", b"qty=1"))
        await second.until(http_reply_complete)
        second.transport.loseConnection()
        outcome: Outcome = await outcome_within(first, 15)

        assert requests.lines == {
            "POST /orders?item=42 HTTP/1.1": 1,
            "POST /orders?item=43 HTTP/1.1": 1,
        }, (
            f"the target saw {dict(requests.lines)} on {requests.connections} connections;"
            f" the kept connection ended: {outcome}"
        )
        assert outcome.reset, f"the kept connection ended: {outcome}"
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


# -- 2. a truncated answer must never end in a clean FIN -----------------------------------

ANSWER = 100_000


@implementer(IHalfCloseableProtocol)
class Answering(protocol.Protocol):
    """A target that waits for the client's whole request (its FIN), then tells ``asked``;
    the test decides when it answers (``answer``): ANSWER bytes, then close."""

    def __init__(self, asked: defer.Deferred) -> None:
        self.asked = asked

    def readConnectionLost(self) -> None:
        self.asked.callback(self)

    def writeConnectionLost(self) -> None:
        pass

    def answer(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.loseConnection()


@pytest.mark.parametrize("broker_back", [True, False], ids=["broker-restarted", "broker-gone"])
@pytest_twisted.ensureDeferred
async def test_an_answer_lost_with_the_broker_is_not_a_clean_fin(
    tmp_path: Path, broker_back: bool
) -> None:
    """Reproduction 2. The client sends its request and half-closes; the target answers
    100,000 bytes and closes; the sink's DATA, EOF and CLOSE are swallowed on their way into
    the broker (they sat in its socket), and the broker is killed. Restarted or not, the
    client must get all 100,000 bytes and a FIN, or a reset, and within a bounded time: the
    grace period is short when the broker stays away."""
    asked: defer.Deferred = defer.Deferred()
    ports: list = []
    target = await listen(protocol.Factory.forProtocol(lambda: Answering(asked)), ports)
    grace = 8 if broker_back else 2
    keys = {"graceperiod": grace, "pinginterval": 0.5}
    site = Site(tmp_path, target, sink=keys, source=keys, broker_alone=True)
    payload = os.urandom(ANSWER)
    try:
        await site.start()
        assert site.link is not None
        user = await client(site.forward)
        user.transport.write(b"GET /report\n")
        user.transport.loseWriteConnection()
        answering: Answering = await asked.addTimeout(15, reactor)

        site.link.swallow()
        answering.answer(payload)
        await site.link.wait_swallowed("close")
        await site.kill("broker")
        started = reactor.seconds()
        if broker_back:
            site.start_process("broker")
            await site.procs["broker"].ready.addTimeout(30, reactor)
        outcome: Outcome = await outcome_within(user, 15)

        took = reactor.seconds() - started
        swallowed = site.link.dropped_types()
        complete = outcome.fin and outcome.data == payload
        assert outcome.reset or complete, (
            f"the client got {outcome} after {took:.1f}s (the answer was {ANSWER} bytes;"
            f" swallowed on the sink's way to the broker: {swallowed})"
        )
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


# -- 3. different windows must not stall a transfer ----------------------------------------

UPLOAD = 12 * MiB
SINK_WINDOW = 64 * MiB  # the largest window the configuration allows; the source keeps 4 MiB
#: Seconds a 12 MiB loopback upload may take (it needs well under one when it flows).
STALLED = 12


class Counting(Digest):
    """A Digest target kept in ``seen``, where the test reads how far the upload got."""

    def __init__(self, seen: list[Counting]) -> None:
        super().__init__()
        seen.append(self)


@pytest_twisted.ensureDeferred
async def test_an_upload_completes_when_the_sink_has_a_larger_window(tmp_path: Path) -> None:
    """Reproduction 3. A 12 MiB upload through a source with the default 4 MiB window to a
    sink configured with 64 MiB (both valid) must reach the target whole, and soon."""
    ports: list = []
    seen: list[Counting] = []
    factory = protocol.Factory.forProtocol(lambda: Counting(seen))
    site = Site(tmp_path, await listen(factory, ports), sink={"window": SINK_WINDOW})
    try:
        await site.start()
        user = await client(site.forward)
        bulk = Bulk(user.transport, UPLOAD)
        try:
            outcome: Outcome = await user.ended.addTimeout(STALLED, reactor)
        except defer.TimeoutError:
            got = sum(t.n for t in seen)
            written = UPLOAD - max(bulk.left, 0)
            pytest.fail(
                f"the upload stalled: after {STALLED}s the target had {got} of {UPLOAD} bytes"
                f" (the client had written {written})"
            )
        assert outcome.fin
        assert outcome.data.decode() == f"{UPLOAD} {bulk.digest.hexdigest()}"
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


# -- 5. frames recorded at the broker must be no use after a restart ---------------------------


@pytest_twisted.ensureDeferred
async def test_recorded_frames_replayed_after_a_sink_restart_do_not_reach_the_target(
    tmp_path: Path,
) -> None:
    """Reproduction 5. With a codekey, someone with access to the broker records the sealed
    frames of a payment (subscribing to the sink's destination) and publishes them again:
    the running sink refuses them; after it restarted, they must be refused too."""
    requests, ports = Requests(), []
    query = f"?codekey={CODEKEY}"
    site = Site(tmp_path, await http_target(requests, ports), query=query)
    payment = "POST /api/payments HTTP/1.1"

    async def through_tunnel(path: str) -> None:
        """One request end to end; also a barrier: what the broker routed to the sink before
        it has been handled by the time the answer is back."""
        user = await client(site.forward)
        user.transport.write(http_request("GET", path))
        await user.until(http_reply_complete)
        user.transport.loseConnection()
        await outcome_within(user, 15)

    try:
        await site.start()
        spy = await recorder(site.broker, TOPIC, "c", "si", "so")
        spy.recording = True
        user = await client(site.forward)
        user.transport.write(http_request("POST", "/api/payments", b"amount=100&to=mallory"))
        await user.until(http_reply_complete)
        spy.recording = False
        user.transport.loseConnection()
        await outcome_within(user, 15)
        frames = list(spy.recorded)
        assert frames, "nothing was recorded at the broker"
        assert not any(b"/api/payments" in f.body for f in frames), "the frames are not sealed"

        await spy.replay(frames)
        await through_tunnel("/after-first-replay")
        assert requests.lines[payment] == 1, "the running sink took a replayed payment"
        # No stream of the source's own may live on into the restart (that is reproduction
        # 1): only the recorded frames could bring the payment back.
        await site.until_source_idle()

        site.send_signal("source", signal.SIGSTOP)  # back only once the new sink is subscribed
        await site.restart("sink")
        site.send_signal("source", signal.SIGCONT)
        await site.procs["source"].seen(ON_CHANNEL, 2)
        await through_tunnel("/after-restart")
        spy = await recorder(site.broker, TOPIC, "c", "si", "so")
        await spy.replay(frames)
        await through_tunnel("/after-second-replay")

        assert requests.lines[payment] == 1, (
            f"the target saw the payment {requests.lines[payment]} times"
            f" ({len(frames)} frames replayed); all requests: {dict(requests.lines)}"
        )
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


# -- item 8, and aborts: a reset must reach the client as a reset --------------------------


class Resetting(protocol.Protocol):
    """A target that reads the first bytes and resets the connection (RST), as a crashed or
    overloaded server does."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_a_targets_reset_reaches_the_client_as_a_reset(tmp_path: Path) -> None:
    """The client must be able to tell "the server reset the connection" from "the server
    finished": the target's RST comes out of the source as a RST."""
    ports: list = []
    target = await listen(protocol.Factory.forProtocol(Resetting), ports)
    site = Site(tmp_path, target)
    try:
        await site.start()
        user = await client(site.forward)
        user.transport.write(b"GET / HTTP/1.0\r\n\r\n")
        outcome: Outcome = await outcome_within(user, 15)
        assert outcome.reset, f"the client got {outcome}"
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_stream_whose_sink_is_gone_ends_in_a_reset(tmp_path: Path) -> None:
    """The broker+sink process dies for good mid-conversation. After the (short) grace period
    the source abandons the stream, and the client must see that as a reset: its peer did
    not finish, the stream was aborted."""
    ports: list = []
    target = await listen(protocol.Factory.forProtocol(Echo), ports)
    keys = {"graceperiod": 2, "pinginterval": 0.5}
    site = Site(tmp_path, target, sink=keys, source=keys)
    try:
        await site.start()
        user = await client(site.forward)
        user.transport.write(b"hello\n")
        await user.until(lambda data: data == b"hello\n")
        await site.kill("sink")
        started = reactor.seconds()
        outcome: Outcome = await outcome_within(user, 15)
        took = reactor.seconds() - started
        assert outcome.reset, f"the client got {outcome} after {took:.1f}s"
    finally:
        await site.close()
        for port in ports:
            await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_the_client_tells_a_reset_from_a_fin() -> None:
    """The yardstick of the tests above, checked without a tunnel: a server's RST is a reset
    and its FIN is not, so a test that wants a reset cannot pass on a FIN, nor the reverse."""
    ports: list = []
    try:
        resetting = await listen(protocol.Factory.forProtocol(Resetting), ports)
        echo = await listen(protocol.Factory.forProtocol(Echo), ports)
        user = await client(resetting)
        user.transport.write(b"GET / HTTP/1.0\r\n\r\n")
        assert await outcome_within(user, 10) == Outcome(b"", fin=False, reset=True)
        user = await client(echo)
        user.transport.write(b"hello\n")
        user.transport.loseWriteConnection()
        assert await outcome_within(user, 10) == Outcome(b"hello\n", fin=True, reset=False)
    finally:
        for port in ports:
            await port.stopListening()
