"""IP address literals: one strict check for the configuration, the TLS client and the tap."""

from __future__ import annotations

import pytest

from socketeer.addresses import ip_version, is_ip


@pytest.mark.parametrize(
    "host,version",
    [
        ("127.0.0.1", 4),
        ("0.0.0.0", 4),
        ("::1", 6),
        ("::ffff:127.0.0.1", 6),
        ("fe80::1%eth0", 6),
        ("localhost", None),
        ("example.com", None),
        ("127.1", None),  # inet_aton's short form is a policy matter, not a literal
        ("", None),
        ("1.2.3.4.5", None),
    ],
)
def test_ip_version(host: str, version: int | None) -> None:
    assert ip_version(host) == version
    assert is_ip(host) is (version is not None)
