"""Passphrase-protected TLS keys (the broker's and a channel's client key) and client
certificates mapped to broker logins, over real loopback TLS with certificates made here."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from cryptography.hazmat.primitives import serialization
from twisted.internet import protocol, reactor, ssl
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.testing import MemoryReactorClock

from socketeer.app import build_service
from socketeer.broker.listeners import server_options
from socketeer.channel.url import parse_channel_url
from socketeer.config.load import parse_config
from socketeer.config.model import ConfigError

from support.properties import Properties
from support.security import Identity, RawStomp, SecureRelay, make_ca, make_cert

PASSPHRASE = "correct horse battery"


def encrypted(identity: Identity, directory: Path, stem: str) -> Path:
    """A copy of the identity's key, encrypted with PASSPHRASE."""
    path = directory / f"{stem}-encrypted-key.pem"
    path.write_bytes(
        identity.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        )
    )
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d)
    client_ca = make_ca(d, "Client CA")
    server = make_cert(d, "server", ca)
    client = make_cert(d, "client", client_ca, ("node-so",), client=True)
    return {
        "dir": d,
        "ca": ca,
        "server": server,
        "server_key": encrypted(server, d, "server"),
        "client_ca": client_ca,
        "client": client,
        "client_key": encrypted(client, d, "client"),
        "stranger": make_cert(d, "stranger", client_ca, ("node-x",), client=True),
    }


def broker_props(pki, **extra: str | None) -> str:
    lines = {
        "messagingserverenabled": "true",
        "messagingserverport": "none",
        "messagingserversslport": "tcp:0",
        "messagingserversslcert": str(pki["server"].cert_path),
        "messagingserversslkey": str(pki["server_key"]),
    }
    lines.update(extra)
    return str(Properties().general(**lines))


# -- the broker's key --------------------------------------------------------------------------


def test_broker_key_passphrase_is_a_secret_reference(pki, monkeypatch):
    monkeypatch.setenv("BROKER_KEY_PASSPHRASE", PASSPHRASE)
    config = parse_config(
        broker_props(pki, messagingserversslkeypassphrase="env:BROKER_KEY_PASSPHRASE")
    )
    assert config.broker.tls.key_passphrase.value == PASSPHRASE
    assert PASSPHRASE not in repr(config.broker.tls)
    root = build_service(config, MemoryReactorClock())  # the listener's context: key decrypted
    assert [s.name for s in root] == ["broker-tls"]


