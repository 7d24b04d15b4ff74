"""Test helpers for the operations tests: whole services from properties text, HTTP, echo."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Callable

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

from socketeer.app import SocketeerService, build_service
from socketeer.config.load import parse_config

from support.twistd import relay_properties


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll *condition* every 10 ms until it holds; fail after *timeout* seconds."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"condition not met within {timeout}s")


@implementer(IHalfCloseableProtocol)
class Echo(protocol.Protocol):
    """Echoes bytes; closes when the client half-closes."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


async def echo_server(ports: list) -> int:
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        protocol.Factory.forProtocol(Echo)
    )
    ports.append(port)
    return port.getHost().port


def relay_config(broker: int, status: int, forward: int, echo: int, extra: str = "") -> str:
    """Broker, status server, sink ``si`` and fixed forward ``so`` to *echo*; *extra* lines."""
    status_lines = (
        f"socketeer.general.statusserverenabled=true\nsocketeer.general.statusserverport={status}\n"
    )
    return relay_properties(broker, forward, echo, status_lines + extra)


async def start_service(text: str, path: str = "<test>") -> SocketeerService:
    """Build and start what *text* configures; wait until every node is on its channel."""
    root = build_service(parse_config(text, path), reactor)
    root.startService()
    await defer.gatherResults([n.when_ready() for n in root.nodes.values()]).addTimeout(30, reactor)
    return root


async def http_get(
    url: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, list[str]], bytes]:
    """GET *url*: status code, headers (lowercased names), body."""
    hdrs = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
    response = await Agent(reactor).request(b"GET", url.encode(), hdrs).addTimeout(20, reactor)
    with warnings.catch_warnings():  # Twisted's own Agent response transport lacks abort
        warnings.simplefilter("ignore", DeprecationWarning)
        body = await readBody(response)
    found = {
        k.decode().lower(): [v.decode() for v in vs]
        for k, vs in response.headers.getAllRawHeaders()
    }
    return response.code, found, body
