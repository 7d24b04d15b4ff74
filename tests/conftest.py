"""Shared fixtures."""

from __future__ import annotations

import pytest_twisted

from support.relay import Relay


@pytest_twisted.async_yield_fixture
async def relay():
    r = Relay()
    await r.start()
    yield r
    await r.stop()
