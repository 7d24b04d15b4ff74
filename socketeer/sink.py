"""The spawning and resolving sink: turns OPEN messages into real outbound TCP connections.

The seed's ``isSpawningAndResolvingSink=true``. The sink resolves the name itself (remote
DNS, as ``socks5h`` users expect), connects as soon as the OPEN arrives (a server that
speaks first, like MariaDB or SMTP, must not wait for client bytes), and answers OPEN_OK
with the bound address or OPEN_FAIL with the reason.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketeer.errors import OpenFailure, classify_connect_failure
from socketeer.node import Node
from socketeer.stream import Phase, Stream, StreamProtocol
from socketeer.wire.envelope import Envelope, MsgType, encode_params

EndpointFor = Callable[[str, int], IStreamClientEndpoint]
#: (name, reverse) -> Deferred firing with an address (or, reverse, a host name).
Resolver = Callable[[str, bool], Deferred]

MAX_HOST = 255


class Sink:
    """Serves OPEN messages addressed to ``node``."""

    log = Logger()

    def __init__(
        self,
        node: Node,
        endpoint_for: EndpointFor,
        clock: IReactorTime,
        *,
        connect_timeout: float = 10.0,
        resolver: Resolver | None = None,
    ) -> None:
        self.node = node
        self.endpoint_for = endpoint_for
        self.clock = clock
        self.connect_timeout = connect_timeout
        self.resolver = resolver
        node.open_handler = self.open
        node.resolve_handler = self.resolve

    def resolve(self, env: Envelope) -> None:
        """Answer a RESOLVE request (SOCKS5 RESOLVE / RESOLVE_PTR through the source)."""
        try:
            params = env.params()
            name = params["name"]
            reverse = params.get("ptr", "0") == "1"
        except (KeyError, ValueError):
            self.node.answer_resolve(env, None, OpenFailure.ERROR)
            return
        if self.resolver is None or not name or len(name) > MAX_HOST:
            self.node.answer_resolve(env, None, OpenFailure.ERROR)
            return
        d = self.resolver(name, reverse)
        timer = self.clock.callLater(self.connect_timeout, d.cancel)

        def answered(address: str) -> None:
            self.node.answer_resolve(env, address)

        def failed(failure: Failure) -> None:
            reason = (
                OpenFailure.TIMEOUT if failure.check(CancelledError) else OpenFailure.NAME_NOT_FOUND
            )
            self.log.info("resolve {name} failed: {reason}", name=name, reason=reason.value)
            self.node.answer_resolve(env, None, reason)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(done).addCallbacks(answered, failed)

    def open(self, env: Envelope) -> None:
        stream = Stream(self.node, env.source, env.resource, self.node.window, rx_seq=1)
        try:
            params = env.params()
            host = params["host"]
            port = int(params["port"])
            kind = int(params.get("type", "0"))
        except (KeyError, ValueError) as e:
            self._refuse(stream, OpenFailure.ERROR, f"malformed open request: {e}")
            return
        stream.target = f"{host}:{port}"
        if not host or len(host) > MAX_HOST or not 0 < port < 65536:
            self._refuse(stream, OpenFailure.ERROR, "invalid target address")
            return
        if kind != 0:
            self._refuse(stream, OpenFailure.ERROR, f"unsupported stream type {kind}")
            return
        self.node.add_stream(stream)
        self.log.debug(
            "stream {resource}: connecting to {target}",
            resource=stream.resource,
            target=stream.target,
        )
        try:
            endpoint = self.endpoint_for(host, port)
        except ValueError as e:
            self.node.stream_done(stream)
            self._refuse(stream, OpenFailure.NAME_NOT_FOUND, str(e))
            return
        factory = Factory.forProtocol(
            lambda: StreamProtocol(lambda proto: self._connected(stream, proto))
        )
        d: Deferred = endpoint.connect(factory)
        timer = self.clock.callLater(self.connect_timeout, d.cancel)

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(done)
        d.addErrback(self._failed, stream)
        stream.on_finish = lambda s: d.cancel() if not d.called else None

    def _refuse(self, stream: Stream, reason: OpenFailure, message: str) -> None:
        stream.send(MsgType.OPEN_FAIL, encode_params({"reason": reason.value, "message": message}))
        stream.fail(reason, message, notify_peer=False)

    def _connected(self, stream: Stream, proto: StreamProtocol) -> Stream | None:
        if stream.phase is Phase.CLOSED:
            return None  # the client gave up while we were connecting
        bound = proto.transport.getHost()
        stream.on_finish = None
        stream.phase = Phase.OPEN
        stream.send(MsgType.OPEN_OK, encode_params({"host": bound.host, "port": bound.port}))
        self.log.info(
            "stream {resource} from {peer} open to {target}",
            resource=stream.resource,
            peer=stream.peer,
            target=stream.target,
        )
        return stream

    def _failed(self, failure: Failure, stream: Stream) -> None:
        if stream.phase is Phase.CLOSED:
            return
        reason = classify_connect_failure(failure)
        self._refuse(stream, reason, failure.getErrorMessage())


def system_resolver(reactor) -> Resolver:
    """Resolve with the operating system (getaddrinfo / gethostbyaddr) in Twisted's thread pool.

    getaddrinfo (unlike ``reactor.resolve``) answers with IPv6 addresses too.
    """
    import socket

    from twisted.internet.threads import deferToThreadPool

    def lookup(name: str, reverse: bool) -> str:
        if reverse:
            return socket.gethostbyaddr(name)[0]
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"no address for {name}")
        return infos[0][4][0]

    def resolve(name: str, reverse: bool) -> Deferred:
        return deferToThreadPool(reactor, reactor.getThreadPool(), lookup, name, reverse)

    return resolve
