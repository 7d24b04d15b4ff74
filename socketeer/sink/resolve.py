"""Name resolution for the sink: the operating system's resolver, in Twisted's thread pool.

One lookup serves both of the sink's needs: the RESOLVE request (SOCKS5 RESOLVE and
RESOLVE_PTR through the source) wants one address, or a name for an address; the checked
connect wants every address of a name, so that each is judged and none is looked up twice.
getaddrinfo (unlike ``reactor.resolve``) answers with IPv6 addresses too.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

#: (name, reverse) -> Deferred firing with an address (or, reverse, a host name).
Resolver = Callable[[str, bool], Deferred]
#: name -> Deferred firing with every address (text) the name resolves to.
AddressResolver = Callable[[str], Deferred]


def addresses_of(name: str) -> list[str]:
    """Every address of ``name``, in getaddrinfo order, duplicates dropped (blocking)."""
    infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def lookup(name: str, reverse: bool) -> str:
    """The first address of ``name``, or (``reverse``) the host name of an address (blocking)."""
    if reverse:
        return socket.gethostbyaddr(name)[0]
    addresses = addresses_of(name)
    if not addresses:
        raise OSError(f"no address for {name}")
    return addresses[0]


class SystemResolver:
    """The operating system's resolver, run in the reactor's thread pool.

    ``resolve`` is a ``Resolver`` and ``addresses`` an ``AddressResolver`` for the sink.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor

    def resolve(self, name: str, reverse: bool) -> Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), lookup, name, reverse)

    def addresses(self, name: str) -> Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), addresses_of, name)
