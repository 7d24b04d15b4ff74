"""Test helpers for channel security: certificates made with ``cryptography``, a byte capture
around the broker, a raw STOMP client, and a relay with sealing / TLS options."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint
from twisted.protocols import policies

from socketeer.broker.protocol import BrokerFactory
from socketeer.broker.router import Router
from socketeer.channel.client import ChannelService
from socketeer.channel.endpoints import client_endpoint
from socketeer.channel.url import parse_channel_url
from socketeer.sink.connect import Sink
from socketeer.source.forward import FixedForwardFactory
from socketeer.tunnel.node import Node
from socketeer.wire.seal import Sealer
from socketeer.wire.stompframing import StompFrameParser

from support.net import listen
from support.relay import WINDOW

# -- certificates ----------------------------------------------------------------------------


@dataclass
class Identity:
    """A certificate (PEM file) and its key (PEM file); ``cert`` is the cryptography object."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(directory: Path, stem: str, cert: x509.Certificate, key) -> Identity:
    cert_path = directory / f"{stem}-cert.pem"
    key_path = directory / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Identity(cert, key, cert_path, key_path)


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=2)
    )


def make_ca(directory: Path, cn: str = "Socketeer Test CA") -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, cn.replace(" ", "-").lower(), cert, key)


def make_cert(
    directory: Path,
    stem: str,
    issuer: Identity | None,
    names: tuple[str, ...] = ("localhost", "127.0.0.1"),
    *,
    client: bool = False,
) -> Identity:
    """A leaf certificate for ``names`` (DNS names or IP addresses), signed by ``issuer``
    (self-signed when ``issuer`` is None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(names[0] if names else stem))
        .issuer_name(issuer.cert.subject if issuer else _name(names[0] if names else stem))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return _write(directory, stem, cert, key)


# -- capture -----------------------------------------------------------------------------------


def parse_frames(parser: StompFrameParser, data: bytes) -> list:
    """Every frame in ``data``, going on past handshake frames (as STOMP 1.2)."""
    frames = parser.feed(data)
    while parser.held:
        parser.version = "1.2"
        frames += parser.feed(b"")
    return [f for f in frames if hasattr(f, "command")]


class _CaptureProtocol(policies.ProtocolWrapper):
    def makeConnection(self, transport) -> None:
        self.received = bytearray()
        self.sent = bytearray()
        self.factory.connections.append(self)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self.sent += data
        super().write(data)

    def writeSequence(self, data) -> None:
        for chunk in data:
            self.sent += chunk
        super().writeSequence(data)


class Capture(policies.WrappingFactory):
    """Records every byte a listener receives and sends, per connection (a frame capture)."""

    protocol = _CaptureProtocol

    def __init__(self, wrapped) -> None:
        super().__init__(wrapped)
        self.connections: list[_CaptureProtocol] = []

    @property
    def data(self) -> bytes:
        """Everything, each connection's bytes each way kept apart by a NUL pair."""
        parts = [bytes(c.received) for c in self.connections]
        parts += [bytes(c.sent) for c in self.connections]
        return b"\0\0".join(parts)

    def frames(self):
        """The frames clients sent (SEND, SUBSCRIBE, ...), parsed, connection by connection."""
        frames = []
        for conn in self.connections:
            frames += parse_frames(StompFrameParser(server=True), bytes(conn.received))
        return frames


# -- a raw STOMP client ----------------------------------------------------------------------


