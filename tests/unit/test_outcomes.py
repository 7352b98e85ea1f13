"""Waiting for an op's outcome: answered from its op frame, forgotten once the wait ends."""

from __future__ import annotations

import asyncio

import pytest

from chat import frames
from realtime.outcomes import Outcomes

OP = "6d0f6a1e-0000-5000-8000-000000000000"


def op_packet(op: str, code: str, version: int = 0) -> str:
    return frames.decode_frame(frames.encode_op_frame(op, code, version)).packet


async def test_every_call_waiting_for_an_op_gets_its_outcome() -> None:
    outcomes = Outcomes()
    with outcomes.expect(OP) as first, outcomes.expect(OP) as second:
        outcomes.deliver(op_packet("another-op", "ok"))
        assert not first.done()

        outcomes.deliver(op_packet(OP, "ok", 2))

        assert await asyncio.wait_for(first, 1) == frames.OpOutcome(OP, "ok", 2)
        assert await asyncio.wait_for(second, 1) == frames.OpOutcome(OP, "ok", 2)


async def test_a_wait_that_ends_leaves_nothing_behind_and_a_late_outcome_is_dropped() -> None:
    outcomes = Outcomes()
    with outcomes.expect(OP) as future:
        pass

    outcomes.deliver(op_packet(OP, "not_found"))

    assert not future.done()
    assert outcomes._waiting == {}


async def test_a_malformed_op_frame_answers_no_one(caplog: pytest.LogCaptureFixture) -> None:
    outcomes = Outcomes()
    with outcomes.expect(OP) as future:
        outcomes.deliver("{}")

        assert not future.done()
    assert "dropped a malformed op frame" in caplog.text
