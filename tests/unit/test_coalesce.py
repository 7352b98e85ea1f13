"""Coalesced announcements: the first at once, the latest of an interval at its end, then quiet."""

from __future__ import annotations

import asyncio

import pytest

from realtime.coalesce import QuietWindows

INTERVAL_S = 0.05


async def test_the_first_goes_out_at_once_and_the_latest_of_the_interval_at_its_end() -> None:
    flushed: list[tuple[str, int]] = []

    async def flush(key: str, value: int) -> None:
        flushed.append((key, value))

    windows: QuietWindows[str, int] = QuietWindows(INTERVAL_S, flush, "test")

    # GIVEN a first change of a room: it is announced now
    assert windows.admit("room", 1)
    # WHEN two more come within the interval
    assert not windows.admit("room", 2)
    assert not windows.admit("room", 3)
    # THEN only the latest waits, and another room is not held up
    assert windows.waiting("room") == 3
    assert windows.admit("other", 9)
    await asyncio.sleep(INTERVAL_S * 3)
    assert flushed == [("room", 3)]
    # AND once an interval passes with nothing waiting, the next change goes out at once
    await asyncio.sleep(INTERVAL_S * 2)
    assert windows.waiting("room") is None
    assert windows.admit("room", 4)


async def test_an_interval_of_zero_announces_every_change() -> None:
    async def flush(key: str, value: int) -> None:
        raise AssertionError("nothing should wait")

    windows: QuietWindows[str, int] = QuietWindows(0, flush, "test")

    assert all(windows.admit("room", n) for n in range(5))
    assert windows.waiting("room") is None


async def test_a_failed_flush_is_logged_and_the_key_stays_usable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def flush(key: str, value: int) -> None:
        raise ConnectionError("redis is away")

    windows: QuietWindows[str, int] = QuietWindows(INTERVAL_S, flush, "presence")
    assert windows.admit("room", 1)
    assert not windows.admit("room", 2)

    await asyncio.sleep(INTERVAL_S * 4)

    assert "coalesced presence announcement failed" in caplog.text
    assert windows.admit("room", 3)
