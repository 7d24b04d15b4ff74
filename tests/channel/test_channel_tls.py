"""TLS to and in the broker, over real loopback sockets with certificates made in the test:
success, wrong host name, untrusted CA, pinned fingerprints, required client certificates,
no plain-TCP fallback; the broker's TLS listener and ``requireencryption`` from properties."""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent

from socketeer.app import build_service
from socketeer.broker.listeners import server_options
from socketeer.channel.url import ChannelURLError, parse_channel_url
from socketeer.config.load import parse_config
from socketeer.config.model import ConfigError
from socketeer.config.tlsfiles import TLSFileError, check_key_pair, normalize_fingerprint

from support.logs import LogEvents
from support.net import Echo, connect, free_port, listen
from support.properties import Properties
from support.security import SecureRelay, make_ca, make_cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca(d)
    other_ca = make_ca(d, "Some Other CA")
    client_ca = make_ca(d, "Client CA")
    return {
        "dir": d,
        "ca": ca,
        "other_ca": other_ca,
        "server": make_cert(d, "server", ca),
        "wrong_host": make_cert(d, "wrong-host", ca, ("broker.example", "10.1.2.3")),
        "self_signed": make_cert(d, "self-signed", None, ("broker.example",)),
        "client_ca": client_ca,
        "client": make_cert(d, "client", client_ca, ("node-so",), client=True),
        "stranger": make_cert(d, "stranger", other_ca, ("node-x",), client=True),
    }


