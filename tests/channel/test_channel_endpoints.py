"""Client endpoints built from channel specs: TCP, TLS, failover and transport plugins."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.testing import MemoryReactorClock

from socketeer.channel.endpoints import (
    CONNECT_TIMEOUT,
    TRANSPORTS,
    client_endpoint,
    register_transport,
)
from socketeer.channel.failover import FailoverEndpoint
from socketeer.channel.url import (
    SCHEMES,
    ChannelURLError,
    parse_channel_url,
    register_scheme,
)
from socketeer.config.tlsfiles import TLSFileError

from support.security import make_ca, make_cert


def test_stomp_client_endpoint_is_a_hostname_endpoint() -> None:
    endpoint = client_endpoint(
        MemoryReactorClock(), parse_channel_url("stomp://broker.example:1234/t")
    )
    assert isinstance(endpoint, HostnameEndpoint)
    assert endpoint._hostBytes == b"broker.example"
    assert endpoint._port == 1234
    assert endpoint._timeout == CONNECT_TIMEOUT == 10


@pytest.mark.parametrize("scheme", ["stomp+ssl://", "ssl:"])
def test_tls_schemes_get_the_reporting_tls_endpoint(tmp_path, scheme: str) -> None:
    ca = make_ca(tmp_path)
    spec = parse_channel_url(f"{scheme}broker.example:1234/t?cafile={ca.cert_path}")
    endpoint = client_endpoint(MemoryReactorClock(), spec)
    assert repr(endpoint) == "<TLS endpoint broker.example:1234>"


def test_tls_endpoint_reads_the_files_when_it_is_built(tmp_path) -> None:
    server = make_cert(tmp_path, "server", make_ca(tmp_path))
    other = make_cert(tmp_path, "other", None)
    spec = parse_channel_url(
        f"stomp+ssl://h/t?certfile={server.cert_path}&keyfile={other.key_path}"
    )
    with pytest.raises(TLSFileError, match="does not match"):
        client_endpoint(MemoryReactorClock(), spec)


def test_failover_channel_gets_a_failover_endpoint_over_each_brokers_transport() -> None:
    spec = parse_channel_url("failover:(stomp://a:1/t,stomp+ssl://b:2/t)?randomize=false")
    endpoint = client_endpoint(MemoryReactorClock(), spec)
    assert isinstance(endpoint, FailoverEndpoint)
    assert repr(endpoint) == "<FailoverEndpoint a:1, b:2>"


@dataclass
class _FakeScheme:
    name: str = "fake+test"
    default_port: int = 4242
    transport: str = "fake"


def test_registered_scheme_is_a_plugin() -> None:
    register_scheme(_FakeScheme())
    register_transport("fake", lambda reactor, spec: ("endpoint", reactor, spec.host, spec.port))
    try:
        parsed = parse_channel_url("fake+test://h/t")
        assert parsed.port == 4242
        assert client_endpoint("R", parsed) == ("endpoint", "R", "h", 4242)
    finally:
        del SCHEMES["fake+test"]
        del TRANSPORTS["fake"]
    with pytest.raises(ChannelURLError, match="allowed schemes: stomp"):
        parse_channel_url("fake+test://h/t")


def test_every_registered_scheme_has_a_transport() -> None:
    assert {scheme.transport for scheme in SCHEMES.values()} <= set(TRANSPORTS)


def test_channel_url_module_imports_no_twisted() -> None:
    """The configuration parses channel URLs, and the configuration must not need Twisted."""
    code = (
        "import sys, socketeer.channel.url, socketeer.secret\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
