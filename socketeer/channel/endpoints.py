"""Client endpoints to the broker: a parsed channel (ChannelSpec) turned into a Twisted endpoint.

:mod:`socketeer.channel.url` only parses; here each scheme's transport becomes sockets. A
scheme names its transport (``tcp`` or ``tls``) and :data:`TRANSPORTS` maps that name to the
function that builds the endpoint, so a new transport is added with
:func:`register_transport`. A ``failover:`` channel becomes a
:class:`~socketeer.channel.failover.FailoverEndpoint` that dials its brokers in turn, each
through its own scheme's transport.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint

from socketeer.channel.failover import FailoverEndpoint
from socketeer.channel.tls import tls_client_endpoint
from socketeer.channel.url import SCHEMES, ChannelSpec

__all__ = [
    "CONNECT_TIMEOUT",
    "TRANSPORTS",
    "Transport",
    "broker_endpoint",
    "client_endpoint",
    "register_transport",
    "tcp_endpoint",
    "tls_endpoint",
]

#: Seconds a TCP connect to one broker may take before the attempt counts as failed.
CONNECT_TIMEOUT = 10

#: Builds the endpoint to one broker: ``(reactor, spec) -> endpoint``.
Transport = Callable[[Any, ChannelSpec], IStreamClientEndpoint]


def tcp_endpoint(reactor: Any, spec: ChannelSpec) -> IStreamClientEndpoint:
    """Plain TCP to the broker (any address family the host name resolves to)."""
    return HostnameEndpoint(reactor, spec.host, spec.port, timeout=CONNECT_TIMEOUT)


def tls_endpoint(reactor: Any, spec: ChannelSpec) -> IStreamClientEndpoint:
    """Verified TLS over TCP to the broker (see :mod:`socketeer.channel.tls`)."""
    return tls_client_endpoint(spec, tcp_endpoint(reactor, spec))


TRANSPORTS: dict[str, Transport] = {"tcp": tcp_endpoint, "tls": tls_endpoint}


def register_transport(name: str, build: Transport) -> None:
    """Make transport ``name`` usable by schemes; a later registration replaces an earlier one."""
    TRANSPORTS[name] = build


def broker_endpoint(reactor: Any, spec: ChannelSpec) -> IStreamClientEndpoint:
    """The endpoint to the one broker ``spec`` names, through its scheme's transport."""
    return TRANSPORTS[SCHEMES[spec.scheme].transport](reactor, spec)


def client_endpoint(reactor: Any, spec: ChannelSpec) -> IStreamClientEndpoint:
    """The endpoint a channel connects through: its broker, or its brokers in turn."""
    if spec.failover:
        return FailoverEndpoint(
            spec.brokers, partial(broker_endpoint, reactor), randomize=spec.randomize
        )
    return broker_endpoint(reactor, spec)
