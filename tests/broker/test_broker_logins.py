"""Broker logins through socketeer.logins, over real sockets: a CONNECT's passcode is hashed off
the reactor thread, failures lock an address out, and every outcome is counted.

The broker runs on the real reactor; the logins' clock is a Clock, so a lockout ends when the
test advances it (nothing sleeps). The hash runs in the reactor's thread pool through a runner
that records the thread, or waits until the test releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest_twisted
from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThreadPool

from socketeer.app import build_service
from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.config.load import parse_config
from socketeer.config.model import LoginLimits
from socketeer.logins import Logins
from socketeer.ops.metrics import LoginCollector
from socketeer.passwords import hash_password

from support.net import listen
from support.security import RawStomp

PASSCODE = "s3cret-pass"
HASHED = hash_password(PASSCODE, iterations=2000)
LOCKED_OUT = "Authentication refused: too many failed logins from this address, try again later"


class ThreadRunner:
    """Runs each hash in the reactor's thread pool, noting the thread; ``hold`` keeps the
    answers until ``release()``."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.threads: list[int] = []
        self.held: list[tuple[defer.Deferred, Any]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        def run() -> Any:
            self.threads.append(threading.get_ident())
            return f(*args)

        d = deferToThreadPool(reactor, reactor.getThreadPool(), run)
        if not self.hold:
            return d
        waiting: defer.Deferred = defer.Deferred()

        def keep(result: Any) -> None:
            self.held.append((waiting, result))

        d.addCallback(keep)
        return waiting

    def release(self) -> None:
        held, self.held = self.held, []
        for d, result in held:
            d.callback(result)


class Broker:
    """A broker with one user (``alice``, hashed passcode) whose logins go through a Logins
    on a Clock."""

    def __init__(self, limits: LoginLimits, runner: ThreadRunner) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.runner = runner
        self.logins = Logins(limits, self.clock, run=runner)
        self.factory = BrokerFactory(Router(), reactor, users={"alice": HASHED}, logins=self.logins)
        self.ports: list = []

    async def start(self) -> int:
        self.port = await listen(self.factory, self.ports)
        return self.port

    async def stop(self) -> None:
        for proto in list(self.factory.connections):
            proto.transport.abortConnection()
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])

    async def client(self, source: str = "127.0.0.1") -> RawStomp:
        proto = RawStomp()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, bindAddress=(source, 0))
        await endpoint.connect(protocol.Factory.forProtocol(lambda: proto))
        return proto

    async def login(
        self, passcode: str, login: str = "alice", source: str = "127.0.0.1", after: bytes = b""
    ) -> RawStomp:
        client = await self.client(source)
        head = f"CONNECT\naccept-version:1.2\nhost:h\nlogin:{login}\npasscode:{passcode}\n\n"
        client.transport.write(head.encode() + b"\0" + after)
        return client

    def metrics(self) -> str:
        registry = CollectorRegistry()
        registry.register(LoginCollector(self.logins))
        return generate_latest(registry).decode()


async def refused_with(client: RawStomp) -> str:
    frames = await client.lost.addTimeout(10, reactor)
    assert [f.command for f in frames] == ["ERROR"]
    return frames[0].headers["message"]


async def connected(client: RawStomp) -> None:
    await client.expect("CONNECTED")
    client.transport.loseConnection()
    await client.lost


@pytest_twisted.async_yield_fixture
async def broker():
    b = Broker(LoginLimits(max_failures=3, failure_window=60, lockout=300), ThreadRunner())
    await b.start()
    yield b
    await b.stop()


@pytest_twisted.ensureDeferred
async def test_failures_lock_the_address_out_until_the_lockout_ends(broker):
    for wrong in ("guess", "guess2", "guess3"):
        assert await refused_with(await broker.login(wrong)) == "Authentication failed"
    # Now even the right passcode is refused, with its own message, and costs no hash.
    hashes = len(broker.runner.threads)
    assert await refused_with(await broker.login(PASSCODE)) == LOCKED_OUT
    assert await refused_with(await broker.login("guess4", login="nobody")) == LOCKED_OUT
    assert len(broker.runner.threads) == hashes
    # Another address is not locked out.
    await connected(await broker.login(PASSCODE, source="127.0.0.2"))

    broker.clock.advance(299)
    assert await refused_with(await broker.login(PASSCODE)) == LOCKED_OUT
    broker.clock.advance(2)
    await connected(await broker.login(PASSCODE))

    counts = broker.logins.counts
    assert counts["broker", "failed"] == 3
    assert counts["broker", "locked-out"] == 3
    assert counts["broker", "ok"] == 2  # 127.0.0.2, then 127.0.0.1 (the cache has expired)
    text = broker.metrics()
    assert 'socketeer_logins_total{door="broker",outcome="locked-out"} 3.0' in text
    assert 'socketeer_logins_total{door="broker",outcome="failed"} 3.0' in text
    refused = broker.factory.admission.refused
    assert refused["authentication"] == 3 and refused["login-locked-out"] == 3


