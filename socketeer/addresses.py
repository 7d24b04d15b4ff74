"""IP address literals: whether a host string is one, and of which family.

One strict check shared by the configuration, the TLS client and the service tree: a literal
as :mod:`ipaddress` reads it (an IPv6 zone included), never a name and never the lenient
``inet_aton`` forms, which only policy matching accepts (:func:`socketeer.policy.canonical_host`).
Pure: the standard library only.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ip_version", "is_ip"]


def ip_version(host: str) -> int | None:
    """4 or 6 when *host* is an IPv4 or IPv6 literal; None for a name or anything else."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def is_ip(host: str) -> bool:
    """*host* is an IP address literal, so it needs no lookup and is no DNS name."""
    return ip_version(host) is not None
