"""Hostile input against the whole system: others' messages are all delivered and all stored."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
import socketio
from hypothesis import HealthCheck, given, settings
from realtime_client import Client
from schemathesis.generation.modes import GenerationMode

from devstack import Stack
from functions.openapi import build_spec
from tests.support import unique_room, until

# Each passed the old validation and then failed in a store, or crashed a handler.
POISON: list[tuple[str, dict[str, Any], str]] = [
    ("join", {"room": "x\n"}, "invalid_room"),
    ("send", {"room": "{room}\n", "text": "hi", "client_msg_id": "nl"}, "invalid_room"),
    ("send", {"room": "{room}", "text": "\ud800", "client_msg_id": "s1"}, "invalid_text"),
    ("send", {"room": "{room}", "text": "a\udfffb", "client_msg_id": "s2"}, "invalid_text"),
    ("send", {"room": "{room}", "text": "nul\x00", "client_msg_id": "z"}, "invalid_text"),
    ("send", {"room": "{room}", "text": "ok", "client_msg_id": "\ud83d"}, "invalid_client_msg_id"),
    ("typing", {"room": "{room}\n", "typing": True}, "invalid_room"),
    ("leave", {"room": "{room}\n"}, "invalid_room"),
]


def _fill(payload: dict[str, Any], room: str) -> dict[str, Any]:
    return {k: v.replace("{room}", room) if isinstance(v, str) else v for k, v in payload.items()}


async def _stored_ids(stack: Stack, room: str) -> set[str]:
    dsn = stack.endpoints()["postgres_dsn"]
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = await conn.execute("SELECT id::text FROM messages WHERE room = %s", (room,))
        return {r[0] for r in await cur.fetchall()}


async def test_poison_input_never_costs_another_user_a_message(
    full_stack: Stack, clients: list[Client]
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    room = unique_room("abuse")
    ann, bob, mallory = Client("ann"), Client("bob"), Client("mallory")
    clients += [ann, bob, mallory]
    for c, url in ((ann, urls[0]), (bob, urls[1]), (mallory, urls[0])):
        await c.connect(url)
        assert (await c.call("join", {"room": room}))["ok"] is True

    # A lone surrogate in a token is a clean refusal, not a crashed connect handler.
    eve = Client("eve")
    clients.append(eve)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await eve.connect(urls[1], auth={"token": "eyJ\ud800.x.y"})
    assert isinstance(eve.refusal, dict) and eve.refusal["code"] == "unauthorized"

    # WHEN ann and bob send while mallory sends every kind of poison at the same time
    async def good(c: Client, n: int) -> list[str]:
        ids = []
        for i in range(n):
            ack = await c.call(
                "send", {"room": room, "text": f"{c.user} {i}", "client_msg_id": f"{i}"}
            )
            assert ack["ok"] is True, ack
            ids.append(ack["id"])
        return ids

    async def poison() -> None:
        for _ in range(3):
            for event, payload, code in POISON:
                ack = await mallory.call(event, _fill(payload, room))
                assert ack["ok"] is False and ack["error"]["code"] == code, (payload, ack)

    ann_ids, bob_ids, _ = await asyncio.gather(good(ann, 12), good(bob, 12), poison())
    sent = set(ann_ids) | set(bob_ids)

    # THEN every member got every good message, in seq order, and nothing else
    for c in (ann, bob, mallory):
        await until(lambda c=c: len(c.seqs(room)) >= len(sent), f"all messages at {c.user}")
        assert {m["id"] for m in c.got("message")} == sent
        assert c.seqs(room) == list(range(1, len(sent) + 1))

    # AND every one of them is stored
    async def stored() -> bool:
        return await _stored_ids(full_stack, room) == sent

    for _ in range(150):
        if await stored():
            break
        await asyncio.sleep(0.2)
    assert await _stored_ids(full_stack, room) == sent


async def test_metrics_are_off_the_public_entry(full_stack: Stack) -> None:
    endpoints = full_stack.endpoints()
    async with httpx.AsyncClient(timeout=10) as http:
        for path in ("/metrics", "/metrics/", "/%6detrics"):
            r = await http.get(endpoints["entry_url"] + path)
            assert r.status_code == 404, path
        assert (await http.get(endpoints["entry_url"] + "/healthz")).status_code == 200
        # Scrapers read each node on its own address.
        node = await http.get(endpoints["ws_urls"][0] + "/metrics/")
        assert node.status_code == 200 and "chat_" in node.text


async def test_the_functions_host_publishes_its_openapi_description(full_stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(full_stack.endpoints()["http_url"] + "/openapi.json")
    assert r.status_code == 200 and r.json() == build_spec()


@pytest.mark.timeout(300)
def test_no_input_makes_an_http_function_answer_500(full_stack: Stack) -> None:
    url = full_stack.endpoints()["http_url"]
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    calls = 0
    for found in schema.get_all_operations():
        operation = found.ok()
        # Valid requests and requests that break the description on purpose, per operation.
        for mode in GenerationMode:

            @given(operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=20,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                nonlocal calls
                calls += 1
                # A caller per case: the HTTP rate limit is per caller.
                response = case.call(base_url=url, headers={"X-User": f"fuzz-{calls}"}, timeout=10)
                assert response.status_code < 500, (
                    case.method,
                    case.formatted_path,
                    case.query,
                    response.status_code,
                    response.text[:300],
                )
                if response.status_code >= 400:
                    assert response.json()["error"]["code"]

            check()
    assert calls >= 100