@pytest_twisted.ensureDeferred
async def test_passcodes_are_hashed_off_the_reactor_thread(broker):
    await connected(await broker.login(PASSCODE))
    assert await refused_with(await broker.login("wrong", login="nobody")) == (
        "Authentication failed"
    )
    main = threading.get_ident()
    assert len(broker.runner.threads) == 2  # an unknown login costs a hash too
    assert main not in broker.runner.threads


@pytest_twisted.ensureDeferred
async def test_the_reactor_serves_others_while_a_login_hashes_and_pipelined_frames_wait():
    runner = ThreadRunner()
    b = Broker(LoginLimits(), runner)
    await b.start()
    try:
        other = await b.login(PASSCODE)
        await other.expect("CONNECTED")
        runner.hold = True
        # A SUBSCRIBE with a receipt right behind the CONNECT, in the same write.
        late = await b.login(
            PASSCODE.upper(),  # not cached: a new hash, held
            after=b"SUBSCRIBE\nid:1\ndestination:/queue/q\nreceipt:r1\n\n\0",
        )
        while not runner.held:
            await deferLater(0.01)
        # Meanwhile the broker answers the connected client.
        other.send("SEND", {"destination": "/queue/q", "receipt": "r0"}, b"hello")
        receipt = await other.expect("RECEIPT")
        assert receipt.headers["receipt-id"] == "r0"
        assert not late.frames
        runner.release()
        assert await refused_with(late) == "Authentication failed"  # and the SUBSCRIBE unread

        ok = await b.login(
            PASSCODE, after=b"SUBSCRIBE\nid:1\ndestination:/queue/q\nreceipt:r1\n\n\0"
        )
        await ok.expect("RECEIPT")  # handled once the login was done (here: from the cache)
        message = await ok.expect("MESSAGE")
        assert message.body == b"hello"
        other.transport.loseConnection()
        ok.transport.loseConnection()
        await defer.gatherResults([other.lost, ok.lost])
    finally:
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_pipelined_frames_wait_for_a_login_that_hashes_in_a_thread():
    runner = ThreadRunner(hold=True)
    b = Broker(LoginLimits(), runner)
    await b.start()
    try:
        client = await b.login(
            PASSCODE, after=b"SUBSCRIBE\nid:1\ndestination:/topic/t\nreceipt:r1\n\n\0"
        )
        while not runner.held:
            await deferLater(0.01)
        assert not client.frames
        runner.release()
        await client.expect("CONNECTED")
        receipt = await client.expect("RECEIPT")
        assert receipt.headers["receipt-id"] == "r1"
        assert [f.command for f in client.frames] == ["CONNECTED", "RECEIPT"]
        client.transport.loseConnection()
        await client.lost
    finally:
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_too_many_logins_waiting_for_a_hash_are_refused_at_once():
    runner = ThreadRunner(hold=True)
    b = Broker(LoginLimits(threads=1, max_pending=1), runner)
    await b.start()
    try:
        first = await b.login(PASSCODE)
        while not runner.held:
            await deferLater(0.01)
        second = await b.login(PASSCODE)
        assert await refused_with(second) == "Authentication refused: server busy, try again later"
        runner.release()
        await connected(first)
        assert b.logins.counts["broker", "busy"] == 1
        assert b.factory.admission.refused["login-busy"] == 1
    finally:
        await b.stop()


@pytest_twisted.ensureDeferred
async def test_bytes_behind_a_connect_being_checked_are_bounded():
    runner = ThreadRunner(hold=True)
    b = Broker(LoginLimits(), runner)
    await b.start()
    try:
        client = await b.login(PASSCODE)
        while not runner.held:
            await deferLater(0.01)
        client.transport.write(b"x" * (1 << 20))
        await deferLater(0.2)  # time to read it, were reading not paused
        (proto,) = b.factory.connections
        assert proto._parser.buffered == 0  # it waits in the kernel
        runner.release()
        frames = await client.lost.addTimeout(10, reactor)
        assert [f.command for f in frames] == ["CONNECTED", "ERROR"]  # "x..." is no frame
    finally:
        await b.stop()


def test_a_socketeer_process_checks_broker_logins_through_its_logins():
    props = (
        "socketeer.general.messagingserverenabled=true\n"
        "socketeer.general.messagingserverport=tcp:0:interface=127.0.0.1\n"
        f"socketeer.general.messagingserveruser.alice={HASHED}\n"
        "socketeer.general.loginmaxfailures=4\n"
    )
    root = build_service(parse_config(props, "<test>"), reactor)
    factory = root.getServiceNamed("broker").factory
    door = factory._settings.auth.door
    assert door is not None and door.name == "broker" and door.logins is root.logins
    assert root.logins.limits.max_failures == 4


def deferLater(seconds: float) -> defer.Deferred:
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)
