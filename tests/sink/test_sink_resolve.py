"""The sink's system resolver: one address, every address, through the thread pool."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from socketeer.sink.resolve import SystemResolver, addresses_of, lookup


def test_a_numeric_address_resolves_to_itself():
    assert addresses_of("127.0.0.1") == ["127.0.0.1"]
    assert lookup("127.0.0.1", False) == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_the_system_resolver_runs_in_the_thread_pool():
    resolver = SystemResolver(reactor)
    assert await resolver.addresses("127.0.0.1") == ["127.0.0.1"]
    assert await resolver.resolve("127.0.0.1", False) == "127.0.0.1"
