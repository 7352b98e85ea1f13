"""The Pulumi program run under mocks, once per module and stack shape."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from pulumi_mocks import Deployed, running


@pytest.fixture(scope="module")
def thread_loops() -> Iterator[None]:
    """Close the event loops Pulumi's mock monitor makes in its worker threads.

    The monitor gives every worker thread a loop and never closes it; left open, they surface
    as unclosed-loop warnings in whatever test runs when they are garbage-collected.
    """
    import pulumi.runtime.mocks as pulumi_mocks_module

    made: list[asyncio.AbstractEventLoop] = []
    original = pulumi_mocks_module._ensure_event_loop

    def ensure() -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop = original()
        made.append(loop)
        return loop

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pulumi_mocks_module, "_ensure_event_loop", ensure)
        yield
    for loop in {id(loop): loop for loop in made}.values():
        if not loop.is_running():
            loop.close()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, thread_loops: None) -> Iterator[Deployed]:
    """The default stack: Redis without cluster mode."""
    with running(tmp_path_factory.mktemp("build")) as stack:
        yield stack


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory, thread_loops: None) -> Iterator[Deployed]:
    """A stack on ElastiCache in cluster mode, every Redis size off its default."""
    with running(
        tmp_path_factory.mktemp("build"),
        redis_cluster_mode=True,
        redis_shards=4,
        redis_replicas=2,
        inbound_partitions=16,
    ) as stack:
        yield stack
