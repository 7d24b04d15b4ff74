"""A fuzzer for the broker's state machine: random frame sequences through real BrokerProtocols.

Hypothesis drives two clients of one BrokerFactory (over StringTransports, on a Clock)
with CONNECT/STOMP (good, bad and missing credentials, any version), SUBSCRIBE,
UNSUBSCRIBE, SEND, ACK/NACK, BEGIN/COMMIT/ABORT, DISCONNECT, heart-beats, garbage and the
passing of time, each feed cut at a random point. In the second test passcodes go through a
:class:`socketeer.logins.Logins` whose hashes wait until a step lets them finish (as a
thread pool would answer, later), so that frames, time and losses also hit a connection
whose login is being checked, and failures lock an address out. After every step: no
exception escaped, everything the broker wrote parses as STOMP server frames, nothing
follows an ERROR, and
every per-connection state (subscriptions, transactions, held and buffered bytes) and the
router stay within their bounds; a closed connection holds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from socketeer.broker.protocol import BrokerFactory, BrokerProtocol
from socketeer.broker.router import Router
from socketeer.config.model import LoginLimits
from socketeer.logins import Logins
from socketeer.wire.stompframing import (
    StompFrame,
    StompFrameParser,
    StompLimits,
    StompProtocolError,
    encode_frame,
)

LIMITS = StompLimits(max_header_line=512, max_headers=16, max_head=2048, max_body=4096)
MAX_SUBSCRIPTIONS = 3
MAX_TRANSACTIONS = 2
MAX_TRANSACTION_BYTES = 2048
MAX_CONNECT_FRAME = 1024
SERVER_COMMANDS = {"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"}

ids = st.sampled_from(["1", "2", "3", "4", "a:b"])
transactions = st.none() | st.sampled_from(["t1", "t2", "t3", ""])
destinations = st.sampled_from(["/topic/a", "/queue/a", "/queue/b", "/secret/x", ""])
receipts = st.none() | st.sampled_from(["r1", "r\\n"])


def _headers(**items: str | None) -> list[tuple[str, str]]:
    return [(k.replace("_", "-"), v) for k, v in items.items() if v is not None]


def _frame(command: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    try:
        return encode_frame(StompFrame(command, rawHeaders=headers, body=body, version="1.2"))
    except ValueError:
        return command.encode() + b"\n\n\x00"


connects = st.builds(
    lambda command, accept, login, beats: _frame(
        command,
        _headers(
            accept_version=accept,
            host="x",
            login=login[0] if login else None,
            passcode=login[1] if login else None,
            heart_beat=beats,
        ),
    ),
    st.sampled_from(["CONNECT", "STOMP"]),
    st.none() | st.sampled_from(["1.0", "1.1", "1.2", "1.0,1.1,1.2", "2.0"]),
    st.none() | st.sampled_from([("u", "p"), ("u", "wrong"), ("nobody", "p"), ("r", "p")]),
    st.none() | st.sampled_from(["0,0", "10,10", "1000,0", "x"]),
)
subscribes = st.builds(
    lambda sid, dest, ack, receipt: _frame(
        "SUBSCRIBE", _headers(id=sid, destination=dest, ack=ack, receipt=receipt)
    ),
    st.none() | ids,
    destinations,
    st.none() | st.sampled_from(["auto", "client", "client-individual", "never"]),
    receipts,
)
unsubscribes = st.builds(
    lambda sid, receipt: _frame("UNSUBSCRIBE", _headers(id=sid, receipt=receipt)),
    st.none() | ids,
    receipts,
)
sends = st.builds(
    lambda dest, tx, body, receipt, extra: _frame(
        "SEND", _headers(destination=dest, transaction=tx, receipt=receipt, x_extra=extra), body
    ),
    destinations,
    transactions,
    st.binary(max_size=1500),
    receipts,
    st.none() | st.text(max_size=20),
)
acks = st.builds(
    lambda command, sid, tx: _frame(command, _headers(id=sid, transaction=tx)),
    st.sampled_from(["ACK", "NACK"]),
    ids,
    transactions,
)
txs = st.builds(
    lambda command, tx, receipt: _frame(command, _headers(transaction=tx, receipt=receipt)),
    st.sampled_from(["BEGIN", "COMMIT", "ABORT"]),
    transactions,
    receipts,
)
disconnects = st.builds(lambda r: _frame("DISCONNECT", _headers(receipt=r)), receipts)
garbage = st.binary(min_size=1, max_size=64) | st.sampled_from(
    [b"\n", b"\r\n", b"\n\n\n", b"SEND\n", b"\x00", b"MESSAGE\n\n\x00", b"x" * 3000]
)
#: Mostly a CONNECT that succeeds, so that the sequences get past the handshake.
good_connects = st.builds(
    lambda version: _frame("CONNECT", _headers(accept_version=version, login="u", passcode="p")),
    st.sampled_from(["1.0", "1.1", "1.2"]),
)
#: A transaction that gets going: BEGIN t1, then SENDs in it.
in_transaction = st.builds(
    lambda size: _frame("SEND", _headers(destination="/queue/a", transaction="t1"), b"x" * size),
    st.integers(0, 1500),
)
begins = st.just(_frame("BEGIN", _headers(transaction="t1")))
data_steps = st.tuples(
    st.just("data"),
    st.sampled_from([0, 0, 0, 1]),
    st.one_of(
        st.one_of(begins, in_transaction, subscribes, sends),
        st.one_of(
            good_connects, connects, unsubscribes, acks, txs, in_transaction, disconnects, garbage
        ),
    ),
    st.integers(0, 64),
)
time_steps = st.tuples(st.just("time"), st.integers(0, 1), st.floats(0, 30), st.just(0))
drop_steps = st.tuples(st.just("drop"), st.integers(0, 1), st.just(b""), st.just(0))
#: The hashes that wait finish (threaded run only).
hash_steps = st.tuples(st.just("hashes"), st.just(0), st.just(b""), st.just(0))
steps = st.lists(
    st.one_of(data_steps, data_steps, data_steps, time_steps, drop_steps, hash_steps),
    min_size=5,
    max_size=50,
)


class HeldHashes:
    """A Logins runner: each hash is computed at once, its answer held until release()."""

    def __init__(self) -> None:
        self.held: list[tuple[defer.Deferred, Any]] = []

    def __call__(self, f: Callable[..., Any], *args: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, f(*args)))
        return d

    def release(self) -> None:
        held, self.held = self.held, []
        for d, result in held:
            d.callback(result)


class Client:
    """One broker connection seen from the client: what it was sent, parsed and checked."""

    def __init__(self, factory: BrokerFactory, n: int, login: bytes | None) -> None:
        self.proto = factory.buildProtocol(IPv4Address("TCP", f"127.0.0.{n + 1}", 4000))
        assert isinstance(self.proto, BrokerProtocol)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)
        self.parser = StompFrameParser(server=False)
        self.errored = False
        if login is not None:  # most sequences start logged in, to get deep into a session
            self.proto.dataReceived(login)

    def check_output(self) -> None:
        data = self.transport.value()
        self.transport.clear()
        try:
            items = self.parser.feed(data)
            while items:
                for item in items:
                    if not isinstance(item, StompFrame):
                        continue  # a heart-beat
                    assert not self.errored, f"{item.command} after an ERROR"
                    assert item.command in SERVER_COMMANDS, item.command
                    if item.command == "CONNECTED":
                        self.parser.version = item.headers.get("version", "1.0")
                    elif item.command == "ERROR":
                        self.errored = True
                        assert item.headers["message"]
                        assert self.transport.disconnecting
                items = self.parser.feed(b"") if not self.parser.held else []
        except StompProtocolError as e:
            raise AssertionError(f"the broker wrote a malformed frame: {e}") from None
        assert not self.parser.held or self.parser.buffered == 0

    def check_bounds(self, router: Router) -> None:
        proto = self.proto
        assert len(router.subscriptions(proto)) <= MAX_SUBSCRIPTIONS
        assert proto.open_transactions <= MAX_TRANSACTIONS
        assert 0 <= proto.held_bytes <= MAX_TRANSACTION_BYTES
        assert proto._parser.buffered <= LIMITS.max_head + LIMITS.max_body + 2
        if proto.state.name == "AUTHENTICATING":  # a stranger's bytes are few
            assert proto._parser.buffered <= MAX_CONNECT_FRAME
        if self.transport.disconnecting:
            assert router.subscriptions(proto) == {}
            assert proto.open_transactions == 0 and proto.held_bytes == 0


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# Two tests, not one parametrized: pytest-twisted wraps a @given test once per item, and
# wrapping the same one twice fails.
@FUZZ
@given(st.none() | good_connects, steps)
def test_random_frame_sequences_keep_the_broker_sound(login, sequence):
    fuzz(False, login, sequence)


@FUZZ
@given(st.none() | good_connects, steps)
def test_random_sequences_with_logins_answered_later_keep_the_broker_sound(login, sequence):
    fuzz(True, login, sequence)


def fuzz(threaded: bool, login: bytes | None, sequence: list) -> None:
    clock = task.Clock()
    router = Router(max_pending_total_bytes=64 * 1024)
    hashes = HeldHashes()
    limits = LoginLimits(max_failures=2, lockout=20, threads=1, max_pending=2)
    logins = Logins(limits, clock, run=hashes) if threaded else None
    factory = BrokerFactory(
        router,
        clock,
        users={"u": "p", "r": "p"},
        destinations={"r": ("/topic/",)},
        limits=LIMITS,
        max_subscriptions=MAX_SUBSCRIPTIONS,
        max_transactions=MAX_TRANSACTIONS,
        max_transaction_bytes=MAX_TRANSACTION_BYTES,
        max_connect_frame=MAX_CONNECT_FRAME,
        max_connections=4,
        logins=logins,
    )
    clients = [Client(factory, 0, login), Client(factory, 1, login)]
    for kind, who, payload, cut in sequence:
        client = clients[who]
        if client.transport.disconnecting:  # gone: the broker sees the loss, a new one comes
            client.proto.connectionLost()
            client = clients[who] = Client(factory, who, login)
        if kind == "data":
            cut = min(cut, len(payload))
            client.proto.dataReceived(payload[:cut])
            client.proto.dataReceived(payload[cut:])
        elif kind == "time":
            clock.advance(payload)
        elif kind == "hashes":
            hashes.release()
        else:
            client.proto.connectionLost()
            clients[who] = Client(factory, who, login)
        for c in clients:
            c.check_output()
            c.check_bounds(router)
        assert len(factory.connections) <= 4 and factory.admission.open <= 4
    hashes.release()
    for c in clients:
        c.check_output()
        c.proto.connectionLost()
    clock.advance(60)
    assert not factory.connections and factory.admission.open == 0
    assert not clock.getDelayedCalls()
