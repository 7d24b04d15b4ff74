"""HTTP on the proxy port: CONNECT tunnels and forward proxying with client keep-alive.

CONNECT becomes a plain relay, like SOCKS. A forward request (``GET http://host/...``) gets
its own stream to its own origin: the rewritten head and the body (framing untouched) go
up the stream, and the response comes back to ``ResponseReceiver``, the protocol on that
stream, which passes every byte through ``wire.httpproxy.ResponseReader`` to the client.
When the reader says the response is complete, the stream is closed and, if the client may
keep the connection, the next request is read: so one client connection can visit many
origins, each request routed by its own absolute URI.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer.source.handler import Handler, ProxyConnection
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.stream import Stream
from socketeer.wire.httpproxy import (
    CONNECT_ESTABLISHED,
    BodyChunk,
    EndOfRequest,
    HttpError,
    ProxyRequest,
    RequestReader,
    ResponseReader,
    error_response,
    proxy_auth_required,
)

#: How long a kept-alive client connection may wait for its next request.
KEEPALIVE_TIMEOUT = 120.0


def failure_response(reason: OpenFailure, target: str) -> bytes:
    """The proxy's answer when the sink could not reach the origin (RFC 9110 502 / 504)."""
    if reason is OpenFailure.TIMEOUT:
        return error_response(504, "Gateway Timeout", f"Timed out connecting to {target}.\n")
    if reason in (OpenFailure.NO_SINK, OpenFailure.CHANNEL_LOST):  # the tunnel, not the origin
        return error_response(
            504, "Gateway Timeout", f"The tunnel did not reach {target} in time ({reason.value}).\n"
        )
    if reason is OpenFailure.LIMIT:
        return error_response(
            503, "Service Unavailable", f"The tunnel carries too many streams for {target}.\n"
        )
    if reason is OpenFailure.DENIED:
        return error_response(403, "Forbidden", f"Access to {target} is not allowed.\n")
    text = {
        OpenFailure.REFUSED: "refused the connection",
        OpenFailure.NAME_NOT_FOUND: "could not be resolved",
        OpenFailure.HOST_UNREACHABLE: "is unreachable",
        OpenFailure.NETWORK_UNREACHABLE: "is on an unreachable network",
    }.get(reason, f"could not be reached ({reason.value})")
    return error_response(502, "Bad Gateway", f"{target} {text}.\n")


