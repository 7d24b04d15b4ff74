"""Listeners that say which key they serve: a port that cannot be bound is one clear line.

Every listening port of a process (the broker's, the broker's TLS one, each proxy or
forwarding source's ``serverport``, the status server's) is a :class:`KeyedListener`: a
``strports`` service that, when its endpoint cannot listen (the port is taken by a second
instance, an address not on this host, a permission), raises :class:`ListenError` naming
the configuration key, the endpoint and the operating system's reason, instead of
Twisted's ``CannotListenError`` traceback. ``twistd socketeer`` turns it into that one line
on stderr and exit status 1 (:mod:`socketeer.tap`).
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IProtocolFactory

__all__ = ["KeyedListener", "ListenError", "keyed_listener"]


class ListenError(Exception):
    """A listener could not bind; the message is one line: key, endpoint, reason."""


class KeyedListener(StreamServerEndpointService):
    """A strports listener that reports a failure to bind as a :class:`ListenError`."""

    def __init__(self, key: str, description: str, endpoint, factory: IProtocolFactory) -> None:
        super().__init__(endpoint, factory)
        self.key = key
        self.description = description
        self._raiseSynchronously = True  # as strports.service: fail startService at once

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            error = e.socketError
            reason = getattr(error, "strerror", None) or str(error)
            raise ListenError(
                f"{self.key}: cannot listen on {self.description}: {reason}"
            ) from None


def keyed_listener(
    key: str, description: str, factory: IProtocolFactory, reactor, shown: str | None = None
) -> KeyedListener:
    """A listener on the endpoint *description* (from configuration key *key*; *shown* is
    the endpoint as the configuration wrote it, if *description* added options)."""
    endpoint = endpoints.serverFromString(reactor, description)
    return KeyedListener(key, shown or description, endpoint, factory)
