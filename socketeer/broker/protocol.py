"""The embedded in-process STOMP broker: one BrokerProtocol per client connection.

Parsing is :class:`socketeer.wire.stompframing.StompFrameParser`; who receives a
message is :class:`socketeer.broker.router.Router`; where it listens is
:mod:`socketeer.broker.listeners`. This module only moves bytes, keeps per-connection
state, and runs the timers (all on the injected clock).

Connection lifecycle::

    AWAITING_CONNECT --CONNECT/STOMP--> AUTHENTICATING --login ok--> CONNECTED
           |                                   |                       |
           |    bad first frame, no common     | bad login, locked     | DISCONNECT/error
           |    version, timeout               | out, busy, timeout    v
           \\----------------------------------->\\------------------> CLOSING --lost--> CLOSED

Logins: a CONNECT's passcode is checked by :meth:`BrokerAuth.verdict`, in a Socketeer
process off the reactor thread (:mod:`socketeer.logins`: equal cost for unknown logins, a
cache, a per-address lockout). Until the answer comes the connection is AUTHENTICATING: its
socket is not read, what already arrived behind the CONNECT waits in the parser (at most
``max_connect_frame`` bytes), and the handshake timer still runs. A locked-out address and a
server with too many logins waiting get their own ERROR messages.

Any protocol error earns that client (and only that client) an ERROR frame
followed by ``loseConnection``; if the peer does not read it within
``close_timeout`` seconds the connection is aborted.

Strangers are cheap: until CONNECTED a frame may hold at most ``max_connect_frame`` bytes
(the parser's handshake limits) and must arrive within ``connect_timeout``; the factory
caps connections in total and per source address (:mod:`socketeer.broker.admission`),
which counts every refusal and logs it sparingly.

Transactions (STOMP 1.2, also 1.0/1.1): SEND, ACK and NACK carrying a ``transaction``
header are held, in order, until COMMIT replays them or ABORT (or the end of the
connection) drops them; a connection may have ``max_transactions`` open, holding at most
``max_transaction_bytes`` between them.

Slow subscribers, and why memory stays bounded (and one slow subscriber delays no one
else): every BrokerProtocol registers itself as a streaming producer on its own transport.
When that transport's write buffer fills it calls our ``pauseProducing``: the connection is
then *congested*, and what it should receive waits in its own queue (:class:`_Queue`), in
order, until the transport drains and calls ``resumeProducing``. Nothing routed is dropped,
and deliveries to other subscribers never wait for it. The queue has a bound in bytes
(``subscriber_queue``). Past it, back-pressure reaches only the publishers filling it: a
publisher adding to an over-bound queue gets its socket reading paused if it holds more
than its fair share of that queue (the bound divided by the publishers with messages in
it), or whatever it holds once the queue is past twice the bound (many publishers at once).
So a flood to a frozen node pauses the flooder, while a node that only pings it is not
paused. Paused publishers are released when the queue has drained to half the bound (or
the subscriber goes away); a publisher paused by several subscribers resumes only when all
of them have drained. A connection is never paused on account of itself, so a client that
subscribes to what it publishes cannot deadlock. A subscriber that stays over its bound
longer than ``slow_subscriber_timeout`` is disconnected with an ERROR and its queue freed;
one that stays congested at all longer than ``congestion_timeout`` is dropped too. While a
publisher is paused we cannot see its heart-beats, so its receive deadline is suspended.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from stompest.protocol import StompSpec
from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import __version__, fastwrite
from socketeer.broker.admission import Admission, peer_host
from socketeer.broker.router import Delivery, DuplicateSubscription, Router
from socketeer.broker.users import BrokerAuth
from socketeer.config.defaults import (
    DEFAULT_BROKER_HANDSHAKE_TIMEOUT,
    DEFAULT_BROKER_MAX_CONNECT_FRAME,
    DEFAULT_BROKER_MAX_CONNECTIONS,
    DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS,
    DEFAULT_BROKER_MAX_TRANSACTION_BYTES,
    DEFAULT_BROKER_MAX_TRANSACTIONS,
    DEFAULT_SLOW_SUBSCRIBER_TIMEOUT,
    DEFAULT_SUBSCRIBER_QUEUE,
)
from socketeer.logins import ACCEPTED, Logins
from socketeer.secret import Secret
from socketeer.wire.stompframing import (
    StompFrame,
    StompFrameParser,
    StompFrameTooLarge,
    StompHeartBeat,
    StompLimits,
    StompProtocolError,
    can_encode_header,
    encode_frame,
)

__all__ = ["BrokerCounters", "BrokerFactory", "BrokerProtocol"]

SUPPORTED_VERSIONS = StompSpec.VERSIONS  # ("1.0", "1.1", "1.2"), oldest first
SERVER_NAME = f"Socketeer/{__version__}"
ACK_MODES = frozenset({StompSpec.ACK_AUTO, StompSpec.ACK_CLIENT, StompSpec.ACK_CLIENT_INDIVIDUAL})

# Headers of a SEND that are about the SEND itself and are not copied to MESSAGE.
_NOT_COPIED = frozenset(
    {
        StompSpec.DESTINATION_HEADER,
        StompSpec.MESSAGE_ID_HEADER,
        StompSpec.SUBSCRIPTION_HEADER,
        StompSpec.CONTENT_LENGTH_HEADER,
        StompSpec.RECEIPT_HEADER,
        StompSpec.TRANSACTION_HEADER,
        StompSpec.ACK_HEADER,
        StompSpec.ID_HEADER,
    }
)


class _State(enum.Enum):
    AWAITING_CONNECT = "waiting for CONNECT or STOMP"
    AUTHENTICATING = "CONNECT read, its passcode being checked (reading paused)"
    CONNECTED = "session open"
    CLOSING = "ERROR/RECEIPT written, loseConnection called, ignoring input"
    CLOSED = "connectionLost seen"


@dataclass(frozen=True)
class _Settings:
    auth: BrokerAuth
    limits: StompLimits
    heartbeat_ms: tuple[int, int]
    connect_timeout: float
    congestion_timeout: float
    close_timeout: float
    max_subscriptions: int
    #: Bytes a congested subscriber's queue may hold before its publishers are paused.
    subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE
    #: Seconds a subscriber may stay over that bound before it is disconnected.
    slow_subscriber_timeout: float = DEFAULT_SLOW_SUBSCRIBER_TIMEOUT
    #: The parser's limits until CONNECTED (a stranger's CONNECT is small).
    handshake_limits: StompLimits | None = None
    max_transactions: int = DEFAULT_BROKER_MAX_TRANSACTIONS
    max_transaction_bytes: int = DEFAULT_BROKER_MAX_TRANSACTION_BYTES


@dataclass
class BrokerCounters:
    """Broker-wide counters, shared by the connections (for /status and /metrics)."""

    #: Subscribers disconnected for staying over their queue bound.
    slow_disconnects: int = 0


@dataclass
class _Queue:
    """What a congested subscriber has still to be sent, and who put it there.

    Items are ``(parts, publisher, size)``; ``publisher`` is None for the broker's own frames
    (RECEIPT, ERROR). ``shares`` counts each publisher's bytes still queued, to find those
    that fill the queue.
    """

    items: deque[tuple[Sequence[bytes], BrokerProtocol | None, int]] = field(default_factory=deque)
    size: int = 0
    shares: dict[BrokerProtocol, int] = field(default_factory=dict)

    def push(self, parts: Sequence[bytes], publisher: BrokerProtocol | None, size: int) -> None:
        self.items.append((parts, publisher, size))
        self.size += size
        if publisher is not None:
            self.shares[publisher] = self.shares.get(publisher, 0) + size

    def pop(self) -> tuple[Sequence[bytes], int]:
        parts, publisher, size = self.items.popleft()
        self.size -= size
        if publisher is not None:
            left = self.shares[publisher] - size
            if left:
                self.shares[publisher] = left
            else:
                del self.shares[publisher]
        return parts, size

    def clear(self) -> None:
        self.items.clear()
        self.shares.clear()
        self.size = 0


def handshake_limits(limits: StompLimits, max_connect_frame: int) -> StompLimits:
    """``limits`` cut down for the frame before CONNECTED: ``max_connect_frame`` bytes.

    That is the cap on its head and, separately, on its body (a CONNECT has none, but the
    first frame may be something else, answered with an ERROR that names it).
    """
    return limits._replace(
        max_header_line=min(limits.max_header_line, max_connect_frame),
        max_head=min(limits.max_head, max_connect_frame),
        max_body=min(limits.max_body, max_connect_frame),
    )


#: What a frame held in a transaction costs beyond its bytes (objects, list slot), so that
#: many empty frames count too.
_HELD_OVERHEAD = 256

#: Causes of refusals, as counted by Admission (``socketeer_broker_refused_total{reason}``).
_HANDSHAKE = "handshake"
_HANDSHAKE_TIMEOUT = "handshake-timeout"
_CONNECT_TOO_LARGE = "connect-too-large"
_AUTHENTICATION = "authentication"
_LOCKED_OUT = "login-locked-out"
_LOGIN_BUSY = "login-busy"

#: What a refused CONNECT's ERROR says, by login outcome (socketeer.logins.OUTCOMES).
_REFUSALS = {
    "failed": ("Authentication failed", _AUTHENTICATION),
    "locked-out": (
        "Authentication refused: too many failed logins from this address, try again later",
        _LOCKED_OUT,
    ),
    "busy": ("Authentication refused: server busy, try again later", _LOGIN_BUSY),
}
#: ... and what the log says.
_DETAILS = {
    "locked-out": "login refused (address locked out after failed logins)",
    "busy": "login refused (too many logins wait for a hash)",
}
_TRANSACTION = "transaction"
_TRANSACTIONS = "transactions"
_TRANSACTION_BYTES = "transaction-bytes"


@dataclass(frozen=True, slots=True)
class _Message:
    """A published message, independent of its publisher (it may wait in a queue)."""

    destination: str
    message_id: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: The copied headers as ready wire lines when none needs escaping (the usual case),
    #: so each delivery is a string join instead of per-header checks and escaping.
    plain_headers: str | None = None

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers)


#: Characters STOMP escapes or forbids in headers; headers without them go out as they are.
_CARE = re.compile(r"[:\\\r\n]")


def _clean(text: str) -> str:
    """Make ``text`` a safe single-line header value."""
    return text.replace("\r", " ").replace("\n", " ")


@implementer(IPushProducer)
class BrokerProtocol(protocol.Protocol):
    """I serve one STOMP client: handshake, then SEND/SUBSCRIBE/... dispatch."""

    log = Logger()

    def __init__(
        self,
        router: Router,
        clock: IReactorTime,
        settings: _Settings,
        session_id: str,
        on_close: Callable[[BrokerProtocol], None] = lambda p: None,
        counters: BrokerCounters | None = None,
        admission: Admission | None = None,
    ) -> None:
        self._router = router
        self._counters = BrokerCounters() if counters is None else counters
        self._clock = clock
        self._settings = settings
        self.session_id = session_id
        self._on_close = on_close
        self.state = _State.AWAITING_CONNECT
        self.version = StompSpec.VERSION_1_0
        self.login: str | None = None
        #: The client's host, for per-address login failures ("local" for unix sockets).
        self.address = "local"
        self._reading = False  # inside dataReceived (a login may be answered in it)
        self._reading_paused_for_login = False
        #: Byte counters, for statistics and tests.
        self.bytes_received = 0
        self.bytes_sent = 0
        #: True while my transport has asked me to stop producing (its buffer is full).
        self.congested = False
        self.congestion_events = 0  # times my transport pushed back (for status)
        self._admission = admission
        self._parser = StompFrameParser(
            limits=settings.limits, server=True, handshake_limits=settings.handshake_limits
        )
        #: Open transactions: id -> the frames held, with each one's headers and cost.
        self._transactions: dict[str, list[tuple[StompFrame, dict[str, str], int]]] = {}
        self.held_bytes = 0  # what all open transactions hold (bounded)
        self._message_ids = itertools.count(1)
        self._ack_modes: dict[str, str] = {}
        self._blocked_by: set[BrokerProtocol] = set()  # congested subscribers pausing me
        self._blocking: set[BrokerProtocol] = set()  # publishers I paused
        self._queue = _Queue()  # what waits for my congested transport
        self._last_received = self._last_sent = 0.0
        self._send_period = 0.0
        self._receive_grace = 0.0
        self._timers: dict[str, IDelayedCall] = {}
        self._handlers: dict[str, Callable[[StompFrame, dict[str, str]], None]] = {
            StompSpec.SEND: self._on_send,
            StompSpec.SUBSCRIBE: self._on_subscribe,
            StompSpec.UNSUBSCRIBE: self._on_unsubscribe,
            StompSpec.ACK: self._on_ack,
            StompSpec.NACK: self._on_ack,
            StompSpec.BEGIN: self._on_begin,
            StompSpec.COMMIT: self._on_commit,
            StompSpec.ABORT: self._on_abort,
            StompSpec.DISCONNECT: self._on_disconnect,
        }

    @property
    def paused(self) -> bool:
        """True while I stopped reading this client because a subscriber is congested."""
        return bool(self._blocked_by)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in my queue for my transport to drain."""
        return self._queue.size

    # -- Protocol --------------------------------------------------------

    def connectionMade(self) -> None:
        fastwrite.no_delay(self.transport)
        self.address = peer_host(self.transport.getPeer()) or "local"
        # Large reads only once logged in: a stranger's CONNECT is small (see _on_connect).
        self.transport.registerProducer(self, True)
        self._last_received = self._last_sent = self._clock.seconds()
        self._schedule("connect", self._settings.connect_timeout, self._connect_timed_out)
        self.log.debug(
            "{session} accepted from {peer}", session=self.session_id, peer=self.transport.getPeer()
        )

    def dataReceived(self, data: bytes) -> None:
        if self.state is _State.AUTHENTICATING:
            self._hold_while_authenticating(data)
            return
        if self.state not in (_State.AWAITING_CONNECT, _State.CONNECTED):
            return
        self.bytes_received += len(data)
        self._last_received = self._clock.seconds()
        self._reading = True
        try:
            self._read(data)
        finally:
            self._reading = False

    def _read(self, data: bytes) -> None:
        while True:
            error = None
            try:
                frames = self._parser.feed(data)
            except StompProtocolError as e:
                frames, error = e.frames, e
            data = b""
            for frame in frames:
                if isinstance(frame, StompHeartBeat):
                    continue
                self._handle(frame)
                if self.state is not _State.CONNECTED:
                    return
            if error is not None:
                if isinstance(error, StompFrameTooLarge) and self.state is _State.AWAITING_CONNECT:
                    size = self._settings.handshake_limits
                    cap = f" (at most {size.max_head} bytes)" if size is not None else ""
                    self._fail(f"CONNECT frame too large{cap}: {error}", cause=_CONNECT_TOO_LARGE)
                else:
                    self._fail(str(error))
                return
            if not frames:
                return  # a handshake frame may have held the parser: loop till dry

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.state = _State.CLOSED
        self._detach()
        self._cancel("close")
        self._on_close(self)
        self.log.info(
            "{session} closed ({login}): {reason}",
            session=self.session_id,
            login=self.login,
            reason=reason.getErrorMessage(),
        )

    # -- IPushProducer (my own transport tells me about its write buffer) --

    def pauseProducing(self) -> None:
        if self.congested or self.state is not _State.CONNECTED:
            return
        self.congested = True
        # Not logged: on a bulk transfer this happens thousands of times a second.
        self.congestion_events += 1
        self._schedule("congestion", self._settings.congestion_timeout, self._congestion_timed_out)

    def resumeProducing(self) -> None:
        if not self.congested:
            return
        self.congested = False
        self._cancel("congestion")
        self._drain()

    def stopProducing(self) -> None:
        """The transport is going away; connectionLost does the cleanup."""

    # -- frame dispatch --------------------------------------------------

    def _handle(self, frame: StompFrame) -> None:
        headers = frame.headers  # stompest: the first of repeated headers wins
        command = frame.command
        if self.state is _State.AWAITING_CONNECT:
            if command in (StompSpec.CONNECT, StompSpec.STOMP):
                self._on_connect(frame, headers)
            else:
                self._fail(f"expected CONNECT or STOMP, got {command}", headers)
            return
        handler = self._handlers.get(command)
        if handler is None:
            self._fail(f"unexpected {command} frame", headers)
            return
        handler(frame, headers)
        receipt = headers.get(StompSpec.RECEIPT_HEADER)
        if receipt is not None and self.state is _State.CONNECTED:
            self._send(StompSpec.RECEIPT, [(StompSpec.RECEIPT_ID_HEADER, receipt)])

    def _hold_while_authenticating(self, data: bytes) -> None:
        """Bytes that came behind the CONNECT (before reading paused): kept in the parser,
        which holds after a handshake frame, within the stranger's frame bound."""
        self.bytes_received += len(data)
        self._last_received = self._clock.seconds()
        self._parser.feed(data)  # held: nothing is parsed until the version is set
        self._check_held_bytes()

    def _check_held_bytes(self) -> bool:
        """ERROR and close if more than a stranger's frame waits behind the CONNECT."""
        bound = self._settings.handshake_limits
        if bound is None or self._parser.buffered <= bound.max_head:
            return True
        self._fail(
            f"more than {bound.max_head} bytes sent before CONNECTED", cause=_CONNECT_TOO_LARGE
        )
        return False

    def _on_connect(self, frame: StompFrame, headers: dict[str, str]) -> None:
        accept = headers.get(StompSpec.ACCEPT_VERSION_HEADER)
        offered = {v.strip() for v in accept.split(",")} if accept else {StompSpec.VERSION_1_0}
        common = [v for v in SUPPORTED_VERSIONS if v in offered]
        if not common:
            supported = ",".join(SUPPORTED_VERSIONS)
            self._fail(
                f"Supported protocol versions are {supported}",
                headers,
                [(StompSpec.VERSION_HEADER, supported)],
            )
            return
        version = common[-1]
        client_beats = (0, 0)
        if version != StompSpec.VERSION_1_0:
            try:
                client_beats = self._parse_heartbeat(headers.get(StompSpec.HEART_BEAT_HEADER))
            except ValueError:
                self._fail("bad heart-beat header", headers)
                return
        login = headers.get(StompSpec.LOGIN_HEADER)
        certified = self._settings.auth.certified_login(self.transport, login)
        if certified is not None:
            # A verified client certificate's common name: no passcode to check.
            self._connected(version, certified, client_beats)
            return
        self.state = _State.AUTHENTICATING
        d = self._settings.auth.verdict(login, headers.get(StompSpec.PASSCODE_HEADER), self.address)
        d.addCallback(self._login_checked, version, login, client_beats, headers)
        d.addErrback(self._login_broken)
        if self.state is _State.AUTHENTICATING and self._check_held_bytes():
            # No answer yet (``d.called`` cannot tell: it may wait on an inner Deferred): the
            # hash runs in a thread, read nothing more until it is done.
            self._reading_paused_for_login = True
            self.transport.pauseProducing()

    def _login_checked(
        self,
        outcome: str,
        version: str,
        login: str | None,
        client_beats: tuple[int, int],
        headers: dict[str, str],
    ) -> None:
        if self.state is not _State.AUTHENTICATING:
            return  # timed out or gone meanwhile
        if outcome not in ACCEPTED:
            message, cause = _REFUSALS.get(outcome, _REFUSALS["failed"])
            self._fail(
                message,
                headers,
                cause=cause,
                detail=f"{_DETAILS.get(outcome, 'authentication failed')} for login {login!r} "
                f"from {self.address}",
            )
            return
        self._last_received = self._clock.seconds()  # we were not reading meanwhile
        self._connected(version, login, client_beats)
        if self._reading_paused_for_login:
            self._reading_paused_for_login = False
            self.transport.resumeProducing()
        if not self._reading and self.state is _State.CONNECTED:
            self._read(b"")  # what came behind the CONNECT, held by the parser

    def _login_broken(self, failure: Failure) -> None:
        self.log.failure("{session}: login check failed", failure, session=self.session_id)
        if self.state is _State.AUTHENTICATING:
            self._fail("Authentication failed", cause=_AUTHENTICATION)

    def _connected(self, version: str, login: str | None, client_beats: tuple[int, int]) -> None:
        self._cancel("connect")
        self.version = self._parser.version = version
        self.login = login
        self.state = _State.CONNECTED
        fastwrite.large_reads(self.transport)
        reply = [
            (StompSpec.SESSION_HEADER, self.session_id),
            (StompSpec.SERVER_HEADER, SERVER_NAME),
        ]
        if version != StompSpec.VERSION_1_0:
            sx, sy = self._settings.heartbeat_ms
            reply = [
                (StompSpec.VERSION_HEADER, version),
                (StompSpec.HEART_BEAT_HEADER, f"{sx},{sy}"),
                *reply,
            ]
        self._send(StompSpec.CONNECTED, reply)
        self._start_heartbeats(*client_beats)
        self.log.info(
            "{session} connected: STOMP {version}, login {login!r}",
            session=self.session_id,
            version=version,
            login=login,
        )

    def _denied(self, command: str, destination: str, headers: dict[str, str]) -> bool:
        """ERROR and close if this login may not use ``destination`` (per-user prefixes)."""
        if self._settings.auth.allowed(self.login, destination):
            return False
        self._fail(f"{command} to {destination} is not allowed for login {self.login!r}", headers)
        return True

    @staticmethod
    def _parse_heartbeat(value: str | None) -> tuple[int, int]:
        if value is None:
            return (0, 0)
        cx, cy = (int(part) for part in value.split(","))
        if cx < 0 or cy < 0:
            raise ValueError(value)
        return cx, cy

    def _on_send(self, frame: StompFrame, headers: dict[str, str]) -> None:
        destination = headers.get(StompSpec.DESTINATION_HEADER)
        if not destination:
            self._fail("SEND frame has no destination header", headers)
            return
        if self._denied("SEND", destination, headers):
            return
        transaction = headers.get(StompSpec.TRANSACTION_HEADER)
        if transaction is not None and self._hold(transaction, frame, headers):
            return
        copied: list[tuple[str, str]] = []
        seen: set[str] = set()
        for name, value in frame.rawHeaders or ():
            if name not in _NOT_COPIED and name not in seen:
                seen.add(name)
                copied.append((name, value))
        lines = "".join([f"{name}:{value}\n" for name, value in copied])
        n = len(copied)
        # Plain when each header added exactly one ':' and one newline, no name is empty,
        # and nothing needs escaping: a few scans of one string instead of a regex per header.
        plain = (
            lines
            if lines.count(":") == n
            and lines.count("\n") == n
            and "\\" not in lines
            and "\r" not in lines
            and not lines.startswith(":")
            and "\n:" not in lines
            else None
        )
        body = frame.body
        message = _Message(
            destination,
            f"{self.session_id}-{next(self._message_ids)}",
            tuple(copied),
            body,
            plain,
        )
        size = len(body) + len(lines) - 2 * n  # == message.size, without a second pass
        self._deliver_all(self._router.route(destination, message, size=size))

    def _on_subscribe(self, frame: StompFrame, headers: dict[str, str]) -> None:
        destination = headers.get(StompSpec.DESTINATION_HEADER)
        if not destination:
            self._fail("SUBSCRIBE frame has no destination header", headers)
            return
        if self._denied("SUBSCRIBE", destination, headers):
            return
        sid = headers.get(StompSpec.ID_HEADER)
        if sid is None:
            if self.version != StompSpec.VERSION_1_0:
                self._fail("SUBSCRIBE frame has no id header", headers)
                return
            sid = destination
        ack = headers.get(StompSpec.ACK_HEADER, StompSpec.ACK_AUTO)
        if ack not in ACK_MODES:
            self._fail(f"unsupported ack mode {ack!r}", headers)
            return
        if len(self._ack_modes) >= self._settings.max_subscriptions:
            self._fail(f"more than {self._settings.max_subscriptions} subscriptions", headers)
            return
        try:
            backlog = self._router.subscribe(self, sid, destination)
        except DuplicateSubscription as e:
            self._fail(str(e), headers)
            return
        self._ack_modes[sid] = ack
        self.log.debug(
            "{session} subscribed {sid!r} to {destination}",
            session=self.session_id,
            sid=sid,
            destination=destination,
        )
        self._deliver_all(backlog)

    def _on_unsubscribe(self, frame: StompFrame, headers: dict[str, str]) -> None:
        sid = headers.get(StompSpec.ID_HEADER)
        if sid is None and self.version == StompSpec.VERSION_1_0:
            sid = headers.get(StompSpec.DESTINATION_HEADER)
        if sid is None:
            self._fail("UNSUBSCRIBE frame has no id header", headers)
            return
        self._router.unsubscribe(self, sid)
        self._ack_modes.pop(sid, None)

    def _on_ack(self, frame: StompFrame, headers: dict[str, str]) -> None:
        """Messages are handed over at delivery; ACK and NACK are accepted and ignored.

        In a transaction they are held all the same (an unknown transaction is an error),
        so that their effect, should they ever have one, waits for the COMMIT.
        """
        transaction = headers.get(StompSpec.TRANSACTION_HEADER)
        if transaction is not None:
            self._hold(transaction, frame, headers)

    # -- transactions ----------------------------------------------------

    def _transaction_id(self, frame: StompFrame, headers: dict[str, str]) -> str | None:
        transaction = headers.get(StompSpec.TRANSACTION_HEADER)
        if not transaction:
            self._fail(
                f"{frame.command} frame has no transaction header", headers, cause=_TRANSACTION
            )
            return None
        if frame.command != StompSpec.BEGIN and transaction not in self._transactions:
            self._fail(f"unknown transaction {transaction!r}", headers, cause=_TRANSACTION)
            return None
        return transaction

    def _on_begin(self, frame: StompFrame, headers: dict[str, str]) -> None:
        transaction = self._transaction_id(frame, headers)
        if transaction is None:
            return
        if transaction in self._transactions:
            self._fail(f"transaction {transaction!r} already begun", headers, cause=_TRANSACTION)
            return
        if len(self._transactions) >= self._settings.max_transactions:
            self._fail(
                f"more than {self._settings.max_transactions} open transactions",
                headers,
                cause=_TRANSACTIONS,
            )
            return
        self._transactions[transaction] = []

    def _on_commit(self, frame: StompFrame, headers: dict[str, str]) -> None:
        """Replay what the transaction held, in order, as if it arrived now."""
        transaction = self._transaction_id(frame, headers)
        if transaction is None:
            return
        for held, held_headers, cost in self._transactions.pop(transaction):
            self.held_bytes -= cost
            if self.state is _State.CONNECTED:
                self._handlers[held.command](held, held_headers)

    def _on_abort(self, frame: StompFrame, headers: dict[str, str]) -> None:
        transaction = self._transaction_id(frame, headers)
        if transaction is None:
            return
        self.held_bytes -= sum(cost for _, _, cost in self._transactions.pop(transaction))

    def _hold(self, transaction: str, frame: StompFrame, headers: dict[str, str]) -> bool:
        """Keep a SEND/ACK/NACK of ``transaction`` for its COMMIT; True when it is dealt with.

        An unknown transaction or one over the byte bound is an ERROR (also dealt with).
        """
        held = self._transactions.get(transaction)
        if held is None:
            self._fail(f"unknown transaction {transaction!r}", headers, cause=_TRANSACTION)
            return True
        cost = (
            len(frame.body)
            + sum(len(k) + len(v) for k, v in frame.rawHeaders or ())
            + _HELD_OVERHEAD
        )
        limit = self._settings.max_transaction_bytes
        if self.held_bytes + cost > limit:
            self._fail(
                f"open transactions would hold more than {limit} bytes",
                headers,
                cause=_TRANSACTION_BYTES,
            )
            return True
        self.held_bytes += cost
        # Replayed without the header, so that the COMMIT does not hold it again.
        plain = {k: v for k, v in headers.items() if k != StompSpec.TRANSACTION_HEADER}
        held.append((frame, plain, cost))
        return True

    @property
    def open_transactions(self) -> int:
        return len(self._transactions)

    def _on_disconnect(self, frame: StompFrame, headers: dict[str, str]) -> None:
        # Everything before this frame was handled synchronously already, so the
        # RECEIPT follows all output those frames caused.
        receipt = headers.get(StompSpec.RECEIPT_HEADER)
        if receipt is not None:
            self._send(StompSpec.RECEIPT, [(StompSpec.RECEIPT_ID_HEADER, receipt)])
        self.log.info("{session} sent DISCONNECT", session=self.session_id)
        self._close()

    # -- delivery and flow control ---------------------------------------

    def _deliver_all(self, deliveries: Iterable[Delivery]) -> None:
        for delivery in deliveries:
            subscriber: BrokerProtocol = delivery.connection
            subscriber._deliver(delivery.subscription_id, delivery.message, self)

    def _deliver(
        self, sid: str, message: _Message, publisher: BrokerProtocol | None = None
    ) -> None:
        if self.state is not _State.CONNECTED:
            return
        auto = self._ack_modes.get(sid) == StompSpec.ACK_AUTO
        if (
            message.plain_headers is not None
            and (auto or self.version != StompSpec.VERSION_1_2)
            and not _CARE.search(sid)
            and not _CARE.search(message.destination)
        ):
            # Fast path: the same bytes encode_frame would produce, built in one join.
            body = message.body
            head = (
                f"MESSAGE\ndestination:{message.destination}\n"
                f"message-id:{message.message_id}\nsubscription:{sid}\n"
                f"content-length:{len(body)}\n{message.plain_headers}\n"
            )
            head_bytes = head.encode("utf-8")
            self._output((head_bytes, body, b"\0"), len(head_bytes) + len(body) + 1, publisher)
            return
        headers = [
            (StompSpec.DESTINATION_HEADER, message.destination),
            (StompSpec.MESSAGE_ID_HEADER, message.message_id),
            (StompSpec.SUBSCRIPTION_HEADER, sid),
            (StompSpec.CONTENT_LENGTH_HEADER, "0"),  # encode_frame sets the real length
        ]
        if self.version == StompSpec.VERSION_1_2 and self._ack_modes.get(sid) != StompSpec.ACK_AUTO:
            headers.append((StompSpec.ACK_HEADER, message.message_id))
        headers.extend(
            (k, v)
            for k, v in message.headers
            if can_encode_header(self.version, StompSpec.MESSAGE, k, v)
        )
        frame = StompFrame(
            StompSpec.MESSAGE, rawHeaders=headers, body=message.body, version=self.version
        )
        try:
            data = encode_frame(frame)
        except ValueError:
            self.log.warn(
                "{session}: message {message_id} not representable in STOMP {version}",
                session=self.session_id,
                message_id=message.message_id,
                version=self.version,
            )
            return
        self._output((data,), len(data), publisher)

    def _output(
        self, parts: Sequence[bytes], size: int, publisher: BrokerProtocol | None = None
    ) -> None:
        """Write now, or queue behind what already waits while my transport is congested."""
        if self.congested or self._queue.items:
            self._enqueue(parts, size, publisher)
        else:
            self._write_now(parts, size)

    def _write_now(self, parts: Sequence[bytes], size: int) -> None:
        self.bytes_sent += size
        self._last_sent = self._clock.seconds()
        if len(parts) == 1:
            fastwrite.write(self.transport, parts[0])
        else:
            fastwrite.write_sequence(self.transport, parts)

    def _enqueue(self, parts: Sequence[bytes], size: int, publisher: BrokerProtocol | None) -> None:
        """Queue for later; past the bound, pause ``publisher`` if it is filling the queue."""
        queue = self._queue
        queue.push(parts, publisher, size)
        bound = self._settings.subscriber_queue
        if queue.size <= bound:
            return
        if "slow" not in self._timers:
            self._schedule(
                "slow", self._settings.slow_subscriber_timeout, self._slow_subscriber_timed_out
            )
        if publisher is None or publisher is self:
            return
        # Over its fair share (bound / publishers queued here), or the queue is past twice
        # its bound: a publisher sending a little now and then is left alone otherwise.
        if queue.size > 2 * bound or queue.shares[publisher] * len(queue.shares) > bound:
            publisher._pause_for(self)

    def _drain(self) -> None:
        """My transport has room: send what waits until it is full again."""
        queue = self._queue
        while queue.items and not self.congested and self.state is _State.CONNECTED:
            parts, size = queue.pop()
            self._write_now(parts, size)
        bound = self._settings.subscriber_queue
        if queue.size <= bound:
            self._cancel("slow")
        if queue.size <= bound // 2:
            self._release_publishers()

    def _pause_for(self, subscriber: BrokerProtocol) -> None:
        if subscriber in self._blocked_by or self.state is not _State.CONNECTED:
            return
        self._blocked_by.add(subscriber)
        subscriber._blocking.add(self)
        if len(self._blocked_by) == 1:
            self.transport.pauseProducing()

    def _unpause_for(self, subscriber: BrokerProtocol) -> None:
        self._blocked_by.discard(subscriber)
        if not self._blocked_by and self.state is _State.CONNECTED:
            self._last_received = self._clock.seconds()  # we were not listening
            self.transport.resumeProducing()

    def _release_publishers(self) -> None:
        publishers, self._blocking = self._blocking, set()
        for publisher in publishers:
            publisher._unpause_for(self)

    def _slow_subscriber_timed_out(self) -> None:
        self._timers.pop("slow", None)
        self._counters.slow_disconnects += 1
        queued = self._queue.size
        self._queue.clear()  # freed now; the ERROR goes out alone
        self._fail(
            f"subscriber too slow: more than {self._settings.subscriber_queue} bytes "
            f"queued for it for {self._settings.slow_subscriber_timeout:g}s "
            f"({queued} bytes dropped)"
        )

    def _congestion_timed_out(self) -> None:
        self._fail(f"subscriber too slow: congested for {self._settings.congestion_timeout:g}s")

    # -- heart-beating ---------------------------------------------------

    def _start_heartbeats(self, cx: int, cy: int) -> None:
        """Per spec: 0 means none, otherwise the larger of the two periods applies."""
        sx, sy = self._settings.heartbeat_ms
        send_ms = 0 if sx == 0 or cy == 0 else max(sx, cy)
        receive_ms = 0 if cx == 0 or sy == 0 else max(cx, sy)
        if send_ms:
            self._send_period = send_ms / 1000.0
            self._schedule("beat-send", self._send_period, self._beat_send)
        if receive_ms:
            self._receive_grace = 2 * receive_ms / 1000.0
            self._schedule("beat-receive", self._receive_grace, self._beat_check)

    def _beat_send(self) -> None:
        now = self._clock.seconds()
        due = self._last_sent + self._send_period
        if now >= due:
            if not (self.congested or self._queue.items):  # else the client has data pending
                self._write(b"\n")
            due = now + self._send_period
        self._schedule("beat-send", due - now, self._beat_send)

    def _beat_check(self) -> None:
        now = self._clock.seconds()
        deadline = self._last_received + self._receive_grace
        if self._blocked_by:
            deadline = now + self._receive_grace  # we are not reading: nothing to judge
        if now >= deadline:
            self._fail(f"nothing received for {self._receive_grace:g}s (heart-beat timeout)")
            return
        self._schedule("beat-receive", deadline - now, self._beat_check)

    def _connect_timed_out(self) -> None:
        self._fail(
            f"no CONNECT frame within {self._settings.connect_timeout:g}s",
            cause=_HANDSHAKE_TIMEOUT,
        )

    # -- output, errors and teardown -------------------------------------

    def _send(self, command: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        frame = StompFrame(command, rawHeaders=headers, body=body, version=self.version)
        self._write(encode_frame(frame))

    def _write(self, data: bytes) -> None:
        self._output((data,), len(data))

    def _fail(
        self,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: list[tuple[str, str]] | None = None,
        *,
        cause: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Send ERROR to this client and close it; ``headers`` are the offending frame's.

        A refusal (any error before CONNECTED, or one with a ``cause``) is counted and
        logged, with ``detail`` if given, by the Admission, sparingly; other errors are
        logged here.
        """
        if self.state not in (_State.AWAITING_CONNECT, _State.AUTHENTICATING, _State.CONNECTED):
            return
        if cause is None and self.state is not _State.CONNECTED:
            cause = _HANDSHAKE
        if cause is not None and self._admission is not None:
            self._admission.refuse(cause, self.session_id, detail or message)
        else:
            self.log.warn(
                "{session} error: {message}", session=self.session_id, message=detail or message
            )
        message = _clean(message)
        error = [(StompSpec.CONTENT_TYPE_HEADER, "text/plain"), ("message", message)]
        receipt = (headers or {}).get(StompSpec.RECEIPT_HEADER)
        if receipt is not None and can_encode_header(
            self.version, StompSpec.ERROR, StompSpec.RECEIPT_ID_HEADER, receipt
        ):
            error.append((StompSpec.RECEIPT_ID_HEADER, receipt))
        error.extend(extra or ())
        self._send(StompSpec.ERROR, error, message.encode("utf-8") + b"\n")
        self._close()

    def _close(self) -> None:
        self.state = _State.CLOSING
        while self._queue.items:  # what was routed to this client still goes out first
            self._write_now(*self._queue.pop())
        self._detach()
        self.transport.unregisterProducer()  # else a paused producer holds the close
        self.transport.loseConnection()
        self._schedule("close", self._settings.close_timeout, self.transport.abortConnection)

    def _detach(self) -> None:
        """Leave the router and every flow-control relation; stop timers. Idempotent."""
        self._router.remove_connection(self)
        self._ack_modes.clear()
        self._queue.clear()
        self._transactions.clear()  # open transactions are aborted
        self.held_bytes = 0
        self._release_publishers()
        for subscriber in self._blocked_by:
            subscriber._blocking.discard(self)
        self._blocked_by.clear()
        self.congested = False
        for name in ("connect", "congestion", "slow", "beat-send", "beat-receive"):
            self._cancel(name)

    def _schedule(self, name: str, delay: float, fn: Callable[[], object]) -> None:
        self._cancel(name)
        self._timers[name] = self._clock.callLater(max(delay, 0.0), fn)

    def _cancel(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()


class _Refused(protocol.Protocol):
    """A connection over a cap: one ERROR frame, then closed (aborted if it does not read)."""

    def __init__(self, message: str, clock: IReactorTime, close_timeout: float) -> None:
        self._message = message
        self._clock = clock
        self._close_timeout = close_timeout
        self._abort: IDelayedCall | None = None

    def connectionMade(self) -> None:
        frame = StompFrame(
            StompSpec.ERROR,
            rawHeaders=[(StompSpec.CONTENT_TYPE_HEADER, "text/plain"), ("message", self._message)],
            body=self._message.encode("utf-8") + b"\n",
            version=StompSpec.VERSION_1_0,
        )
        self.transport.write(encode_frame(frame))
        self.transport.loseConnection()
        self._abort = self._clock.callLater(self._close_timeout, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        """Ignored: this connection is being closed."""

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self._abort is not None and self._abort.active():
            self._abort.cancel()


class BrokerFactory(protocol.Factory):
    """I build a BrokerProtocol per client; all of them share one Router.

    Over ``max_connections`` in total, or ``max_connections_per_address`` from one source
    address, a new connection gets an ERROR and is closed at once (see
    :mod:`socketeer.broker.admission`). Given the process's ``logins``
    (:class:`socketeer.logins.Logins`), CONNECT passcodes are checked through its door
    ``broker``: off the reactor thread, cached, with a per-address lockout.
    """

    log = Logger()

    def __init__(
        self,
        router: Router,
        clock: IReactorTime,
        users: Mapping[str, str] | None = None,
        limits: StompLimits = StompLimits(),  # noqa: B008 - immutable NamedTuple
        heartbeat_ms: tuple[int, int] = (10000, 10000),
        connect_timeout: float = DEFAULT_BROKER_HANDSHAKE_TIMEOUT,
        congestion_timeout: float = 60.0,
        close_timeout: float = 5.0,
        max_subscriptions: int = 1024,
        destinations: Mapping[str, Iterable[str]] | None = None,
        subscriber_queue: int = _Settings.subscriber_queue,
        slow_subscriber_timeout: float = _Settings.slow_subscriber_timeout,
        max_connect_frame: int = DEFAULT_BROKER_MAX_CONNECT_FRAME,
        max_connections: int = DEFAULT_BROKER_MAX_CONNECTIONS,
        max_connections_per_address: int = DEFAULT_BROKER_MAX_CONNECTIONS_PER_ADDRESS,
        max_transactions: int = DEFAULT_BROKER_MAX_TRANSACTIONS,
        max_transaction_bytes: int = DEFAULT_BROKER_MAX_TRANSACTION_BYTES,
        cert_login: bool = False,
        logins: Logins | None = None,
    ) -> None:
        self.router = router
        self._clock = clock
        # With the process's logins, passcodes are hashed off the reactor thread, cached,
        # and failures counted per address (door "broker"); without, on the calling thread.
        door = (
            logins.door("broker", {k: Secret(v) for k, v in (users or {}).items()})
            if logins is not None and users
            else None
        )
        self._settings = _Settings(
            auth=BrokerAuth(users, destinations, cert_login=cert_login, door=door),
            limits=limits,
            heartbeat_ms=heartbeat_ms,
            connect_timeout=connect_timeout,
            congestion_timeout=congestion_timeout,
            close_timeout=close_timeout,
            max_subscriptions=max_subscriptions,
            subscriber_queue=subscriber_queue,
            slow_subscriber_timeout=slow_subscriber_timeout,
            handshake_limits=handshake_limits(limits, max_connect_frame),
            max_transactions=max_transactions,
            max_transaction_bytes=max_transaction_bytes,
        )
        self.counters = BrokerCounters()
        self._sessions = itertools.count(1)
        #: The live connections, for statistics and tests.
        self.connections: set[BrokerProtocol] = set()
        #: The caps, and every refusal counted by cause (for /metrics).
        self.admission = Admission(clock, max_connections, max_connections_per_address)
        self._hosts: dict[BrokerProtocol, str | None] = {}

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        host = peer_host(addr)
        cause = self.admission.admit(host)
        if cause is not None:
            admission = self.admission
            if host is not None and cause != "connections":
                message = f"too many connections from {host} (at most {admission.max_per_address})"
            else:
                message = f"too many connections (at most {admission.max_connections})"
            admission.refuse(cause, f"a connection from {host or 'a local socket'}", message)
            return _Refused(message, self._clock, self._settings.close_timeout)
        proto = BrokerProtocol(
            self.router,
            self._clock,
            self._settings,
            session_id=f"session-{next(self._sessions)}",
            on_close=self._closed,
            counters=self.counters,
            admission=self.admission,
        )
        self.connections.add(proto)
        self._hosts[proto] = host
        return proto

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the queues of congested subscribers, over all connections."""
        return sum(proto.queued_bytes for proto in self.connections)

    def _closed(self, proto: BrokerProtocol) -> None:
        self.connections.discard(proto)
        if proto in self._hosts:
            self.admission.release(self._hosts.pop(proto))