class HttpHandler(Handler):
    """Reads requests on one client connection and runs them one at a time."""

    log = Logger()

    def __init__(self, proto: ProxyConnection) -> None:
        self.proto = proto
        self.reader = RequestReader()
        self.exchange: Exchange | None = None
        self.client_done = False  # the client half-closed
        self.checking = False  # a password is being checked

    def data_received(self, data: bytes) -> None:
        self.reader.receive_data(data)
        if not self.checking:
            self.pump()

    def pump(self) -> None:
        proto = self.proto
        try:
            while not proto.closed and (event := self.reader.next_event()) is not None:
                if isinstance(event, ProxyRequest):
                    if not self._request(event):
                        return
                elif isinstance(event, BodyChunk):
                    self.exchange.stream.write(event.data)
                elif isinstance(event, EndOfRequest):
                    self.exchange.request_done()
        except HttpError as e:
            self.log.info(
                "bad HTTP request from {client}: {problem}", client=proto.client, problem=str(e)
            )
            if self.exchange is None or not self.exchange.response_started:
                proto.transport.write(e.response())
            self._abandon()

    def _request(self, request: ProxyRequest) -> bool:
        """Start one request; False when the connection stops being an HTTP reader."""
        proto = self.proto
        refusal = proto.client_refusal()  # the access list, before any password is checked
        if refusal is not None:
            self.log.info(
                "refused HTTP {method} {target} from {client}: {why}",
                method=request.method,
                target=f"{request.target_host}:{request.target_port}",
                client=proto.client,
                why=refusal,
            )
            proto.transport.write(
                error_response(403, "Forbidden", "This proxy does not serve your address.\n")
            )
            proto.close()
            return False
        authenticator = proto.settings.authenticator
        if authenticator is not None:
            creds = request.credentials
            if creds is None:
                return self._auth_refused(request)
            verdict: list[bool] = []
            d = maybeDeferred(authenticator.login, creds.user, creds.password, proto.client_address)
            d.addCallback(verdict.append)
            if not verdict:
                # The hash runs off the reactor thread: stop reading until the verdict (the
                # handshake timer still runs; a client that leaves meanwhile is forgotten).
                self.checking = True
                proto.transport.pauseProducing()
                d.addCallback(lambda _: self._checked(request, verdict[0]))
                return False
            if not verdict[0]:
                return self._auth_refused(request)
        return self._start(request)

    def _checked(self, request: ProxyRequest, ok: bool) -> None:
        self.checking = False
        proto = self.proto
        if proto.closed:
            return
        proto.transport.resumeProducing()
        if not ok:
            self._auth_refused(request)
        elif self._start(request):
            self.pump()  # the body and any pipelined bytes wait in the reader

    def _auth_refused(self, request: ProxyRequest) -> bool:
        proto = self.proto
        creds = request.credentials
        if creds is not None:
            self.log.info(
                "HTTP proxy authentication failed for user {user!r} from {client}",
                user=creds.user,
                client=proto.client,
            )
        proto.transport.write(proxy_auth_required())
        proto.close()
        return False

    def _start(self, request: ProxyRequest) -> bool:
        """Run an admitted request; False when the connection stops being an HTTP reader."""
        proto = self.proto
        target = f"{request.target_host}:{request.target_port}"
        if request.is_connect:
            proto.open_stream(
                request.target_host, request.target_port, self._tunnel_open, self._tunnel_failed
            )
            self.target = target
            return False  # the rest of the bytes belong to the tunnel
        self.exchange = Exchange(self, request, target)
        return True

    # -- CONNECT ------------------------------------------------------------------------------

    def _tunnel_open(self, stream: Stream, params: dict[str, str]) -> None:
        if self.proto.closed:
            stream.loseConnection()
            return
        self.proto.transport.write(CONNECT_ESTABLISHED)
        self.proto.start_relay(stream, self.reader.trailing_data())

    def _tunnel_failed(self, stream: Stream, reason: OpenFailure, message: str) -> None:
        if not self.proto.closed:
            self.proto.transport.write(failure_response(reason, self.target))
            self.proto.close()

    # -- forward requests ---------------------------------------------------------------------

    def read_closed(self) -> None:
        self.client_done = True
        if self.exchange is None:
            self.proto.close()

    def connection_lost(self) -> None:
        if self.exchange is not None:
            self.exchange.abandon()

    def exchange_done(self, keep_alive: bool) -> None:
        """The response is complete: read the next request, or close."""
        self.exchange = None
        proto = self.proto
        if proto.closed:
            return
        if not keep_alive or self.client_done:
            proto.close()
            return
        self.reader.start_next()
        proto.transport.resumeProducing()
        proto.set_timer(KEEPALIVE_TIMEOUT, proto.close)
        self.pump()

    def _abandon(self) -> None:
        if self.exchange is not None:
            self.exchange.abandon()
        self.proto.close()


