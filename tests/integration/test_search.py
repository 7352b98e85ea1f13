"""The search route on real PostgreSQL: finds, stems, ranks, pages by cursor, refuses bad input."""

from __future__ import annotations

from typing import Any

import pytest

from functions.deps import Deps
from tests.integration.persistence_support import (
    get_error,
    get_json,
    http_app,
    message,
    store,
)
from tests.support import unique_room


async def _search(deps: Deps, room: str, **params: str | int) -> dict[str, Any]:
    return await get_json(http_app("search", deps), f"/rooms/{room}/search", **params)


async def test_search_finds_stems_and_ranks_within_the_room(deps: Deps) -> None:
    # GIVEN a room where one message is about deploys three times over, one once, one not at all
    room, elsewhere = unique_room(), unique_room()
    await store(
        deps,
        [
            message(room, 1, text="lunch at noon?"),
            message(room, 2, text="I am deploying the release now"),
            message(room, 3, text="deploy deploy deploy: the deploy train leaves"),
            message(room, 4, text="coffee"),
        ],
    )
    await store(deps, [message(elsewhere, 1, text="deploy in another room")])

    # WHEN searching for "deploy"
    body = await _search(deps, room, q="deploy")

    # THEN both deploy messages come back (stemming matches "deploying"), the denser one first
    assert [r["seq"] for r in body["results"]] == [3, 2]
    ranks = [r["rank"] for r in body["results"]]
    assert ranks[0] > ranks[1] > 0
    assert body["results"][0]["text"].startswith("deploy deploy")
    assert body["next_cursor"] is None

    # AND web-search syntax works: a phrase, and an exclusion
    assert [r["seq"] for r in (await _search(deps, room, q='"deploy train"'))["results"]] == [3]
    assert [r["seq"] for r in (await _search(deps, room, q="deploy -train"))["results"]] == [2]
    # AND a query of stop words only finds nothing rather than failing
    assert (await _search(deps, room, q="the"))["results"] == []


async def test_cursor_pages_cover_every_match_once(deps: Deps) -> None:
    # GIVEN 23 matches with ties in rank (same text) and distinct ranks (repeated words)
    room = unique_room()
    texts = [("build " * (1 + s % 4)).strip() + f" number {s}" for s in range(1, 24)]
    await store(deps, [message(room, s, text=t) for s, t in enumerate(texts, start=1)])
    await store(deps, [message(room, 24, text="nothing relevant")])

    # WHEN paging 5 at a time, with a new match arriving between pages
    seen: list[int] = []
    cursor: str | None = None
    previous: tuple[float, int] | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"q": "build", "limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = await _search(deps, room, **params)
        for hit in body["results"]:
            key = (hit["rank"], hit["seq"])
            # Strictly descending by (rank, seq): the keyset order.
            assert previous is None or key < previous
            previous = key
            seen.append(hit["seq"])
        cursor = body["next_cursor"]
        pages += 1
        if cursor is None:
            break
        if pages == 2:
            await store(deps, [message(room, 25, text="build")])

    # THEN every match is seen exactly once (the late one only if it ranks after the cursor)
    assert len(seen) == len(set(seen))
    assert set(range(1, 24)) <= set(seen) <= set(range(1, 24)) | {25}
    assert pages == 5 or pages == 6


@pytest.mark.parametrize(
    "query",
    ["", "q=", "q=%20%20", "q=deploy&limit=0", "q=deploy&limit=101", "q=deploy&limit=x",
     "q=deploy&cursor=not-a-cursor", "q=deploy&cursor=AAAA", "q=" + "a" * 257, "q=a%00b"],
)  # fmt: skip
async def test_bad_parameters_answer_400_with_a_code(deps: Deps, query: str) -> None:
    url = f"/rooms/{unique_room()}/search?{query}"
    assert await get_error(http_app("search", deps), url) == (400, "invalid_parameter")


async def test_search_follows_the_history_auth_rule(deps: Deps) -> None:
    assert await get_error(http_app("search", deps), "/rooms/private:x/search?q=a") == (
        403,
        "forbidden",
    )
    assert await get_error(http_app("search", deps), "/rooms/abc/search?q=a", x_user="") == (
        401,
        "unauthorized",
    )
