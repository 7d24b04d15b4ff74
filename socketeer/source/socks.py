"""SOCKS4, 4a and 5 on the proxy port: the handshake, remote resolution, and the reply.

``SocksHandler`` feeds ``wire.socks.SocksServer``; a CONNECT opens a stream through the
connection's policy-checked open, and the reply carries the sink's real outcome: the bound
address, or the reason's code (``SOCKS5_REPLY``). RESOLVE and RESOLVE_PTR (Tor's
extensions) are answered by the sink's resolver.
"""

from __future__ import annotations

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketeer.source.handler import Handler, ProxyConnection
from socketeer.tunnel.reasons import OpenFailure
from socketeer.tunnel.resolve import ResolveError
from socketeer.tunnel.stream import Stream
from socketeer.wire import socks

#: SOCKS5 (RFC 1928) reply codes per reason (SOCKS4 has one: rejected).
SOCKS5_REPLY = {
    OpenFailure.REFUSED: 0x05,
    OpenFailure.HOST_UNREACHABLE: 0x04,
    OpenFailure.NAME_NOT_FOUND: 0x04,
    OpenFailure.NETWORK_UNREACHABLE: 0x03,
    OpenFailure.TIMEOUT: 0x06,
    OpenFailure.DENIED: 0x02,
    # The tunnel could not reach the sink node in time: for the client, the host is
    # unreachable (0x01, "general failure", would hide that nothing reached the target).
    OpenFailure.NO_SINK: 0x04,
    OpenFailure.CHANNEL_LOST: 0x04,
    OpenFailure.LIMIT: 0x01,  # too many streams: a general failure, as ssh -D gives
    OpenFailure.ERROR: 0x01,
}


class SocksHandler(Handler):
    """SOCKS4/4a/5 on a proxy connection, over ``wire.socks.SocksServer``."""

    log = Logger()

    def __init__(self, proto: ProxyConnection) -> None:
        self.proto = proto
        settings = proto.settings
        self.server = socks.SocksServer(
            socks4=settings.socks4,
            socks5=settings.socks5,
            # A client the access list refuses is not asked for a password: it gets 0x02.
            require_auth=settings.authenticator is not None and proto.admitted,
        )
        self.request: socks.Request | None = None
        self._checking = False  # a password is being checked

    def data_received(self, data: bytes) -> None:
        self.server.receive_data(data)
        if self.request is None and not self._checking:
            self._pump()

    def _pump(self) -> None:
        """Take the parser's events until a request, a password to check, or more bytes."""
        server = self.server
        try:
            while (event := server.next_event()) is not None:
                if isinstance(event, socks.NeedsAuth):
                    self._authenticate(event)
                    if self._checking:
                        break  # the verdict resumes the handshake
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
        """Check the password off the reactor thread; the handshake waits for the verdict
        (the handshake timer still runs, and a client that leaves meanwhile is forgotten).
        A verdict that comes at once (a remembered password) is answered in place."""
        authenticator = self.proto.settings.authenticator
        if authenticator is None:  # pragma: no cover - NeedsAuth only with require_auth
            self.server.auth_result(False)
            return
        d = maybeDeferred(
            authenticator.login, event.username, event.password, self.proto.client_address
        )
        verdict: list[bool] = []
        d.addCallback(verdict.append)
        if verdict:
            self._answer(verdict[0], event.username)
            return
        self._checking = True

        def later(_: object) -> None:
            self._checking = False
            if not self.proto.closed:
                self._answer(verdict[0], event.username)
                self._pump()

        d.addCallback(later)

    def _answer(self, ok: bool, username: str) -> None:
        if not ok:
            self.log.info(
                "SOCKS5 authentication failed for user {user!r} from {client}",
                user=username,
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
            stream.loseConnection()
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
        policy = proto.settings.policy
        if policy is not None:  # the source's target policy judges the name (or address)
            decision = policy.judge_lookup(
                request.host, cluster=proto.node.cluster, node=proto.settings.peer
            )
            if not decision.allowed:
                proto.node.stats.denied[decision.rule] += 1
                self._refuse(self._fail_code(OpenFailure.DENIED), decision.rule_text)
                return
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
