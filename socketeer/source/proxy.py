"""The proxy port: SOCKS4/4a/5 and HTTP on one listener, each connection handed to a stream.

``ProxyProtocol`` is the switchboard for one client connection. It sniffs the first byte
(0x04 SOCKS4/4a, 0x05 SOCKS5, an ASCII letter for HTTP, like gost's and pproxy's mixed
ports), feeds a sans-IO parser (``wire.socks``, ``wire.httpproxy``) through a small
handler, and once a target is known asks the node for a stream. While the stream opens the
client is not read (the portforward rule); when the sink answers, the handler writes the
protocol's own reply, built from the sink's real outcome, and the connection becomes a
plain relay: bytes and FIN go to the stream, the stream writes back to the transport.

HTTP forward proxying (absolute-URI requests) is the one mode that is not a plain relay:
each request gets its own stream, and the response comes back through a framer that
rewrites its head and finds its end, so the client connection can be kept alive across
requests to different origins (``httphandler.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from socketeer import fastwrite
from socketeer.config.model import ProxyConfig
from socketeer.passwords import Authenticator
from socketeer.policy import Decision, PolicyRef, client_host
from socketeer.source.forward import denied_stream
from socketeer.tunnel.node import Node
from socketeer.tunnel.reasons import SOCKS5_REPLY, OpenFailure, describe_peer
from socketeer.tunnel.resolve import ResolveError
from socketeer.tunnel.stream import Stream
from socketeer.wire import socks


@dataclass(frozen=True)
class ProxySettings:
    """Everything a proxy connection needs besides its node."""

    peer: str  # the sink node
    socks4: bool = True
    socks5: bool = True
    http: bool = True
    authenticator: Authenticator | None = None
    handshake_timeout: float = 10.0
    idle_timeout: float = 0.0
    open_timeout: float = 30.0
    policy: PolicyRef | None = None  # access list and target policy, swapped on reload

    @classmethod
    def from_config(
        cls,
        peer: str,
        proxy: ProxyConfig,
        open_timeout: float,
        policy: PolicyRef | None = None,
    ) -> ProxySettings:
        return cls(
            policy=policy,
            peer=peer,
            socks4=proxy.socks4,
            socks5=proxy.socks5,
            http=proxy.http,
            authenticator=Authenticator(proxy.users) if proxy.users is not None else None,
            handshake_timeout=proxy.handshake_timeout,
            idle_timeout=proxy.idle_timeout,
            open_timeout=open_timeout,
        )


class Handler:
    """One protocol's handshake on a proxy connection (SOCKS or HTTP)."""

    def data_received(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read_closed(self) -> None:
        """The client sent FIN before the tunnel was up: nothing more will come."""
        self.proto.close()

    def connection_lost(self) -> None:
        pass


class ProxyFactory(Factory):
    def __init__(self, node: Node, settings: ProxySettings, clock: IReactorTime) -> None:
        self.node = node
        self.settings = settings
        self.clock = clock

    def buildProtocol(self, addr) -> ProxyProtocol:
        return ProxyProtocol(self.node, self.settings, self.clock)


@implementer(IHalfCloseableProtocol)
class ProxyProtocol(Protocol):
    """One client connection on the proxy port."""

    log = Logger()

    def __init__(self, node: Node, settings: ProxySettings, clock: IReactorTime) -> None:
        self.node = node
        self.settings = settings
        self.clock = clock
        self.handler: Handler | None = None
        self.stream: Stream | None = None  # set once relaying
        self.client = ""
        self._timer: IDelayedCall | None = None
        self._idle_mark = -1
        self.closed = False
        self._read_closed = False
        self._write_closed = False
        self._admission: Decision | None = None  # the access list's verdict on this client
        self._refusal_counted = False

    # -- connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        fastwrite.large_reads(self.transport)
        fastwrite.no_delay(self.transport)
        peer = self.transport.getPeer()
        self.client = describe_peer(peer)
        if self.settings.policy is not None:
            self._admission = self.settings.policy.policy.admit(client_host(peer))
        self.set_timer(self.settings.handshake_timeout, self._handshake_timed_out)

    @property
    def admitted(self) -> bool:
        return self._admission is None or self._admission.allowed

    def client_refusal(self) -> str | None:
        """Why the access list refuses this client (counted once), or None if it may proceed.

        A refused client still gets its protocol's own answer to its request (SOCKS5 0x02,
        SOCKS4 0x5B, HTTP 403) rather than a bare close; no password is checked for it.
        """
        if self.admitted:
            return None
        if not self._refusal_counted:
            self._refusal_counted = True
            self.node.stats.denied[self._admission.rule] += 1
        return self._admission.rule_text

    def dataReceived(self, data: bytes) -> None:
        if self.stream is not None:
            self.stream.local_data(data)
            return
        if self.handler is None:
            self.handler = self._sniff(data[:1])
            if self.handler is None:
                return
        self.handler.data_received(data)

    def readConnectionLost(self) -> None:
        self._read_closed = True
        if self.stream is not None:
            self.stream.local_eof()
            self._maybe_done()
        elif self.handler is not None:
            self.handler.read_closed()
        else:
            self.close()

    def writeConnectionLost(self) -> None:
        self._write_closed = True  # the target's FIN, passed on through the stream
        self._maybe_done()

    def _maybe_done(self) -> None:
        # Twisted does not end a connection whose halves were closed separately.
        if self._read_closed and self._write_closed:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self.closed = True
        self.cancel_timer()
        if self.stream is not None:
            self.stream.local_lost(reason)
        if self.handler is not None:
            self.handler.connection_lost()

    def close(self) -> None:
        if not self.closed:
            self.transport.loseConnection()

    # -- choosing the protocol ----------------------------------------------------------------

    def _sniff(self, first: bytes) -> Handler | None:
        if first in (b"\x04", b"\x05"):
            return SocksHandler(self)
        if first.isalpha():
            if not self.settings.http:
                from socketeer.wire.httpproxy import error_response

                self.log.info("refused HTTP from {client}: disabled", client=self.client)
                self.transport.write(
                    error_response(501, "Not Implemented", "HTTP proxying is disabled here.")
                )
                self.close()
                return None
            from socketeer.source.http import HttpHandler

            return HttpHandler(self)
        self.log.info(
            "closed {client}: not SOCKS or HTTP (first byte {byte!r})",
            client=self.client,
            byte=first,
        )
        self.transport.abortConnection()
        return None

    # -- timers -------------------------------------------------------------------------------

    def set_timer(self, seconds: float, action: Callable[[], None]) -> None:
        self.cancel_timer()
        if seconds > 0:
            self._timer = self.clock.callLater(seconds, action)

    def cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self.log.info("closed {client}: handshake timed out", client=self.client)
        self.transport.abortConnection()

    def _idle_check(self) -> None:
        self._timer = None
        stream = self.stream
        if stream is None:
            return
        mark = stream.sent + stream.delivered
        if mark == self._idle_mark:
            self.log.info("closed {client}: idle", client=self.client)
            stream.shutdown()
            return
        self._idle_mark = mark
        self.set_timer(self.settings.idle_timeout, self._idle_check)

    # -- streams ------------------------------------------------------------------------------

    def open_stream(
        self,
        host: str,
        port: int,
        on_open: Callable[[Stream, dict[str, str]], None],
        on_fail: Callable[[Stream, OpenFailure, str], None],
    ) -> Stream:
        """Ask the sink for ``host:port``; the client is not read until it answers.

        The source's policy comes first: a maplist may rewrite the target, and a denied
        target fails the stream with DENIED without a message to the sink (``on_fail``
        then runs on the next turn of the reactor, as it would for the sink's answer).
        """
        self.cancel_timer()
        self.transport.pauseProducing()
        policy = self.settings.policy
        if policy is not None:
            decision = policy.policy.evaluate(
                host, port, cluster=self.node.cluster, node=self.settings.peer
            )
            if not decision.allowed:

                def later(stream: Stream, reason: OpenFailure, message: str) -> None:
                    self.clock.callLater(0, on_fail, stream, reason, message)

                return denied_stream(
                    self.node, self.settings.peer, f"{host}:{port}", self.client, decision, later
                )
            if decision.mapped_by:
                self.log.debug(
                    "{client}: {host}:{port} mapped to {target} by {rule}",
                    client=self.client,
                    host=host,
                    port=port,
                    target=f"{decision.target_host}:{decision.target_port}",
                    rule=decision.mapped_by,
                )
            host, port = decision.target_host, decision.target_port
        stream = self.node.open_stream(
            self.settings.peer,
            host,
            port,
            client=self.client,
            timeout=self.settings.open_timeout,
        )
        stream.on_open = on_open
        stream.on_open_failed = on_fail
        return stream

    def start_relay(self, stream: Stream, leftover: bytes = b"") -> None:
        """The reply is written: from now on this connection is a plain relay."""
        self.stream = stream
        self.handler = None
        self.transport.resumeProducing()
        stream.attach(self.transport)
        if leftover:
            stream.local_data(leftover)
        if self.settings.idle_timeout > 0:
            self.set_timer(self.settings.idle_timeout, self._idle_check)


class SocksHandler(Handler):
    """SOCKS4/4a/5 on a proxy connection, over ``wire.socks.SocksServer``."""

    log = Logger()

    def __init__(self, proto: ProxyProtocol) -> None:
        self.proto = proto
        settings = proto.settings
        self.server = socks.SocksServer(
            socks4=settings.socks4,
            socks5=settings.socks5,
            # A client the access list refuses is not asked for a password: it gets 0x02.
            require_auth=settings.authenticator is not None and proto.admitted,
        )
        self.request: socks.Request | None = None

    def data_received(self, data: bytes) -> None:
        server = self.server
        server.receive_data(data)
        if self.request is not None:
            return  # bytes behind the request wait in trailing_data()
        try:
            while (event := server.next_event()) is not None:
                if isinstance(event, socks.NeedsAuth):
                    self._authenticate(event)
                else:
                    self.request = event
                    break
        except socks.SocksError as e:
            self.log.info(
                "refused SOCKS from {client}: {problem}", client=self.proto.client, problem=str(e)
            )
            self.proto.transport.write(e.reply)
            self.proto.close()
            return
        out = server.data_to_send()
        if out:
            self.proto.transport.write(out)
        if self.request is not None:
            self._handle(self.request)

    def _authenticate(self, event: socks.NeedsAuth) -> None:
        authenticator = self.proto.settings.authenticator
        ok = authenticator is not None and authenticator.check(event.username, event.password)
        if not ok:
            self.log.info(
                "SOCKS5 authentication failed for user {user!r} from {client}",
                user=event.username,
                client=self.proto.client,
            )
        self.server.auth_result(ok)

    def _fail_code(self, reason: OpenFailure) -> int:
        if self.server.version == 4:
            return socks.SOCKS4_REJECTED
        return SOCKS5_REPLY[reason]

    def _refuse(self, code: int, why: str) -> None:
        request = self.request
        self.log.info(
            "refused SOCKS{v} {cmd} {host}:{port} from {client}: {why}",
            v=self.server.version,
            cmd=request.command.name if request else "?",
            host=request.host if request else "",
            port=request.port if request else 0,
            client=self.proto.client,
            why=why,
        )
        self.proto.transport.write(self.server.reply(code))
        self.proto.close()

    def _handle(self, request: socks.Request) -> None:
        command = request.command
        v4 = self.server.version == 4
        refusal = self.proto.client_refusal()
        if refusal is not None:
            self._refuse(socks.SOCKS4_REJECTED if v4 else SOCKS5_REPLY[OpenFailure.DENIED], refusal)
            return
        if command in (socks.Command.RESOLVE, socks.Command.RESOLVE_PTR):
            self._resolve(request)
            return
        if command is not socks.Command.CONNECT:
            code = socks.SOCKS4_REJECTED if v4 else socks.Socks5Reply.COMMAND_NOT_SUPPORTED
            self._refuse(code, "command not supported")
            return
        if request.port == 0:
            code = socks.SOCKS4_REJECTED if v4 else socks.Socks5Reply.GENERAL_FAILURE
            self._refuse(code, "port 0")
            return
        self.proto.open_stream(request.host, request.port, self._opened, self._open_failed)

    def _opened(self, stream: Stream, params: dict[str, str]) -> None:
        if self.proto.closed:
            stream.shutdown()
            return
        code = socks.SOCKS4_GRANTED if self.server.version == 4 else socks.Socks5Reply.SUCCEEDED
        try:
            bound_port = int(params.get("port", "0"))
        except ValueError:
            bound_port = 0
        self.proto.transport.write(
            self.server.reply(code, params.get("host", "0.0.0.0"), bound_port)
        )
        self.proto.start_relay(stream, self.server.trailing_data())

    def _open_failed(self, stream: Stream, reason: OpenFailure, message: str) -> None:
        if not self.proto.closed:
            self.proto.transport.write(self.server.reply(self._fail_code(reason)))
            self.proto.close()

    def _resolve(self, request: socks.Request) -> None:
        proto = self.proto
        proto.cancel_timer()
        reverse = request.command is socks.Command.RESOLVE_PTR
        d = proto.node.resolve(
            proto.settings.peer, request.host, reverse=reverse, timeout=proto.settings.open_timeout
        )

        def answered(address: str) -> None:
            if not proto.closed:
                ok = socks.SOCKS4_GRANTED if self.server.version == 4 else 0
                try:
                    reply = self.server.reply(ok, address, 0)
                except ValueError:  # a name SOCKS cannot carry (over 255 bytes, not ASCII)
                    reply = self.server.reply(self._fail_code(OpenFailure.ERROR))
                proto.transport.write(reply)
                proto.close()

        def failed(failure: Failure) -> None:
            failure.trap(ResolveError)
            if not proto.closed:
                proto.transport.write(self.server.reply(self._fail_code(failure.value.reason)))
                proto.close()

        d.addCallbacks(answered, failed)