def url(port: int, scheme: str = "stomp+ssl://", host: str = "127.0.0.1", **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{scheme}{host}:{port}/testtopic" + (f"?{query}" if query else "")


def tls_failures(port: int) -> LogEvents:
    def predicate(event: dict) -> bool:
        namespace = event.get("log_namespace", "")
        return namespace.startswith("socketeer.channel.tls") and event.get("broker", "").endswith(
            f":{port}"
        )

    return LogEvents(predicate)


async def tls_broker(identity, client_ca=None, **kwargs) -> SecureRelay:
    relay = SecureRelay(**kwargs)
    ca_path = str(client_ca.cert_path) if client_ca else None
    await relay.start_broker(
        server_options(str(identity.cert_path), str(identity.key_path), ca_path)
    )
    return relay


async def refused(
    relay: SecureRelay, channel: str, check: str, attempts: int = 2, sessions: int = 0
) -> list[dict]:
    """Start a node on ``channel``; expect ``attempts`` failures of ``check``, one line each."""
    lines = tls_failures(relay.broker_port)
    try:
        node = relay.add_node("so", channel)
        events = await lines.wait(attempts)
    finally:
        lines.close()
    assert [e["check"] for e in events] == [check] * attempts
    assert not node.when_ready().called
    # One line per attempt: never more lines than TLS connections the broker saw.
    assert len(lines.events) <= len(relay.capture.connections)
    # No session started (but ``sessions`` other nodes'): no CONNECT got through.
    started = [c for c in relay.broker_factory.connections if c.state.name != "AWAITING_CONNECT"]
    assert len(started) == sessions
    assert all(b"CONNECT" not in bytes(c.received) for c in relay.capture.connections)
    return events


# -- the client side -------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["stomp+ssl://", "ssl:"])
@pytest_twisted.ensureDeferred
async def test_tls_relay_end_to_end(pki, scheme):
    relay = await tls_broker(pki["server"])
    try:
        cafile = pki["ca"].cert_path
        relay.add_node("si", url(relay.broker_port, scheme, cafile=cafile), sink=True)
        relay.add_node("so", url(relay.broker_port, scheme, host="localhost", cafile=cafile))
        await defer.gatherResults([n.when_ready() for n in relay.nodes.values()]).addTimeout(
            20, reactor
        )
        target = await listen(protocol.Factory.forProtocol(Echo), relay.ports)
        port = await relay.forward("so", target)
        client = await connect(port)
        payload = b"over-tls-" + os.urandom(8).hex().encode()
        client.transport.write(payload)
        client.transport.loseWriteConnection()
        assert await client.lost.addTimeout(20, reactor) == payload
        captured = relay.capture.data
        assert payload not in captured and b"CONNECT" not in captured
        assert b"/topic/testtopic" not in captured  # even the destinations are hidden
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_wrong_hostname_is_refused_and_retried(pki):
    relay = await tls_broker(pki["wrong_host"])
    try:
        channel = url(relay.broker_port, cafile=pki["ca"].cert_path, password="hunter2")
        events = await refused(relay, channel, "hostname")
        text = formatEvent(events[0])
        assert "is for DNS:broker.example, IP:10.1.2.3, not 127.0.0.1" in text
        assert "will reconnect" in text
        assert "hunter2" not in text
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_untrusted_ca_is_refused(pki):
    relay = await tls_broker(pki["server"])
    try:
        events = await refused(
            relay, url(relay.broker_port, cafile=pki["other_ca"].cert_path), "ca"
        )
        assert "not signed by a trusted CA" in formatEvent(events[0])
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_pinned_self_signed_certificate(pki):
    relay = await tls_broker(pki["self_signed"])
    try:
        pin = pki["self_signed"].fingerprint
        colons = ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper()
        node = relay.add_node("si", url(relay.broker_port, verify="pin", fingerprint=colons))
        await node.when_ready().addTimeout(20, reactor)
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_pin_mismatch_is_refused(pki):
    relay = await tls_broker(pki["self_signed"])
    try:
        wrong = pki["server"].fingerprint
        events = await refused(
            relay, url(relay.broker_port, verify="pin", fingerprint=wrong), "fingerprint"
        )
        assert pki["self_signed"].fingerprint in formatEvent(events[0])
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_pin_without_verify_pin_still_checks_the_ca(pki):
    relay = await tls_broker(pki["self_signed"])
    try:
        channel = url(relay.broker_port, fingerprint=pki["self_signed"].fingerprint)
        await refused(relay, channel, "ca")
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_pin_and_ca_together(pki):
    relay = await tls_broker(pki["server"])
    try:
        cafile = pki["ca"].cert_path
        good = url(relay.broker_port, cafile=cafile, fingerprint=pki["server"].fingerprint)
        await relay.add_node("si", good).when_ready().addTimeout(20, reactor)
        bad = url(relay.broker_port, cafile=cafile, fingerprint=pki["wrong_host"].fingerprint)
        await refused(relay, bad, "fingerprint", attempts=1, sessions=1)
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_client_certificate_required(pki):
    relay = await tls_broker(pki["server"], client_ca=pki["client_ca"])
    try:
        cafile = pki["ca"].cert_path
        lines = tls_failures(relay.broker_port)
        try:
            without = relay.add_node("x1", url(relay.broker_port, cafile=cafile))
            stranger = relay.add_node(
                "x2",
                url(
                    relay.broker_port,
                    cafile=cafile,
                    certfile=pki["stranger"].cert_path,
                    keyfile=pki["stranger"].key_path,
                ),
            )
            client = pki["client"]
            node = relay.add_node(
                "so",
                url(
                    relay.broker_port,
                    cafile=cafile,
                    certfile=client.cert_path,
                    keyfile=client.key_path,
                ),
            )
            await node.when_ready().addTimeout(20, reactor)
            await lines.wait(4)
        finally:
            lines.close()
        assert {e["check"] for e in lines.events} == {"handshake"}
        assert not without.when_ready().called and not stranger.when_ready().called
    finally:
        await relay.stop()


@pytest_twisted.ensureDeferred
async def test_no_fallback_to_plain_tcp(pki):
    relay = SecureRelay()
    await relay.start_broker()  # a plain STOMP broker
    try:
        await refused(relay, url(relay.broker_port, cafile=pki["ca"].cert_path), "handshake")
        sent = relay.capture.connections[0].received
        assert sent[:1] == b"\x16"  # a TLS ClientHello, never a STOMP frame
    finally:
        await relay.stop()


# -- URLs and files ----------------------------------------------------------------------------


def test_channel_url_tls_parameters(pki):
    spec = parse_channel_url("ssl:broker:1234/t?cafile=/ca.pem&verify=pin&fingerprint=" + "AB" * 32)
    assert (spec.scheme, spec.port, spec.encrypted) == ("ssl", 1234, True)
    assert spec.option("verify") == "pin" and spec.option("certfile") is None
    assert parse_channel_url("stomp+ssl://broker/t").port == 61627
    assert not parse_channel_url("stomp://broker/t").encrypted
    for bad, message in [
        ("stomp+ssl://h/t?verify=pin", "needs a fingerprint"),
        ("stomp+ssl://h/t?fingerprint=abc", "64 hex digits"),
        ("stomp+ssl://h/t?verify=none", "allowed: full, pin"),
        ("stomp+ssl://h/t?keyfile=k.pem", "keyfile needs certfile"),
        ("stomp://h/t?cafile=ca.pem", "unknown channel parameter 'cafile'"),
    ]:
        with pytest.raises(ChannelURLError, match=message):
            parse_channel_url(bad)


def test_tls_files_are_checked(pki, tmp_path):
    server = pki["server"]
    check_key_pair(str(server.cert_path), str(server.key_path))
    with pytest.raises(TLSFileError, match="does not match"):
        check_key_pair(str(server.cert_path), str(pki["client"].key_path))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(TLSFileError, match="no PEM certificate"):
        check_key_pair(str(junk), str(server.key_path))
    with pytest.raises(TLSFileError, match="cannot read"):
        check_key_pair(str(tmp_path / "missing.pem"), str(server.key_path))
    assert normalize_fingerprint("AB:" * 31 + "AB") == "ab" * 32
    assert normalize_fingerprint("abc") is None


# -- configuration: the broker's TLS listener, channels, requireencryption ----------------


def broker_props(pki, **extra: str) -> str:
    lines = {
        "messagingserverenabled": "true",
        "messagingserverport": "none",
        "messagingserversslport": "tcp:0",
        "messagingserversslcert": str(pki["server"].cert_path),
        "messagingserversslkey": str(pki["server"].key_path),
    }
    lines.update(extra)
    return str(Properties().general(**lines))


def test_broker_tls_listener_config(pki):
    config = parse_config(broker_props(pki), "x.properties")
    assert config.broker.listen is None
    assert config.broker.tls.listen == "tcp:0:interface=127.0.0.1"
    assert config.broker.tls.client_ca is None
    root = build_service(config, MemoryReactorClock())
    assert [s.name for s in root] == ["broker-tls"]
    config = parse_config(
        broker_props(
            pki,
            messagingserverport="61626",
            messagingserversslport="tcp:61627:interface=0.0.0.0",
            messagingserversslclientca=str(pki["client_ca"].cert_path),
        )
    )
    assert config.broker.listen == "tcp:61626:interface=127.0.0.1"
    assert config.broker.tls.client_ca == str(pki["client_ca"].cert_path)
    assert [s.name for s in build_service(config, MemoryReactorClock())] == ["broker", "broker-tls"]


def test_relative_tls_paths_are_relative_to_the_properties_file(pki, tmp_path):
    text = broker_props(
        pki, messagingserversslcert="server-cert.pem", messagingserversslkey="server-key.pem"
    )
    config = parse_config(text, str(pki["dir"] / "socketeer.properties"))
    assert config.broker.tls.cert == str(pki["dir"] / "server-cert.pem")


@pytest.mark.parametrize(
    "extra,key,message",
    [
        ({"messagingserversslcert": None}, "messagingserversslcert", "required by"),
        ({"messagingserversslcert": "/nonexistent.pem"}, "messagingserversslkey", "cannot read"),
        ({"messagingserversslkey": "CLIENTKEY"}, "messagingserversslkey", "does not match"),
        ({"messagingserversslclientca": "/nonexistent.pem"}, "messagingserversslclientca", "read"),
        (
            {
                "messagingserversslport": None,
                "messagingserversslcert": None,
                "messagingserversslkey": None,
            },
            "messagingserverport",
            "no listener",
        ),
        ({"messagingserversslport": "ssl:0"}, "messagingserversslport", "messagingserverssl"),
        ({"messagingserverport": "tcp:0", "messagingserversslport": "tcp:0"}, "", ""),
    ],
)
def test_broker_tls_config_errors(pki, extra, key, message):
    extra = {k: (str(pki["client"].key_path) if v == "CLIENTKEY" else v) for k, v in extra.items()}
    text = broker_props(pki, **extra)
    if not key:
        parse_config(text)  # two ephemeral ports never clash
        return
    with pytest.raises(ConfigError, match=message) as e:
        parse_config(text, "x.properties")
    assert e.value.key == f"socketeer.general.{key}"
    if key != "messagingserversslcert":  # a missing key has no line
        assert e.value.line is not None


def test_ssl_settings_need_the_port(pki):
    text = broker_props(pki, messagingserversslport=None, messagingserverport="61626")
    with pytest.raises(ConfigError, match="needs socketeer.general.messagingserversslport"):
        parse_config(text)


def test_channel_tls_files_are_checked_at_load(pki):
    text = (
        "socketeer.sourcesink.0.clustername=c\n"
        "socketeer.sourcesink.0.nodename=si\n"
        "socketeer.sourcesink.0.isSpawningAndResolvingSink=true\n"
        "socketeer.sourcesink.0.channel=stomp+ssl://h/t?cafile=missing-ca.pem\n"
    )
    with pytest.raises(ConfigError, match="cannot read CA file") as e:
        parse_config(text, str(pki["dir"] / "s.properties"))
    assert (e.value.key, e.value.line) == ("socketeer.sourcesink.0.channel", 4)
    assert str(pki["dir"] / "missing-ca.pem") in str(e.value)
    ok = text.replace("missing-ca.pem", "socketeer-test-ca-cert.pem")
    spec = parse_config(ok, str(pki["dir"] / "s.properties")).sourcesinks[0].channel
    assert spec.option("cafile") == str(pki["dir"] / "socketeer-test-ca-cert.pem")


@pytest_twisted.ensureDeferred
async def test_tls_only_broker_and_sealed_channels_from_properties(pki):
    """The whole tree from a properties file: TLS-only broker, TLS + codekey channels."""
    broker, front = free_port(), free_port()
    targets: list = []
    target = await listen(protocol.Factory.forProtocol(Echo), targets)
    channel = f"stomp+ssl://localhost:{broker}/t?cafile={pki['ca'].cert_path}&codekey=k"
    text = broker_props(pki, messagingserversslport=str(broker), requireencryption="true")
    text += str(Properties().sink("si", channel).forward("so", channel, front, target))
    config = parse_config(text)
    warnings = LogEvents(lambda e: "not encrypted" in e.get("log_format", ""))
    root = build_service(config, reactor)
    warnings.close()
    assert warnings.events == []  # TLS and a codekey: nothing to warn about
    assert all(n.sealer is not None for n in root.nodes.values())
    root.startService()
    try:
        await defer.gatherResults([n.when_ready() for n in root.nodes.values()]).addTimeout(
            20, reactor
        )
        client = await connect(front)
        client.transport.write(b"through TLS and seal")
        client.transport.loseWriteConnection()
        assert await client.lost.addTimeout(20, reactor) == b"through TLS and seal"
    finally:
        await root.stopService()
        for p in targets:
            await p.stopListening()