@pytest.mark.parametrize(
    ("passphrase", "key", "message"),
    [
        ("not it", "messagingserversslkeypassphrase", "cannot decrypt key file {key}: wrong"),
        (None, "messagingserversslkey", "key file {key} is encrypted; give its passphrase"),
    ],
)
def test_a_wrong_or_missing_broker_passphrase_is_one_config_error(pki, passphrase, key, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(broker_props(pki, messagingserversslkeypassphrase=passphrase), "b.properties")
    text = str(caught.value)
    assert f"socketeer.general.{key}" in text and "b.properties" in text
    assert message.format(key=pki["server_key"]) in text
    assert "\n" not in text.strip() and "not it" not in text


def test_a_passphrase_for_a_plain_key_is_an_error(pki):
    with pytest.raises(ConfigError, match="is not encrypted, but a passphrase is given"):
        parse_config(
            broker_props(
                pki,
                messagingserversslkey=str(pki["server"].key_path),
                messagingserversslkeypassphrase=PASSPHRASE,
            )
        )


# -- a channel's client key, over a real TLS connection ------------------------------------------


def channel(port: int, pki, passphrase: str) -> str:
    return (
        f"stomp+ssl://127.0.0.1:{port}/testtopic?cafile={pki['ca'].cert_path}"
        f"&certfile={pki['client'].cert_path}&keyfile={pki['client_key']}"
        f"&keypassphrase={passphrase}"
    )


@pytest_twisted.ensureDeferred
async def test_encrypted_keys_on_both_ends_of_a_tls_channel(pki):
    relay = SecureRelay()
    await relay.start_broker(
        server_options(
            str(pki["server"].cert_path),
            str(pki["server_key"]),
            str(pki["client_ca"].cert_path),
            PASSPHRASE,
        )
    )
    try:
        node = relay.add_node("so", channel(relay.broker_port, pki, PASSPHRASE))
        await node.when_ready().addTimeout(20, reactor)
    finally:
        await relay.stop()


def test_channel_keypassphrase_is_hidden_and_checked(pki, monkeypatch):
    spec = parse_channel_url(channel(61627, pki, PASSPHRASE))
    assert spec.key_passphrase.value == PASSPHRASE
    assert "keypassphrase=***" in spec.redacted() and PASSPHRASE not in spec.redacted()
    assert "keypassphrase" not in dict(spec.options)
    nodes = (
        "socketeer.sourcesink.so.clustername=c\nsocketeer.sourcesink.so.nodename=so\n"
        "socketeer.sourcesink.so.isSpawningAndResolvingSink=true\n"
    )
    monkeypatch.setenv("CLIENT_KEY_PASSPHRASE", PASSPHRASE)
    good = f"socketeer.sourcesink.so.channel={channel(61627, pki, 'env:CLIENT_KEY_PASSPHRASE')}\n"
    config = parse_config(nodes + good)
    assert config.sourcesinks[0].channel.key_passphrase.value == PASSPHRASE
    bad = f"socketeer.sourcesink.so.channel={channel(61627, pki, 'not-it')}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(nodes + bad, "c.properties")
    text = str(caught.value)
    assert "socketeer.sourcesink.so.channel" in text and "c.properties" in text
    assert f"cannot decrypt key file {pki['client_key']}: wrong passphrase" in text
    assert "not-it" not in text


# -- client certificates as broker logins --------------------------------------------------------


def test_certificate_logins_need_verified_client_certificates(pki):
    with pytest.raises(ConfigError, match="messagingserversslclientca too"):
        parse_config(
            broker_props(
                pki, messagingserversslkeypassphrase=PASSPHRASE, messagingservercertlogin="cn"
            )
        )
    with pytest.raises(ConfigError, match="cn or none"):
        parse_config(
            broker_props(
                pki,
                messagingserversslkeypassphrase=PASSPHRASE,
                messagingserversslclientca=str(pki["client_ca"].cert_path),
                messagingservercertlogin="subject",
            )
        )
    config = parse_config(
        broker_props(
            pki,
            messagingserversslkeypassphrase=PASSPHRASE,
            messagingserversslclientca=str(pki["client_ca"].cert_path),
            messagingservercertlogin="cn",
        )
    )
    assert config.broker.tls.cert_login == "cn"


async def tls_stomp(port: int, pki, identity: Identity) -> RawStomp:
    """A raw STOMP client over TLS presenting *identity*'s certificate."""
    pem = identity.cert_path.read_bytes() + identity.key_path.read_bytes()
    options = ssl.optionsForClientTLS(
        "localhost",
        trustRoot=ssl.Certificate.loadPEM(pki["ca"].cert_path.read_bytes()),
        clientCertificate=ssl.PrivateCertificate.loadPEM(pem),
    )
    client = RawStomp()
    endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
    await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
    return client


@pytest_twisted.async_yield_fixture
async def cert_relay(pki):
    relay = SecureRelay(
        capture=False,
        users={"node-so": "a-long-random-passcode", "other": "other-pass"},
        destinations={"node-so": ["/topic/allowed"]},
        cert_login=True,
    )
    await relay.start_broker(
        server_options(
            str(pki["server"].cert_path),
            str(pki["server_key"]),
            str(pki["client_ca"].cert_path),
            PASSPHRASE,
        )
    )
    yield relay
    await relay.stop()


@pytest_twisted.ensureDeferred
async def test_a_client_certificate_is_the_login_and_gets_its_destinations(pki, cert_relay):
    client = await tls_stomp(cert_relay.broker_port, pki, pki["client"])
    client.send("CONNECT", {"accept-version": "1.2", "host": "127.0.0.1"})  # no passcode
    await client.expect("CONNECTED")
    client.send("SUBSCRIBE", {"destination": "/topic/allowed.x", "id": "0", "receipt": "r"})
    await client.expect("RECEIPT")
    client.send("SEND", {"destination": "/topic/forbidden"})
    error = await client.expect("ERROR")
    assert "not allowed for login 'node-so'" in error.headers["message"]
    await client.lost.addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_certificate_login_refuses_other_names(pki, cert_relay):
    # A certificate whose name is no broker user: the passcode is checked as usual.
    stranger = await tls_stomp(cert_relay.broker_port, pki, pki["stranger"])
    stranger.send("CONNECT", {"accept-version": "1.2", "host": "127.0.0.1"})
    frames = await stranger.lost.addTimeout(10, reactor)
    assert [f.command for f in frames] == ["ERROR"]
    assert frames[0].headers["message"] == "Authentication failed"
    # A CONNECT naming another login than the certificate's needs that login's passcode.
    other = await tls_stomp(cert_relay.broker_port, pki, pki["client"])
    other.send("CONNECT", {"accept-version": "1.2", "host": "127.0.0.1", "login": "other"})
    frames = await other.lost.addTimeout(10, reactor)
    assert [f.command for f in frames] == ["ERROR"]
    other = await tls_stomp(cert_relay.broker_port, pki, pki["client"])
    other.send(
        "CONNECT",
        {"accept-version": "1.2", "host": "127.0.0.1", "login": "other", "passcode": "other-pass"},
    )
    await other.expect("CONNECTED")
    other.transport.loseConnection()
    await other.lost.addTimeout(10, reactor)
