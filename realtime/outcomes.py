"""The sends and ops of this node that wait for their outcome: the message function publishes
it as an op frame on the room's channel, and whoever waits for that op here is answered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from chat import frames

log = logging.getLogger("realtime.outcomes")


class Outcomes:
    """Futures by op id, answered by ``deliver`` from the op frames the fan-out receives."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[frames.OpOutcome]]] = {}

    def deliver(self, packet: str) -> None:
        """An op's outcome arrived on its room's channel: answer whoever waits for it here."""
        try:
            outcome = frames.decode_op(packet)
        except frames.FrameError:
            log.warning("dropped a malformed op frame")
            return
        for future in self._waiting.pop(outcome.op, ()):
            if not future.done():
                future.set_result(outcome)

    @contextlib.contextmanager
    def expect(self, op: str) -> Iterator[asyncio.Future[frames.OpOutcome]]:
        """A future of ``op``'s outcome, registered until the block ends.

        Enter it before the op is appended: the outcome cannot come before anyone waits for it.
        """
        future: asyncio.Future[frames.OpOutcome] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(op, []).append(future)
        try:
            yield future
        finally:
            waiting = self._waiting.get(op)
            if waiting is not None:
                with contextlib.suppress(ValueError):
                    waiting.remove(future)
                if not waiting:
                    del self._waiting[op]
