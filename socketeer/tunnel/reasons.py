"""Why a stream could not open: one vocabulary from the sink's socket error to every front-end.

The sink turns its outbound connect failure into an ``OpenFailure`` reason
(``classify_connect_failure``); the reason travels in the OPEN_FAIL message; each front-end
maps it to its own wire code, next to its handler: ``source.socks.SOCKS5_REPLY`` (SOCKS4
has one code, rejected) and ``source.http.failure_response``.
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
    DENIED = "denied"  # a policy (the source's or the sink's) refused the target
    NO_SINK = "no-sink"  # no answer from the peer node
    CHANNEL_LOST = "channel-lost"  # the broker connection went away
    LIMIT = "limit"  # a cap on streams or lookups was reached (maxstreams, maxstreamsperpeer)
    ERROR = "error"  # anything else

    @classmethod
    def parse(cls, text: str) -> OpenFailure:
        try:
            return cls(text)
        except ValueError:
            return cls.ERROR


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
