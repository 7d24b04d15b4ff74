"""Test helpers for fault tests against real processes: targets that count what reaches them,
a client that tells a reset from a FIN, a STOMP recorder and replayer at the broker, and a
link between a node and its broker that can swallow what the node sends.

The assertions these serve are the ones a user makes: how many times did the target see the
request, did the client get every byte and a FIN or else a reset, did the upload finish.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from stompest.protocol import StompFrame
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer.wire.envelope import H_SOURCE, H_TYPE, node_destination
from socketeer.wire.stompframing import StompFrameParser, encode_frame

from support.net import listen
from support.security import RawStomp, parse_frames

# -- targets ---------------------------------------------------------------------------------


class Requests:
    """What an HTTP target saw: each request line counted, and the connections made."""

    def __init__(self) -> None:
        self.lines: Counter[str] = Counter()
        self.connections = 0

    def saw(self, line: str) -> None:
        self.lines[line] += 1


class HttpTarget(protocol.Protocol):
    """A keep-alive HTTP/1.1 server: counts each request line, answers ``200 done <line>``.

    It keeps the connection open after answering, as real servers do: a client that holds
    it open is what keeps a stream alive across a sink restart.
    """

    def __init__(self, requests: Requests) -> None:
        self.requests = requests
        self.buffer = b""

    def connectionMade(self) -> None:
        self.requests.connections += 1

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for header in lines[1:]:
                name, _, value = header.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.requests.saw(lines[0])
            body = f"done {lines[0]}\n".encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    """One HTTP/1.1 request (keep-alive, the default) with a Content-Length."""
    head = f"{method} {path} HTTP/1.1\r\nHost: target\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def http_reply_complete(data: bytes) -> bool:
    """Whether ``data`` holds one whole HttpTarget answer (head and Content-Length body)."""
    head, sep, rest = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for header in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            return len(rest) >= int(value)
    return False


async def http_target(requests: Requests, ports: list) -> int:
    """An HttpTarget on a fresh loopback port (appended to ``ports``)."""
    return await listen(protocol.Factory.forProtocol(lambda: HttpTarget(requests)), ports)


# -- a client that tells a reset from a FIN ----------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How a client connection ended: the bytes it got, whether a FIN came, whether it was
    reset (ECONNRESET) rather than closed."""

    data: bytes
    fin: bool
    reset: bool

    def __str__(self) -> str:
        how = "reset" if self.reset else "FIN" if self.fin else "closed"
        return f"{len(self.data)} bytes, then {how}"


@implementer(IHalfCloseableProtocol)
class Client(protocol.Protocol):
    """A client socket as an application holds it: it reads until the peer's FIN (then
    closes) or until a reset; ``ended`` fires with the Outcome, ``until`` once what arrived
    meets a condition."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.fin = False
        self.ended: defer.Deferred = defer.Deferred()
        self._watch: list[tuple[Callable[[bytes], bool], defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for entry in list(self._watch):
            condition, d = entry
            if condition(bytes(self.data)):
                self._watch.remove(entry)
                d.callback(bytes(self.data))

    def until(self, condition: Callable[[bytes], bool], timeout: float = 15) -> defer.Deferred:
        """Fires with what arrived once ``condition(data)`` holds."""
        d: defer.Deferred = defer.Deferred()
        if condition(bytes(self.data)):
            d.callback(bytes(self.data))
            return d
        self._watch.append((condition, d))
        return d.addTimeout(timeout, reactor)

    def readConnectionLost(self) -> None:
        self.fin = True
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        reset = reason is not None and not reason.check(ConnectionDone)
        for _, d in self._watch:
            d.errback(AssertionError(f"the connection ended first: {len(self.data)} bytes"))
        self._watch.clear()
        self.ended.callback(Outcome(bytes(self.data), self.fin, reset and not self.fin))


async def outcome_within(user: Client, seconds: float) -> Outcome:
    """How ``user``'s connection ended, or an AssertionError saying it had not after
    ``seconds`` (a client left hanging is a failure of its own)."""
    try:
        return await user.ended.addTimeout(seconds, reactor)
    except defer.TimeoutError:
        raise AssertionError(
            f"the client's connection was still open after {seconds}s,"
            f" with {len(user.data)} bytes received"
        ) from None


async def client(port: int) -> Client:
    """A Client connected to 127.0.0.1:``port``."""
    proto = Client()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(lambda: proto)
    )
    return proto


# -- recording and replaying at the broker ---------------------------------------------------


class Recorder(RawStomp):
    """A STOMP client subscribed to one node's destination: what anyone with broker access
    can see. It keeps the MESSAGE frames from ``source`` while ``recording`` is set."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.recording = False
        self.recorded: list[StompFrame] = []
        self._next: list[defer.Deferred] = []

    def dataReceived(self, data: bytes) -> None:
        before = len(self.frames)
        super().dataReceived(data)
        if self.recording:
            for frame in self.frames[before:]:
                if frame.command == "MESSAGE" and frame.headers.get(H_SOURCE) == self.source:
                    self.recorded.append(frame)
        if len(self.frames) > before:
            waiting, self._next = self._next, []
            for d in waiting:
                d.callback(None)

    async def replay(self, frames: list[StompFrame], timeout: float = 10) -> None:
        """Publish ``frames`` again, byte for byte in body and headers, as SENDs to where they
        went; return once the broker has routed the last one (a RECEIPT)."""
        skipped = {"message-id", "subscription", "ack", "content-length"}
        receipt = f"replayed-{len(self.frames)}"
        for i, frame in enumerate(frames):
            headers = [(k, v) for k, v in frame.rawHeaders or () if k not in skipped]
            if i == len(frames) - 1:
                headers.append(("receipt", receipt))
            send = StompFrame("SEND", rawHeaders=headers, body=frame.body, version="1.2")
            self.transport.write(encode_frame(send))
        await self.receipt(receipt, timeout)

    async def receipt(self, receipt: str, timeout: float) -> None:
        """Wait (bounded) for the RECEIPT of ``receipt``."""
        deadline = reactor.seconds() + timeout
        while not any(
            f.command == "RECEIPT" and f.headers.get("receipt-id") == receipt for f in self.frames
        ):
            left = deadline - reactor.seconds()
            assert left > 0, f"no RECEIPT {receipt} within {timeout}s"
            await self.next_frame(left)

    def next_frame(self, timeout: float) -> defer.Deferred:
        """Fires when the next frame arrives."""
        d: defer.Deferred = defer.Deferred()
        self._next.append(d)
        return d.addTimeout(timeout, reactor)


