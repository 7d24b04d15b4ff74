"""The source side of a fixed port-forward: every accepted TCP connection becomes a stream.

The seed's ``serverport`` listener with ``fixedHost``/``fixedPort``: like ``ssh -L``, each
client connection is relayed to one fixed target that the peer sink node connects to.
The SOCKS and HTTP front-ends (a later issue) differ only in how they learn the target.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from socketeer.node import Node
from socketeer.stream import Stream, StreamProtocol


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
        kind: int = 0,
        open_timeout: float = 30.0,
    ) -> None:
        self.node = node
        self.peer = peer
        self.host = host
        self.port = port
        self.kind = kind
        self.open_timeout = open_timeout

    def buildProtocol(self, addr) -> StreamProtocol:
        return StreamProtocol(self._open)

    def _open(self, proto: StreamProtocol) -> Stream:
        peer = proto.transport.getPeer()
        return self.node.open_stream(
            self.peer,
            self.host,
            self.port,
            client=f"{peer.host}:{peer.port}",
            kind=self.kind,
            timeout=self.open_timeout,
        )