@implementer(IHalfCloseableProtocol, IPushProducer)
class ResponseReceiver(Protocol):
    """The protocol on a forward request's stream: the response, through the framer, to the
    client.

    Flow control works as on a relay: the client's socket pushes back on the stream, and
    the stream's window pauses reading the client's body (this is the producer registered
    on the stream).
    """

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.client = exchange.handler.proto.transport
        self._registered = False

    def connectionMade(self) -> None:
        self.client.registerProducer(self.transport, True)
        self._registered = True
        self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self.exchange.response_bytes(data)

    def readConnectionLost(self) -> None:
        self._unregister()  # no more writes from this stream
        self.exchange.origin_closed()

    def writeConnectionLost(self) -> None:
        pass  # a forward request is never half-closed toward the origin

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._unregister()
        dropped = reason is not None and reason.check(ConnectionDone) is None
        self.exchange.stream_closed(dropped=dropped)

    def _unregister(self) -> None:
        if self._registered:
            self._registered = False
            self.client.unregisterProducer()

    # -- IPushProducer: reading the client, as the stream's window sees it -------------------

    def pauseProducing(self) -> None:
        self.client.pauseProducing()

    def resumeProducing(self) -> None:
        # Once the request is complete the client stays paused: what it sends next is the
        # next request, read only after this response.
        if not self.exchange.request_complete:
            self.client.resumeProducing()

    def stopProducing(self) -> None:
        pass


class Exchange:
    """One forwarded request and its response, over its own stream."""

    log = Logger()

    def __init__(self, handler: HttpHandler, request: ProxyRequest, target: str) -> None:
        self.handler = handler
        self.request = request
        self.target = target
        self.response = ResponseReader(request)
        self.finished = False
        self.request_complete = False
        proto = handler.proto
        self.stream = proto.open_stream(
            request.target_host, request.target_port, self._opened, self._failed
        )
        self.stream.write(request.head)  # optimistic: the sink holds it until connected

    @property
    def response_started(self) -> bool:
        return self.response.response_started

    def request_done(self) -> None:
        # The request is all sent; pipelined bytes wait in the reader (start_next).
        self.request_complete = True
        self.handler.proto.transport.pauseProducing()

    def _opened(self, stream: Stream, params: dict[str, str]) -> None:
        proto = self.handler.proto
        if proto.closed:
            stream.loseConnection()
            return
        proto.transport.resumeProducing()
        stream.attach_protocol(ResponseReceiver(self))

    def _failed(self, stream: Stream, reason: OpenFailure, message: str) -> None:
        proto = self.handler.proto
        self.finished = True
        self.handler.exchange = None
        if not proto.closed:
            proto.transport.write(failure_response(reason, self.target))
            proto.close()

    def response_bytes(self, data: bytes) -> None:
        if self.finished:
            return
        try:
            out = self.response.receive_data(data)
        except HttpError as e:
            self._bad_response(e)
            return
        self._write(out)

    def origin_closed(self) -> None:
        if self.finished:
            return
        try:
            out = self.response.upstream_closed()
        except HttpError as e:
            self._bad_response(e)
            return
        self._write(out)

    def stream_closed(self, *, dropped: bool = False) -> None:
        """The stream ended: CLOSE from the sink, or (``dropped``) a reset or lost session,
        after which a close-delimited body must not pass for complete."""
        if self.finished:
            return
        if not self.response.complete and not dropped:
            self.origin_closed()  # the origin's close may end a close-delimited body
        if not self.finished:
            self._bad_response(HttpError(502, "The origin closed before its response ended."))

    def _write(self, out: list[bytes]) -> None:
        proto = self.handler.proto
        if out and not proto.closed:
            proto.transport.write(b"".join(out))
        if self.response.complete:
            self._finish(self.response.client_keep_alive and self.request_complete)

    def _bad_response(self, error: HttpError) -> None:
        self.log.info(
            "bad response from {target}: {problem}", target=self.target, problem=str(error)
        )
        proto = self.handler.proto
        started = self.response.response_started
        self.finished = True
        self.handler.exchange = None
        self.stream.loseConnection()
        if proto.closed:
            return
        if started:
            proto.transport.abortConnection()  # a truncated response must not look complete
        else:
            proto.transport.write(error.response())
            proto.close()

    def _finish(self, keep_alive: bool) -> None:
        self.finished = True
        self.stream.loseConnection()  # the origin was told to close; we need nothing more
        self.handler.exchange_done(keep_alive)

    def abandon(self) -> None:
        """The client went away: drop the stream."""
        if not self.finished:
            self.finished = True
            self.stream.loseConnection()
