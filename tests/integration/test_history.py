"""The history route on real PostgreSQL and Redis: keyset pages, catch-up, the recent log, 400s."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from chat import names
from functions.deps import Deps
from tests.integration.persistence_support import (
    get_error,
    get_json,
    http_app,
    message,
    store,
)
from tests.support import unique_room


async def _page(deps: Deps, params: dict[str, str | int], room: str) -> dict[str, Any]:
    return await get_json(http_app("history", deps), f"/rooms/{room}/messages", **params)


def _seqs(body: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in body["messages"]]


async def test_paging_back_while_messages_arrive_has_no_gap_and_no_duplicate(deps: Deps) -> None:
    # GIVEN a room with 120 stored messages
    room = unique_room()
    await store(deps, [message(room, s, text=f"m{s}") for s in range(1, 121)])
    next_seq = 121

    # WHEN a client pages back from the newest page while 7 new messages arrive per page
    body = await _page(deps, {"limit": 25}, room)
    seen = _seqs(body)
    while body["next_before_seq"] is not None:
        await store(deps, [message(room, next_seq + i) for i in range(7)])
        next_seq += 7
        body = await _page(deps, {"limit": 25, "before_seq": body["next_before_seq"]}, room)
        page = _seqs(body)
        assert page == sorted(page)
        seen = page + seen

    # THEN it has seen every message up to the first page's newest, once each, in order
    assert seen == list(range(1, 121))

    # AND catching up after the newest it knew returns exactly the ones that arrived
    caught: list[int] = []
    after = 120
    while True:
        page = _seqs(await _page(deps, {"after_seq": after, "limit": 10}, room))
        if not page:
            break
        caught += page
        after = page[-1]
    assert caught == list(range(121, next_seq))


async def test_the_newest_page_merges_the_recent_log_while_persistence_lags(deps: Deps) -> None:
    # GIVEN seqs 1..3 stored and 4..5 only in the room's recent log (not persisted yet)
    room = unique_room()
    stored = [message(room, s) for s in range(1, 4)]
    await store(deps, stored)
    for m in [*stored, message(room, 4), message(room, 5)]:
        await deps.redis.xadd(
            names.recent_log_key(room), {"m": msgspec.json.encode(m).decode()}, id=f"{m.seq}-0"
        )

    # THEN the newest page and catch-up both include them, once
    assert _seqs(await _page(deps, {"limit": 10}, room)) == [1, 2, 3, 4, 5]
    assert _seqs(await _page(deps, {"after_seq": 2}, room)) == [3, 4, 5]
    body = await _page(deps, {"limit": 2}, room)
    assert _seqs(body) == [4, 5]
    assert body["next_before_seq"] == 4


async def test_an_empty_room_has_an_empty_page(deps: Deps) -> None:
    body = await _page(deps, {}, unique_room())
    assert body["messages"] == [] and body["next_before_seq"] is None


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "invalid_parameter"),
        ("limit=201", "invalid_parameter"),
        ("limit=ten", "invalid_parameter"),
        ("limit=1_0", "invalid_parameter"),
        ("limit=", "invalid_parameter"),
        ("before_seq=0", "invalid_parameter"),
        ("before_seq=-3", "invalid_parameter"),
        ("before_seq=99999999999999999999999", "invalid_parameter"),
        ("after_seq=9223372036854775808", "invalid_parameter"),
        ("after_seq=%00", "invalid_parameter"),
        ("before_seq=5&after_seq=1", "invalid_parameter"),
    ],
)
async def test_bad_parameters_answer_400_with_a_code(deps: Deps, query: str, code: str) -> None:
    assert await get_error(
        http_app("history", deps), f"/rooms/{unique_room()}/messages?{query}"
    ) == (400, code)


async def test_bad_rooms_and_callers_get_their_codes(deps: Deps) -> None:
    room = unique_room()
    assert await get_error(http_app("history", deps), "/rooms/" + "x" * 65 + "/messages") == (
        400,
        "invalid_room",
    )
    assert await get_error(http_app("history", deps), "/rooms/private:board/messages") == (
        403,
        "forbidden",
    )
    assert await get_error(http_app("history", deps), f"/rooms/{room}/messages", x_user="") == (
        401,
        "unauthorized",
    )
