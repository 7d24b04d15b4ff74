"""Embedding Socketeer in another Twisted program: a runnable example.

    python docs/embedding_example.py

It runs, in one reactor and one process:

1. the host program's own service, here an echo server on a free loopback port;
2. a STOMP broker from Socketeer's building blocks (``BrokerFactory`` + ``Router``) on a
   free port, so that the configuration below can name it;
3. Socketeer itself from a properties text: ``parse_config`` (``load_config(path)`` for a
   file) and ``build_service(config, reactor)``, a ``MultiService`` added to the program's
   own service tree: a sink node, and a fixed forward to the echo server;
4. a building block on the program's own listener: ``FixedForwardFactory`` on one of the
   built nodes, bound wherever the program likes.

It sends a line through each forward, prints the echoes and stops cleanly.
``build_service`` never touches the global reactor: pass the one your program runs (or a
fake one in tests). ``socketeer.tap.makeService`` is the same plus twistd's extras (SIGHUP
reload, systemd readiness).
"""

from __future__ import annotations

import socket

from twisted.application.service import MultiService
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from zope.interface import implementer

from socketeer.app import build_service
from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.config.load import parse_config
from socketeer.source.forward import FixedForwardFactory

CONFIG = """
# The sink: it opens the connections the sources ask for.
socketeer.sourcesink.sink.clustername=demo
socketeer.sourcesink.sink.nodename=sink
socketeer.sourcesink.sink.channel=stomp://127.0.0.1:{broker}/demo
socketeer.sourcesink.sink.isSpawningAndResolvingSink=true

# A fixed forward: connections to 127.0.0.1:{forward} go to the echo server.
socketeer.sourcesink.fwd.clustername=demo
socketeer.sourcesink.fwd.nodename=fwd
socketeer.sourcesink.fwd.channel=stomp://127.0.0.1:{broker}/demo
socketeer.sourcesink.fwd.serverport=tcp:{forward}:interface=127.0.0.1
socketeer.sourcesink.fwd.peernode=sink
socketeer.sourcesink.fwd.fixedHost=127.0.0.1
socketeer.sourcesink.fwd.fixedPort={echo}
"""


@implementer(IHalfCloseableProtocol)
class Echo(protocol.Protocol):
    """The host program's own service."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class Ask(protocol.Protocol):
    """Sends a question, half-closes, and collects the answer until the end."""

    def __init__(self, question: bytes) -> None:
        self.question = question
        self.answer = b""
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.question)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.answer += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason=None) -> None:
        if not self.done.called:
            self.done.callback(self.answer)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def ask(endpoint, question: bytes) -> bytes:
    client = Ask(question)
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return await client.done


async def main(reactor) -> None:
    app = MultiService()  # the host program's service tree
    echo = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        protocol.Factory.forProtocol(Echo)
    )
    broker = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        BrokerFactory(Router(), reactor)
    )
    forward = free_port()
    text = CONFIG.format(broker=broker.getHost().port, echo=echo.getHost().port, forward=forward)
    socketeer = build_service(parse_config(text, "<embedded>"), reactor)
    socketeer.setServiceParent(app)
    app.startService()
    own = None
    try:
        # Ready when every node is connected to the broker and subscribed.
        await defer.gatherResults([n.when_ready() for n in socketeer.nodes.values()])

        answer = await ask(
            TCP4ClientEndpoint(reactor, "127.0.0.1", forward), b"hello, configured forward"
        )
        print("configured forward:", answer.decode())

        # A building block: the program's own listener, relayed by node "fwd".
        node = socketeer.nodes["fwd"]
        factory = FixedForwardFactory(node, "sink", "127.0.0.1", echo.getHost().port)
        own = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        answer = await ask(
            TCP4ClientEndpoint(reactor, "127.0.0.1", own.getHost().port), b"hello, own listener"
        )
        print("own listener:", answer.decode())
        print("streams opened by node fwd:", node.stats.streams_opened)
    finally:
        if own is not None:
            await own.stopListening()
        await app.stopService()
        await broker.stopListening()
        await echo.stopListening()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
