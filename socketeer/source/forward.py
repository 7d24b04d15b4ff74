"""The source side of a fixed port-forward: every accepted TCP connection becomes a stream.

A listener with a fixed target (``fixedHost``/``fixedPort``): like ``ssh -L``, each client
connection is relayed to one target that the peer sink node connects to. The proxy port
(``proxy.py``) differs only in how it learns the target.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from socketeer.config.defaults import DEFAULT_FIXED_TYPE, DEFAULT_OPEN_TIMEOUT
from socketeer.policy import PolicyRef, client_host
from socketeer.source.open import describe_peer, open_checked
from socketeer.tunnel.node import Node
from socketeer.tunnel.relay import SocketRelay
from socketeer.tunnel.stream import Phase, Stream


class FixedForwardFactory(Factory):
    """Accepts client connections and opens a stream per connection to one fixed target."""

    log = Logger()

    def __init__(
        self,
        node: Node,
        peer: str,
        host: str,
        port: int,
        *,
        kind: int = DEFAULT_FIXED_TYPE,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        policy: PolicyRef | None = None,
    ) -> None:
        self.node = node
        self.peer = peer
        self.host = host
        self.port = port
        self.kind = kind
        self.open_timeout = open_timeout
        self.policy = policy

    def buildProtocol(self, addr) -> SocketRelay | None:
        if self.policy is not None:
            decision = self.policy.admit(client_host(addr))
            if not decision.allowed:
                # No protocol: Twisted closes the connection at once.
                self.node.stats.denied[decision.rule] += 1
                self.log.info(
                    "refused client {client}: {rule}", client=addr, rule=decision.rule_text
                )
                return None
        return SocketRelay(self._open)

    def _open(self, relay: SocketRelay) -> Stream | None:
        stream = open_checked(
            self.node,
            self.peer,
            self.host,
            self.port,
            client=describe_peer(relay.transport.getPeer()),
            timeout=self.open_timeout,
            policy=self.policy,
            kind=self.kind,
        )
        if stream.phase is Phase.CLOSED:
            return None  # denied: the client's connection is closed
        return stream
