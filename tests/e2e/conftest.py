"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from realtime_client import Client


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Realtime clients a test makes; all closed afterwards."""
    made: list[Client] = []
    yield made
    for c in made:
        await c.close()
