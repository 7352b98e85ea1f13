"""Fixtures shared by the integration tests of the function runtime."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from devstack import Stack
from functions.deps import Deps
from tests.integration.runtime_support import stack_deps


@pytest.fixture
def test_id() -> str:
    """A suffix that keeps a test's streams, topics and keys apart from every other test's."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def deps(stack: Stack) -> AsyncIterator[Deps]:
    """Clients of the session stack for the test process itself."""
    deps = stack_deps(stack)
    yield deps
    await deps.aclose()