async def recorder(broker: int, topic: str, cluster: str, node: str, source: str) -> Recorder:
    """A Recorder logged in to ``broker`` and subscribed to ``node``'s destination."""
    proto = Recorder(source)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", broker).connect(
        protocol.Factory.forProtocol(lambda: proto)
    )
    proto.send("CONNECT", {"accept-version": "1.2", "host": "127.0.0.1"})
    await proto.expect("CONNECTED")
    destination = node_destination(topic, cluster, node)
    proto.send("SUBSCRIBE", {"id": "rec", "destination": destination, "receipt": "subscribed"})
    await proto.receipt("subscribed", 10)
    return proto


# -- a link that swallows what a node sends ----------------------------------------------------


class _Downstream(protocol.Protocol):
    """The node's side of one proxied connection."""

    def __init__(self, link: SwallowingLink) -> None:
        self.link = link
        self.upstream: _Upstream | None = None
        self.held = bytearray()  # what the node sent before the broker connection was up
        self.swallowing = False
        self.parser = StompFrameParser(server=True)

    def connectionMade(self) -> None:
        self.link.connections.append(self)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.link.broker)
        d = endpoint.connect(protocol.Factory.forProtocol(lambda: _Upstream(self)))
        d.addCallbacks(self._connected, lambda _: self.transport.abortConnection())

    def _connected(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        if self.held:
            upstream.transport.write(bytes(self.held))
            self.held.clear()

    def dataReceived(self, data: bytes) -> None:
        frames = parse_frames(self.parser, data)
        if self.swallowing:
            self.link.swallowed(frames)
        elif self.upstream is None:
            self.held += data
        else:
            self.upstream.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class _Upstream(protocol.Protocol):
    """The broker's side of one proxied connection."""

    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def dataReceived(self, data: bytes) -> None:
        self.downstream.transport.write(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.downstream.transport.abortConnection()


class SwallowingLink(protocol.Factory):
    """A TCP link between a node and its broker. After ``swallow()`` the frames the node
    sends on the connections open now are read off its socket and dropped, as if they sat in
    the socket of a broker about to die; ``wait_swallowed(type)`` fires once a message of that
    type was dropped. Connections made later pass everything."""

    def __init__(self, broker: int) -> None:
        self.broker = broker
        self.connections: list[_Downstream] = []
        self.dropped: list[StompFrame] = []
        self._waiters: list[tuple[str, defer.Deferred]] = []

    def buildProtocol(self, addr) -> _Downstream:
        return _Downstream(self)

    def swallow(self) -> None:
        for conn in self.connections:
            conn.swallowing = True

    def swallowed(self, frames: list[StompFrame]) -> None:
        self.dropped += [f for f in frames if f.command == "SEND"]
        for entry in list(self._waiters):
            kind, d = entry
            if self.dropped_types().count(kind):
                self._waiters.remove(entry)
                d.callback(None)

    def dropped_types(self) -> list[str]:
        return [f.headers.get(H_TYPE, "") for f in self.dropped]

    def wait_swallowed(self, kind: str, timeout: float = 15) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if kind in self.dropped_types():
            d.callback(None)
            return d
        self._waiters.append((kind, d))
        return d.addTimeout(timeout, reactor)
