"""Suite-wide fixtures: one private local stack per test session, stopped whatever happens."""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType

import pytest

from chat.clients import redis_client
from chat.settings import Settings
from chat.shards import Shards
from devstack import Stack
from devstack.testing import make_stack, start_or_fail, stop_and_remove

TESTS = Path(__file__).parent
NEEDS = ("unit", "integration", "e2e")
# What a folder's tests need. A test's own marker wins: the few tests of tests/infra that use the
# stack, and the checks of tests/integration that need none, say so themselves.
FOLDER_NEEDS = {
    "unit": "unit",
    "integration": "integration",
    "e2e": "e2e",
    "browser": "e2e",
    "infra": "unit",
}
# Fixtures that start services: a test using one is not a unit test.
SERVICE_FIXTURES = frozenset({"stack", "full_stack", "shards"})


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers that split the suite by what it needs."""
    config.addinivalue_line("markers", "unit: needs no service")
    config.addinivalue_line("markers", "integration: needs Redis, PostgreSQL and Kafka (stack)")
    config.addinivalue_line("markers", "e2e: needs the whole system behind its entry point")
    config.addinivalue_line(
        "markers", "cluster: runs on a Redis Cluster stack only (REDIS=cluster)"
    )
    config.addinivalue_line("markers", "standalone: runs on a single-Redis stack only")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by the markers given here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by what it needs, then select the tests of the stack's Redis mode."""
    for item in items:
        _mark_by_folder(item)
    # A cluster test has no single Redis to kill, a standalone one no primary to fail over. The
    # other mode's tests are deselected (and run in that mode's pass of ``make test``), never
    # skipped.
    other = "standalone" if os.environ.get("REDIS") == "cluster" else "cluster"
    keep = [item for item in items if other not in item.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if other in i.keywords])
        items[:] = keep


def _mark_by_folder(item: pytest.Item) -> None:
    """Give ``item`` its folder's marker unless it has one; refuse a unit test using services."""
    needs = {mark.name for mark in item.iter_markers() if mark.name in NEEDS}
    if not needs:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder not in FOLDER_NEEDS:
            raise pytest.UsageError(
                f"{item.nodeid}: tests/{folder} has no marker; add the folder to FOLDER_NEEDS"
                " in tests/conftest.py"
            )
        needs = {FOLDER_NEEDS[folder]}
        item.add_marker(FOLDER_NEEDS[folder])
    used = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if "unit" in needs and used:
        raise pytest.UsageError(
            f"{item.nodeid} is a unit test but uses {sorted(used)}: mark it integration"
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # pytest tears fixtures down on KeyboardInterrupt: a SIGTERM gets the same clean stop.
    raise KeyboardInterrupt


@pytest.fixture(scope="session")
def _session_stack() -> Iterator[Stack]:
    stack = make_stack("chat-stack-", gateways=2, function_hosts=1)
    done = False

    def finish() -> None:
        nonlocal done
        if not done:
            done = True
            stop_and_remove(stack)

    # A second net under the fixture teardown, for an interpreter that exits another way.
    atexit.register(finish)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield stack
    finally:
        finish()
        atexit.unregister(finish)


@pytest.fixture(scope="session")
def stack(_session_stack: Stack) -> Stack:
    """Private Redis (a cluster with ``REDIS=cluster``), PostgreSQL and Kafka, provisioned."""
    start_or_fail(_session_stack, _session_stack.services())
    return _session_stack


@pytest.fixture(scope="session")
def full_stack(stack: Stack) -> Stack:
    """The same stack plus 2 gateways, 1 function host and the load balancer in front."""
    start_or_fail(stack)
    return stack


@pytest.fixture
async def shards(stack: Stack) -> AsyncIterator[Shards]:
    """The stack's Redis (one node or a cluster) as the processes see it: keys and their nodes."""
    settings = Settings.from_env(stack.env())
    client = redis_client(settings)
    shards = Shards(settings, client)
    yield shards
    await shards.aclose()
    await client.aclose()
