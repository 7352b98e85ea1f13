"""Announcements coalesced per key: the first goes out at once, later ones within the quiet
interval after it become one, sent when the interval ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("realtime.coalesce")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class QuietWindows(Generic[K, V]):
    """Per key, at most one announcement per ``interval_s`` from this node.

    ``admit`` says whether to announce now; when it says no, its value waits and ``flush``
    sends the latest one waiting at the interval's end, which starts another interval.
    An interval with nothing waiting ends the key's quiet. ``interval_s`` 0 admits everything.
    """

    def __init__(
        self, interval_s: float, flush: Callable[[K, V], Awaitable[None]], what: str
    ) -> None:
        self.interval_s = interval_s
        self._flush = flush
        self._what = what
        # Keys within their quiet interval -> the value waiting for its end, None when none.
        self._quiet: dict[K, V | None] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    def waiting(self, key: K) -> V | None:
        """The value waiting for the end of ``key``'s interval, None when none is."""
        return self._quiet.get(key)

    def admit(self, key: K, value: V) -> bool:
        """True: announce now (an interval starts). False: ``value`` waits for its end."""
        if self.interval_s <= 0:
            return True
        if key in self._quiet:
            self._quiet[key] = value
            return False
        self._quiet[key] = None
        asyncio.get_running_loop().call_later(self.interval_s, self._due, key)
        return True

    def _due(self, key: K) -> None:
        value = self._quiet.pop(key, None)
        if value is None:
            return
        self._quiet[key] = None
        loop = asyncio.get_running_loop()
        loop.call_later(self.interval_s, self._due, key)
        task = loop.create_task(self._send(key, value))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _send(self, key: K, value: V) -> None:
        try:
            await self._flush(key, value)
        except Exception:
            # The key's next change announces it again.
            log.warning("coalesced %s announcement failed", self._what, exc_info=True)
