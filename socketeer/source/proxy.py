"""The proxy port: SOCKS4/4a/5 and HTTP on one listener, each connection to its handler.

``ProxyProtocol`` sniffs the first byte (0x04 SOCKS4/4a, 0x05 SOCKS5, an ASCII letter for
HTTP, like gost's and pproxy's mixed ports) and hands the connection to the SOCKS handler
(``socks.py``) or the HTTP handler (``http.py``); what a connection does before and after
(admission, timers, the stream and the relay) is ``handler.ProxyConnection``'s.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory

from socketeer.source.handler import Handler, ProxyConnection, ProxySettings
from socketeer.source.http import HttpHandler
from socketeer.source.socks import SocksHandler
from socketeer.tunnel.node import Node
from socketeer.wire.httpproxy import error_response

__all__ = ["ProxyFactory", "ProxyProtocol", "ProxySettings"]


class ProxyFactory(Factory):
    def __init__(self, node: Node, settings: ProxySettings, clock: IReactorTime) -> None:
        self.node = node
        self.settings = settings
        self.clock = clock

    def buildProtocol(self, addr) -> ProxyProtocol:
        return ProxyProtocol(self.node, self.settings, self.clock)


class ProxyProtocol(ProxyConnection):
    """One client connection on the mixed proxy port."""

    def choose_handler(self, first: bytes) -> Handler | None:
        if first in (b"\x04", b"\x05"):
            return SocksHandler(self)
        if first.isalpha():
            if not self.settings.http:
                self.log.info("refused HTTP from {client}: disabled", client=self.client)
                self.transport.write(
                    error_response(501, "Not Implemented", "HTTP proxying is disabled here.")
                )
                self.close()
                return None
            return HttpHandler(self)
        self.log.info(
            "closed {client}: not SOCKS or HTTP (first byte {byte!r})",
            client=self.client,
            byte=first,
        )
        self.transport.abortConnection()
        return None
