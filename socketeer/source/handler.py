"""One client connection on the proxy port, as its SOCKS or HTTP handler sees it.

``ProxyConnection`` is the switchboard for one client connection: until a target is known
its bytes go to a ``Handler`` (SOCKS in ``socks.py``, HTTP in ``http.py``), which feeds a
sans-IO parser (``wire.socks``, ``wire.httpproxy``) and answers the client. It gives the
handlers what they share: the access list's verdict on the client, the handshake and idle
timers, the policy-checked open (``open.py``; the client is not read while the stream
opens, the portforward rule), and the switch to a plain relay once the handler has written
its reply (bytes, FIN and back-pressure as ``tunnel.relay`` moves them). Which handler a
connection gets is the mixed port's choice (``proxy.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from socketeer.config.defaults import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_HTTP_ENABLED,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_OPEN_TIMEOUT,
    DEFAULT_SOCKS4_ENABLED,
    DEFAULT_SOCKS5_ENABLED,
)
from socketeer.config.model import ProxyConfig
from socketeer.logins import Door, Logins
from socketeer.passwords import Authenticator
from socketeer.policy import Decision, PolicyRef, client_host
from socketeer.source.open import OpenFailed, describe_peer, open_checked
from socketeer.tunnel.node import Node
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Phase, Stream


@dataclass(frozen=True)
class ProxySettings:
    """Everything a proxy connection needs besides its node."""

    peer: str  # the sink node
    socks4: bool = DEFAULT_SOCKS4_ENABLED
    socks5: bool = DEFAULT_SOCKS5_ENABLED
    http: bool = DEFAULT_HTTP_ENABLED
    #: Checks proxy passwords: a :class:`socketeer.logins.Door` (off the reactor thread,
    #: cached, failures limited per address), or anything with the same ``login``.
    authenticator: Door | Authenticator | None = None
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    open_timeout: float = DEFAULT_OPEN_TIMEOUT
    policy: PolicyRef | None = None  # access list and target policy, swapped on reload

    @classmethod
    def from_config(
        cls,
        peer: str,
        proxy: ProxyConfig,
        open_timeout: float,
        policy: PolicyRef | None = None,
        logins: Logins | None = None,
    ) -> ProxySettings:
        if proxy.users is None:
            authenticator = None
        elif logins is None:
            authenticator = Authenticator(proxy.users)
        else:
            authenticator = logins.door("proxy", proxy.users)
        return cls(
            policy=policy,
            peer=peer,
            socks4=proxy.socks4,
            socks5=proxy.socks5,
            http=proxy.http,
            authenticator=authenticator,
            handshake_timeout=proxy.handshake_timeout,
            idle_timeout=proxy.idle_timeout,
            open_timeout=open_timeout,
        )


class Handler:
    """One protocol's handshake on a proxy connection (SOCKS or HTTP)."""

    proto: ProxyConnection

    def data_received(self, data: bytes) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read_closed(self) -> None:
        """The client sent FIN before the tunnel was up: nothing more will come."""
        self.proto.close()

    def connection_lost(self) -> None:
        pass


class ProxyConnection(SocketRelay):
    """One client connection on the proxy port: a handler's, then a relay."""

    log = Logger()

    def __init__(self, node: Node, settings: ProxySettings, clock: IReactorTime) -> None:
        super().__init__()
        self.node = node
        self.settings = settings
        self.clock = clock
        self.handler: Handler | None = None
        self.client = ""
        self.client_address = ""  # the host alone: failed logins are counted per address
        self._timer: IDelayedCall | None = None
        self._idle_mark = -1
        self.closed = False
        self._admission: Decision | None = None  # the access list's verdict on this client
        self._refusal_counted = False

    def choose_handler(self, first: bytes) -> Handler | None:  # pragma: no cover - interface
        """The handler for a connection whose first byte is ``first``; None closes it."""
        raise NotImplementedError

    # -- connection ------------------------------------------------------------------------

    def connectionMade(self) -> None:
        super().connectionMade()
        peer = self.transport.getPeer()
        self.client = describe_peer(peer)
        self.client_address = client_host(peer)
        if self.settings.policy is not None:
            self._admission = self.settings.policy.admit(client_host(peer))
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
        stream = self.stream
        if stream is not None:
            stream.write(data)
            return
        if self.handler is None:
            self.handler = self.choose_handler(data[:1])
            if self.handler is None:
                return
        self.handler.data_received(data)

    def readConnectionLost(self) -> None:
        if self.stream is not None:
            super().readConnectionLost()
            return
        self.read_closed = True
        if self.handler is not None:
            self.handler.read_closed()
        else:
            self.close()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.closed = True
        self.cancel_timer()
        super().connectionLost(reason)
        if self.handler is not None:
            self.handler.connection_lost()

    def close(self) -> None:
        if not self.closed:
            self.transport.loseConnection()

    # -- timers ----------------------------------------------------------------------------

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
            stream.loseConnection()
            return
        self._idle_mark = mark
        self.set_timer(self.settings.idle_timeout, self._idle_check)

    # -- streams ---------------------------------------------------------------------------

    def open_stream(
        self,
        host: str,
        port: int,
        on_open: Callable[[Stream, dict[str, str]], None],
        on_fail: OpenFailed,
    ) -> Stream:
        """Ask the sink for ``host:port``; the client is not read until it answers.

        A target the source's policy denies fails the stream with DENIED without a message
        to the sink; ``on_fail`` then runs on the next turn of the reactor, as it would for
        the sink's answer.
        """
        self.cancel_timer()
        self.transport.pauseProducing()

        def later(stream: Stream, reason, message: str) -> None:
            self.clock.callLater(0, on_fail, stream, reason, message)

        stream = open_checked(
            self.node,
            self.settings.peer,
            host,
            port,
            client=self.client,
            timeout=self.settings.open_timeout,
            policy=self.settings.policy,
            on_denied=later,
        )
        if stream.phase is not Phase.CLOSED:
            stream.on_open = on_open
            stream.on_open_failed = on_fail
        return stream

    def start_relay(self, stream: Stream, leftover: bytes = b"") -> None:
        """The reply is written: from now on this connection is a plain relay."""
        self.handler = None
        self.transport.resumeProducing()
        self.relay(stream)
        if leftover:
            stream.write(leftover)
        if self.settings.idle_timeout > 0:
            self.set_timer(self.settings.idle_timeout, self._idle_check)
