"""Why a stream could not open: one vocabulary from the sink's socket error to every front-end.

The sink turns its outbound connect failure into an ``OpenFailure`` reason; the reason
travels in the open-fail message; each front-end maps the reason to its own wire code
(SOCKS5 reply, SOCKS4 status, HTTP status) in exactly one table here.
"""

from __future__ import annotations

import errno
from enum import StrEnum

from twisted.internet import defer, error
from twisted.python.failure import Failure


class OpenFailure(StrEnum):
    REFUSED = "refused"  # the target actively refused (RST)
    HOST_UNREACHABLE = "host-unreachable"
    NETWORK_UNREACHABLE = "network-unreachable"
    NAME_NOT_FOUND = "name-not-found"  # the sink could not resolve the host name
    TIMEOUT = "timeout"  # the connect did not complete in time
    DENIED = "denied"  # policy (later issue)
    NO_SINK = "no-sink"  # no answer from the peer node
    CHANNEL_LOST = "channel-lost"  # the broker connection went away
    ERROR = "error"  # anything else

    @classmethod
    def parse(cls, text: str) -> OpenFailure:
        try:
            return cls(text)
        except ValueError:
            return cls.ERROR


#: SOCKS5 (RFC 1928) reply codes per reason, for the front-ends.
SOCKS5_REPLY = {
    OpenFailure.REFUSED: 0x05,
    OpenFailure.HOST_UNREACHABLE: 0x04,
    OpenFailure.NAME_NOT_FOUND: 0x04,
    OpenFailure.NETWORK_UNREACHABLE: 0x03,
    OpenFailure.TIMEOUT: 0x06,
    OpenFailure.DENIED: 0x02,
    OpenFailure.NO_SINK: 0x01,
    OpenFailure.CHANNEL_LOST: 0x01,
    OpenFailure.ERROR: 0x01,
}


def classify_connect_failure(failure: Failure) -> OpenFailure:
    """Map an outbound connect error (as HostnameEndpoint reports it) to a reason."""
    exc = failure.value
    if isinstance(exc, error.ConnectionRefusedError):
        return OpenFailure.REFUSED
    if isinstance(exc, error.DNSLookupError):
        return OpenFailure.NAME_NOT_FOUND
    if isinstance(exc, error.TimeoutError | error.ConnectingCancelledError | defer.CancelledError):
        return OpenFailure.TIMEOUT
    if isinstance(exc, error.NoRouteError):
        return OpenFailure.HOST_UNREACHABLE
    code = getattr(exc, "osError", None)
    if code is None and isinstance(exc, OSError):
        code = exc.errno
    if code == errno.ENETUNREACH:
        return OpenFailure.NETWORK_UNREACHABLE
    if code == errno.EHOSTUNREACH:
        return OpenFailure.HOST_UNREACHABLE
    if code == errno.ECONNREFUSED:
        return OpenFailure.REFUSED
    if code == errno.ETIMEDOUT:
        return OpenFailure.TIMEOUT
    return OpenFailure.ERROR


def describe_peer(address: object) -> str:
    """``host:port`` of a client address for logs; a unix socket has no host or port."""
    host = getattr(address, "host", None)
    if host is None:
        return f"unix:{getattr(address, 'name', '') or '?'}"
    return f"{host}:{getattr(address, 'port', '')}"
