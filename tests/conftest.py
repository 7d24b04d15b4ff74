"""Shared fixtures."""

from __future__ import annotations

import pytest
import pytest_twisted

from support.logs import captured_log
from support.relay import Relay


@pytest_twisted.async_yield_fixture
async def relay():
    r = Relay()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
def logged():
    """Every log event of the test, formatted."""
    with captured_log() as lines:
        yield lines
