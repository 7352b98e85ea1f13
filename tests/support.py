"""What tests of every kind share: a bounded wait that names what it waits for, fresh rooms."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable

import pytest

DEADLINE_S = 20.0


async def until(
    check: Callable[[], bool | Awaitable[bool]],
    what: str,
    deadline_s: float = DEADLINE_S,
    every_s: float = 0.05,
) -> None:
    """Wait until ``check()`` (plain or async) holds; fail naming ``what`` after ``deadline_s``."""
    start = time.monotonic()
    while True:
        held = check()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() - start > deadline_s:
            pytest.fail(f"timed out after {deadline_s}s waiting for {what}")
        await asyncio.sleep(every_s)


def unique_room(prefix: str = "rt") -> str:
    """A room name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
