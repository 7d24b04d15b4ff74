"""The embedded in-process STOMP broker: one BrokerProtocol per client connection.

Parsing is :class:`socketeer.wire.stompframing.StompFrameParser`; who receives a
message is :class:`socketeer.broker.router.Router`; where it listens is
:mod:`socketeer.broker.listeners`. This module only moves bytes, keeps per-connection
state, and runs the timers (all on the injected clock).

Connection lifecycle::

    AWAITING_CONNECT --CONNECT/STOMP ok--> CONNECTED --DISCONNECT/error--> CLOSING --lost--> CLOSED
           \\--bad first frame, bad login, no common version, timeout--> CLOSING

Any protocol error earns that client (and only that client) an ERROR frame
followed by ``loseConnection``; if the peer does not read it within
``close_timeout`` seconds the connection is aborted.

Slow subscribers, and why memory stays bounded: every BrokerProtocol registers
itself as a streaming producer on its own transport. When that transport's
write buffer fills it calls our ``pauseProducing``: the connection is then
*congested*. We never stop writing to it (messages already routed must not be
lost); instead, each publisher that routes a message to a congested subscriber
gets its own socket reading paused, so it cannot push more into the
subscriber's buffer than what it had already sent. When the subscriber's
transport drains and calls ``resumeProducing``, the publishers it paused are
released; a publisher paused by several congested subscribers resumes only
when all of them have drained. A connection is never paused on account of
itself, so a client that subscribes to what it publishes cannot deadlock. A
subscriber that stays congested longer than ``congestion_timeout`` is dropped
with an ERROR, which also releases its publishers. While a publisher is paused
we cannot see its heart-beats, so its receive deadline is suspended.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from stompest.protocol import StompSpec
from twisted.internet import protocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import __version__, fastwrite
from socketeer.broker.router import Delivery, DuplicateSubscription, Router
from socketeer.broker.users import BrokerAuth
from socketeer.wire.stompframing import (
    StompFrame,
    StompFrameParser,
    StompHeartBeat,
    StompLimits,
    StompProtocolError,
    can_encode_header,
    encode_frame,
)

__all__ = ["BrokerFactory", "BrokerProtocol"]

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
    ) -> None:
        self._router = router
        self._clock = clock
        self._settings = settings
        self.session_id = session_id
        self._on_close = on_close
        self.state = _State.AWAITING_CONNECT
        self.version = StompSpec.VERSION_1_0
        self.login: str | None = None
        #: Byte counters, for statistics and tests.
        self.bytes_received = 0
        self.bytes_sent = 0
        #: True while my transport has asked me to stop producing (its buffer is full).
        self.congested = False
        self.congestion_events = 0  # times my transport pushed back (for status)
        self._parser = StompFrameParser(limits=settings.limits, server=True)
        self._message_ids = itertools.count(1)
        self._ack_modes: dict[str, str] = {}
        self._blocked_by: set[BrokerProtocol] = set()  # congested subscribers pausing me
        self._blocking: set[BrokerProtocol] = set()  # publishers I paused
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
            StompSpec.BEGIN: self._on_transaction,
            StompSpec.COMMIT: self._on_transaction,
            StompSpec.ABORT: self._on_transaction,
            StompSpec.DISCONNECT: self._on_disconnect,
        }

    @property
    def paused(self) -> bool:
        """True while I stopped reading this client because a subscriber is congested."""
        return bool(self._blocked_by)

    # -- Protocol --------------------------------------------------------

    def connectionMade(self) -> None:
        fastwrite.no_delay(self.transport)
        fastwrite.large_reads(self.transport)
        self.transport.registerProducer(self, True)
        self._last_received = self._last_sent = self._clock.seconds()
        self._schedule("connect", self._settings.connect_timeout, self._connect_timed_out)
        self.log.debug(
            "{session} accepted from {peer}", session=self.session_id, peer=self.transport.getPeer()
        )

    def dataReceived(self, data: bytes) -> None:
        if self.state not in (_State.AWAITING_CONNECT, _State.CONNECTED):
            return
        self.bytes_received += len(data)
        self._last_received = self._clock.seconds()
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
        self._release_publishers()

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
        login = headers.get(StompSpec.LOGIN_HEADER)
        certified = self._settings.auth.certified_login(self.transport, login)
        if certified is not None:
            login = certified  # a verified client certificate's common name: no passcode
        elif not self._authenticate(login, headers.get(StompSpec.PASSCODE_HEADER)):
            self.log.warn(
                "{session}: authentication failed for login {login!r}",
                session=self.session_id,
                login=login,
            )
            self._fail("Authentication failed", headers)
            return
        client_beats = (0, 0)
        if version != StompSpec.VERSION_1_0:
            try:
                client_beats = self._parse_heartbeat(headers.get(StompSpec.HEART_BEAT_HEADER))
            except ValueError:
                self._fail("bad heart-beat header", headers)
                return
        self._cancel("connect")
        self.version = self._parser.version = version
        self.login = login
        self.state = _State.CONNECTED
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

    def _authenticate(self, login: str | None, passcode: str | None) -> bool:
        # Constant-time, and an unknown login costs as much as a known one (broker.users).
        return self._settings.auth.check(login, passcode)

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
        if StompSpec.TRANSACTION_HEADER in headers:
            self._fail("transactions are not supported", headers)
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
        """Messages are handed over at delivery; ACK and NACK are accepted and ignored."""

    def _on_transaction(self, frame: StompFrame, headers: dict[str, str]) -> None:
        self._fail("transactions are not supported", headers)

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
            subscriber._deliver(delivery.subscription_id, delivery.message)
            if subscriber.congested and subscriber is not self:
                self._pause_for(subscriber)

    def _deliver(self, sid: str, message: _Message) -> None:
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
            self.bytes_sent += len(head_bytes) + len(body) + 1
            self._last_sent = self._clock.seconds()
            fastwrite.write_sequence(self.transport, (head_bytes, body, b"\0"))
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
        self._write(data)

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
        self._fail(f"no CONNECT frame within {self._settings.connect_timeout:g}s")

    # -- output, errors and teardown -------------------------------------

    def _send(self, command: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        frame = StompFrame(command, rawHeaders=headers, body=body, version=self.version)
        self._write(encode_frame(frame))

    def _write(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        self._last_sent = self._clock.seconds()
        fastwrite.write(self.transport, data)

    def _fail(
        self,
        message: str,
        headers: Mapping[str, str] | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send ERROR to this client and close it; ``headers`` are the offending frame's."""
        if self.state not in (_State.AWAITING_CONNECT, _State.CONNECTED):
            return
        self.log.warn("{session} error: {message}", session=self.session_id, message=message)
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
        self._detach()
        self.transport.unregisterProducer()  # else a paused producer holds the close
        self.transport.loseConnection()
        self._schedule("close", self._settings.close_timeout, self.transport.abortConnection)

    def _detach(self) -> None:
        """Leave the router and every flow-control relation; stop timers. Idempotent."""
        self._router.remove_connection(self)
        self._ack_modes.clear()
        self._release_publishers()
        for subscriber in self._blocked_by:
            subscriber._blocking.discard(self)
        self._blocked_by.clear()
        self.congested = False
        for name in ("connect", "congestion", "beat-send", "beat-receive"):
            self._cancel(name)

    def _schedule(self, name: str, delay: float, fn: Callable[[], object]) -> None:
        self._cancel(name)
        self._timers[name] = self._clock.callLater(max(delay, 0.0), fn)

    def _cancel(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()


class BrokerFactory(protocol.Factory):
    """I build a BrokerProtocol per client; all of them share one Router."""

    log = Logger()

    def __init__(
        self,
        router: Router,
        clock: IReactorTime,
        users: Mapping[str, str] | None = None,
        limits: StompLimits = StompLimits(),  # noqa: B008 - immutable NamedTuple
        heartbeat_ms: tuple[int, int] = (10000, 10000),
        connect_timeout: float = 30.0,
        congestion_timeout: float = 60.0,
        close_timeout: float = 5.0,
        max_subscriptions: int = 1024,
        destinations: Mapping[str, Iterable[str]] | None = None,
        cert_login: bool = False,
    ) -> None:
        self.router = router
        self._clock = clock
        self._settings = _Settings(
            auth=BrokerAuth(users, destinations, cert_login=cert_login),
            limits=limits,
            heartbeat_ms=heartbeat_ms,
            connect_timeout=connect_timeout,
            congestion_timeout=congestion_timeout,
            close_timeout=close_timeout,
            max_subscriptions=max_subscriptions,
        )
        self._sessions = itertools.count(1)
        #: The live connections, for statistics and tests.
        self.connections: set[BrokerProtocol] = set()

    def buildProtocol(self, addr: object) -> BrokerProtocol:
        proto = BrokerProtocol(
            self.router,
            self._clock,
            self._settings,
            session_id=f"session-{next(self._sessions)}",
            on_close=self.connections.discard,
        )
        self.connections.add(proto)
        return proto