class RawStomp(protocol.Protocol):
    """Writes what it is told, parses what comes back, fires ``lost`` at the end."""

    def __init__(self) -> None:
        self.parser = StompFrameParser(server=False)
        self.frames: list = []
        self.lost: defer.Deferred = defer.Deferred()
        self._waiters: list[tuple[str, defer.Deferred]] = []

    def dataReceived(self, data: bytes) -> None:
        for frame in parse_frames(self.parser, data):
            self.frames.append(frame)
            for command, d in list(self._waiters):
                if frame.command == command:
                    self._waiters.remove((command, d))
                    d.callback(frame)

    def connectionLost(self, reason=None) -> None:
        self.lost.callback(self.frames)

    def expect(self, command: str, timeout: float = 10) -> defer.Deferred:
        for frame in self.frames:
            if frame.command == command:
                return defer.succeed(frame)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((command, d))
        return d.addTimeout(timeout, reactor)

    def send(self, command: str, headers: dict[str, str] | None = None, body: bytes = b""):
        head = "".join(f"{k}:{v}\n" for k, v in (headers or {}).items())
        self.transport.write(f"{command}\n{head}\n".encode() + body + b"\x00")


async def raw_client(port: int) -> RawStomp:
    proto = RawStomp()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        protocol.Factory.forProtocol(lambda: proto)
    )
    return proto


async def stomp_login(port: int, login: str | None, passcode: str | None) -> RawStomp:
    client = await raw_client(port)
    headers = {"accept-version": "1.2", "host": "127.0.0.1"}
    if login is not None:
        headers["login"] = login
    if passcode is not None:
        headers["passcode"] = passcode
    client.send("CONNECT", headers)
    return client


# -- a relay with options ----------------------------------------------------------------------


class SecureRelay:
    """A broker (optionally captured, TLS, with users) and nodes whose sealers are chosen.

    ``nodes`` maps a node name to its Node; "si" is a spawning sink whose ``endpoint_for``
    maps every host name in ``aliases`` to 127.0.0.1 (so tests can use a recognisable target
    name) and whose resolver answers from ``names``.
    """

    def __init__(self, *, capture: bool = True, **broker_kwargs) -> None:
        self.capture_enabled = capture
        self.broker_kwargs = broker_kwargs
        self.ports: list = []
        self.services: list = []
        self.nodes: dict[str, Node] = {}
        self.aliases: dict[str, str] = {}
        self.names: dict[str, str] = {}

    async def start_broker(self, tls_options=None) -> int:
        self.broker_factory = BrokerFactory(Router(), reactor, **self.broker_kwargs)
        factory = self.broker_factory
        if tls_options is not None:
            from socketeer.broker.listeners import tls_server_factory

            factory = tls_server_factory(tls_options, factory)
        if self.capture_enabled:
            factory = self.capture = Capture(factory)
        self.broker_port = await listen(factory, self.ports)
        return self.broker_port

    def add_node(
        self,
        name: str,
        url: str | None = None,
        *,
        codekey: str | None = None,
        cluster: str = "c",
        sink: bool = False,
        max_age: float = 300.0,
    ) -> Node:
        spec = parse_channel_url(url or f"stomp://127.0.0.1:{self.broker_port}/testtopic")
        sealer = Sealer(codekey, cluster, spec.topic, max_age=max_age) if codekey else None
        node = Node(cluster, name, spec.topic, reactor, window=WINDOW, sealer=sealer)
        if sink:

            def endpoint_for(host: str, port: int) -> HostnameEndpoint:
                return HostnameEndpoint(reactor, self.aliases.get(host, host), port, timeout=5)

            def resolver(name: str, reverse: bool) -> defer.Deferred:
                if name in self.names:
                    return defer.succeed(self.names[name])
                return defer.fail(OSError("no such name"))

            self.sink = Sink(node, endpoint_for, reactor, connect_timeout=5, resolver=resolver)
        svc = ChannelService(node, spec, client_endpoint(reactor, spec), reactor)
        svc.startService()
        self.services.append(svc)
        self.nodes[name] = node
        return node

    async def forward(self, source: str, target_port: int, host: str = "127.0.0.1") -> int:
        node = self.nodes[source]
        factory = FixedForwardFactory(node, "si", host, target_port, open_timeout=10)
        return await listen(factory, self.ports)

    async def stop(self) -> None:
        await defer.gatherResults([defer.maybeDeferred(s.stopService) for s in self.services])
        await defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
