"""Listen endpoint strings: bare ports, checked endpoint strings, and listener clashes."""

from __future__ import annotations

import pytest

from socketeer.config.endpoints import (
    bare_port_endpoint,
    clashes,
    endpoint_fields,
    listen_endpoint,
    listen_key,
    read_interface,
)
from socketeer.config.model import ConfigError
from socketeer.config.properties import Properties, read_entries


def props(text: str) -> Properties:
    return Properties("t.properties", read_entries(text, "t.properties", []))


def test_bare_port_endpoint_escapes_ipv6() -> None:
    assert bare_port_endpoint(80, "127.0.0.1") == "tcp:80:interface=127.0.0.1"
    assert bare_port_endpoint(80, "::1") == "tcp6:80:interface=\\:\\:1"


def test_endpoint_fields_unescape_as_twisted_does() -> None:
    assert endpoint_fields("tcp6:80:interface=\\:\\:1") == (["80"], {"interface": "::1"})
    assert endpoint_fields("unix:address=/run/s.sock:mode=600") == (
        [],
        {"address": "/run/s.sock", "mode": "600"},
    )
    assert endpoint_fields("tcp:port=8080") == ([], {"port": "8080"})


def test_listen_key_and_clashes() -> None:
    a = listen_key("tcp:80:interface=127.0.0.1")
    assert a == ("inet", 80, "127.0.0.1")
    assert listen_key("tcp:0") is None  # ephemeral: never clashes
    assert listen_key("unix:/run/s.sock") == ("unix", "/run/s.sock", "")
    wildcard = listen_key("tcp:80:interface=0.0.0.0")
    other = listen_key("tcp:80:interface=127.0.0.2")
    assert a and wildcard and other
    assert clashes(a, a) and clashes(a, wildcard) and clashes(wildcard, other)
    assert not clashes(a, other)
    assert not clashes(a, ("inet", 81, "127.0.0.1"))


def test_read_interface() -> None:
    assert read_interface(props(""), "i") == "127.0.0.1"
    assert read_interface(props("i=::\n"), "i") == "::"
    with pytest.raises(ConfigError, match="invalid interface 'localhost'"):
        read_interface(props("i=localhost\n"), "i")


@pytest.mark.parametrize(
    "value,expected",
    [
        ("1080", "tcp:1080:interface=127.0.0.2"),
        ("tcp:1080", "tcp:1080:interface=127.0.0.1"),
        ("tcp6:1080", "tcp6:1080:interface=\\:\\:1"),
        ("unix:/run/s.sock", "unix:/run/s.sock"),
    ],
)
def test_listen_endpoint(value: str, expected: str) -> None:
    warnings: list[str] = []
    assert listen_endpoint(props(f"p={value}\n"), "p", "127.0.0.2", "i", warnings) == expected
    assert warnings == []


@pytest.mark.parametrize(
    "value,problem",
    [("0", "out of range"), ("http:80", "invalid listener"), ("tcp:x", "no valid port")],
)
def test_listen_endpoint_refuses(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as e:
        listen_endpoint(props(f"\np={value}\n"), "p", "127.0.0.1", "i", [])
    assert (e.value.key, e.value.line) == ("p", 2)


def test_interface_is_ignored_for_an_endpoint_string() -> None:
    warnings: list[str] = []
    listen_endpoint(props("p=tcp:80\ni=::1\n"), "p", "::1", "i", warnings)
    assert warnings == ["t.properties:2: i is ignored because p is an endpoint string"]
