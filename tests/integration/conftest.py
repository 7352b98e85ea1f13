"""Fixtures shared by the integration tests: Deps on the session stack, function hosts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from chat.settings import Settings
from devstack import Stack
from functions.deps import Deps
from tests.integration.persistence_support import MakeDeps
from tests.integration.runtime_support import Hosts


@pytest.fixture
def test_id() -> str:
    """A suffix that keeps a test's streams, topics and keys apart from every other test's."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def make_deps(stack: Stack) -> AsyncIterator[MakeDeps]:
    """Builds Deps on the session stack with settings overridden; each closed after the test."""
    made: list[Deps] = []

    def make(**overrides: object) -> Deps:
        deps = Deps(Settings.from_env(stack.env(), environment="test", **overrides))
        made.append(deps)
        return deps

    yield make
    for deps in made:
        await deps.aclose()


@pytest.fixture
def deps(make_deps: MakeDeps) -> Deps:
    """Clients of the session stack for the test process."""
    return make_deps()


@pytest.fixture
def hosts(stack: Stack, test_id: str, tmp_path: Path) -> Iterator[Hosts]:
    """Function hosts the test starts over the test registry; all stopped after it."""
    started = Hosts(stack, test_id, tmp_path)
    yield started
    started.close()
