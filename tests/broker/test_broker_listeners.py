"""The broker's listening ports: the listen backlog, the plain listener and the TLS one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS

from socketeer.broker.listeners import (
    broker_service,
    broker_tls_service,
    server_options,
    with_backlog,
)
from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.config.tlsfiles import TLSFileError

from support.security import make_ca, make_cert


def test_with_backlog():
    assert with_backlog("tcp:61613") == "tcp:61613:backlog=256"
    assert with_backlog("tcp:port=0:interface=127.0.0.1") == (
        "tcp:port=0:interface=127.0.0.1:backlog=256"
    )
    assert with_backlog("tcp6:0:backlog=10") == "tcp6:0:backlog=10"
    assert with_backlog("unix:/tmp/s") == "unix:/tmp/s"


@pytest_twisted.ensureDeferred
async def test_broker_service_listens_with_backlog():
    svc = broker_service("tcp:0:interface=127.0.0.1", BrokerFactory(Router(), reactor), reactor)
    svc.startService()
    try:
        port = await svc._waitingForPort
        assert port.backlog == 256
        assert port.getHost().port > 0
    finally:
        await svc.stopService()


@dataclass
class _TLSSettings:
    listen: str
    cert: str
    key: str
    client_ca: str | None = None


class _FirstReply(protocol.Protocol):
    """Sends a STOMP CONNECT once TLS is up; fires ``reply`` with the first bytes back."""

    def __init__(self) -> None:
        self.reply: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"CONNECT\naccept-version:1.2\nhost:/\n\n\x00")

    def dataReceived(self, data: bytes) -> None:
        if not self.reply.called:
            self.reply.callback(data)
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_broker_tls_service_speaks_stomp_over_tls(tmp_path):
    ca = make_ca(tmp_path)
    server = make_cert(tmp_path, "server", ca)
    settings = _TLSSettings(
        "tcp:0:interface=127.0.0.1", str(server.cert_path), str(server.key_path)
    )
    svc = broker_tls_service(settings, BrokerFactory(Router(), reactor), reactor)
    svc.startService()
    try:
        port = await svc._waitingForPort
        assert port.backlog == 256
        trust = ssl.Certificate.loadPEM(ca.cert_path.read_bytes())
        endpoint = wrapClientTLS(
            ssl.optionsForClientTLS("127.0.0.1", trust),
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
        )
        client = await endpoint.connect(protocol.Factory.forProtocol(_FirstReply))
        reply = await client.reply.addTimeout(10, reactor)
        assert reply.startswith(b"CONNECTED\n")
    finally:
        await svc.stopService()


def test_server_options_refuse_a_key_that_is_not_the_certificates(tmp_path):
    ca = make_ca(tmp_path)
    server = make_cert(tmp_path, "server", ca)
    other = make_cert(tmp_path, "other", ca)
    with pytest.raises(TLSFileError, match="does not match"):
        server_options(str(server.cert_path), str(other.key_path))
    with pytest.raises(TLSFileError, match="client CA file"):
        server_options(str(server.cert_path), str(server.key_path), str(tmp_path / "none.pem"))
