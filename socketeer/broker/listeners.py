"""The embedded broker's listening ports: the plain STOMP listener and the TLS one.

Both are ``strports`` services on any stream endpoint description (tcp, tcp6, unix), with
a listen backlog large enough for many channels reconnecting at once. The TLS listener
wraps the same broker factory (one router) in TLS 1.2 or newer, with the broker's
certificate chain and key and, given a client CA, required client certificates; it may
sit next to the plain listener or replace it.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from twisted.application.service import IService
from twisted.internet import ssl
from twisted.internet.interfaces import IProtocolFactory, IReactorCore
from twisted.protocols.tls import TLSMemoryBIOFactory

from socketeer.channel.tls import identity_options, openssl_certificates
from socketeer.config.keys import K_PORT, K_SSLPORT
from socketeer.config.tlsfiles import read_certificates
from socketeer.listening import keyed_listener

__all__ = [
    "BrokerTLSSettings",
    "broker_service",
    "broker_tls_service",
    "server_options",
    "tls_server_factory",
    "with_backlog",
]

#: Twisted's default listen backlog (50) drops SYNs when a few hundred channels reconnect.
DEFAULT_BACKLOG = 256

_BACKLOG = re.compile(r"(?:^|:)backlog=")


class BrokerTLSSettings(Protocol):
    """What the TLS listener needs from the configuration (the broker's TLS section)."""

    listen: str
    cert: str
    key: str
    client_ca: str | None
    key_passphrase: Any  # a Secret, or None


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """Add ``backlog=`` to a tcp/tcp6 endpoint description that lacks it."""
    kind = description.split(":", 1)[0]
    if kind in ("tcp", "tcp6") and not _BACKLOG.search(description):
        return f"{description}:backlog={backlog}"
    return description


def broker_service(
    endpoint_description: str,
    factory: IProtocolFactory,
    reactor: IReactorCore,
    key: str = K_PORT,
) -> IService:
    """A service listening on ``endpoint_description``; at startup, a ListenError naming
    *key* if it cannot bind."""
    description = with_backlog(endpoint_description)
    return keyed_listener(key, description, factory, reactor, shown=endpoint_description)


def server_options(
    cert_path: str, key_path: str, client_ca: str | None = None, passphrase: str | None = None
) -> ssl.CertificateOptions:
    """TLS server context options for the broker; with ``client_ca``, client certs required;
    an encrypted key is decrypted with *passphrase*."""
    identity = identity_options(cert_path, key_path, passphrase)
    kwargs: dict[str, object] = {"raiseMinimumTo": ssl.TLSVersion.TLSv1_2}
    if client_ca:
        kwargs.update(
            verify=True,
            requireCertificate=True,
            caCerts=openssl_certificates(read_certificates(client_ca, "client CA file")),
        )
    return ssl.CertificateOptions(**identity, **kwargs)


def tls_server_factory(
    options: ssl.CertificateOptions, factory: IProtocolFactory
) -> TLSMemoryBIOFactory:
    """``factory`` behind TLS: the protocol factory for a TLS listener."""
    return TLSMemoryBIOFactory(options, False, factory)


def broker_tls_service(
    settings: BrokerTLSSettings, factory: IProtocolFactory, reactor: IReactorCore
) -> IService:
    """The broker's TLS listener service on ``settings.listen``."""
    secret = getattr(settings, "key_passphrase", None)
    passphrase = secret.value if secret is not None else None
    options = server_options(settings.cert, settings.key, settings.client_ca, passphrase)
    return broker_service(settings.listen, tls_server_factory(options, factory), reactor, K_SSLPORT)
