"""The realtime gateway on two nodes: auth, private rooms, presence, typing, limits, transports."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

import httpx
import pytest
import socketio
from realtime_client import Client, token

from chat.ratelimit import Limit, RateLimiter
from chat.settings import Settings
from chat.shards import Shards
from devstack import Stack
from tests.support import unique_room, until


async def _connect(made: list[Client], url: str, user: str | None = None, **kwargs: Any) -> Client:
    cookies = kwargs.pop("cookies", False)
    c = Client(user or f"u-{uuid.uuid4().hex[:8]}", cookies=cookies)
    made.append(c)
    await c.connect(url, **kwargs)
    return c


async def _cast(stack: Stack, made: list[Client], *who: tuple[str, int]) -> list[Client]:
    """Connect each (user, gateway index) in turn."""
    urls = stack.endpoints()["ws_urls"]
    return [await _connect(made, urls[node], user) for user, node in who]


# ----- auth -----


@pytest.mark.parametrize(
    ("case", "auth"),
    [
        ("another secret", lambda s: {"token": token(s, "eve", secret="x" * 40)}),
        ("expired", lambda s: {"token": token(s, "eve", exp=int(time.time()) - 5)}),
        ("missing", lambda s: {}),
        ("empty token", lambda s: {"token": ""}),
        ("no auth object", lambda s: None),
    ],
)
async def test_bad_credentials_are_refused_with_code_and_message(
    full_stack: Stack, case: str, auth: Any
) -> None:
    c = Client("eve")
    body = auth(full_stack)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await c.sio.connect(
            full_stack.endpoints()["entry_url"],
            auth=body,
            transports=["websocket"],
            wait_timeout=10,
        )
    assert isinstance(c.refusal, dict), case
    assert c.refusal["code"] == "unauthorized", (case, c.refusal)
    assert c.refusal["message"], case
    await c.close()


async def test_a_valid_token_connects_and_private_rooms_need_a_grant(
    full_stack: Stack, clients: list[Client]
) -> None:
    url = full_stack.endpoints()["ws_urls"][0]
    room = f"private:{uuid.uuid4().hex[:10]}"
    granted = await _connect(clients, url, auth={"token": token(full_stack, "ann", rooms=[room])})
    globbed = await _connect(
        clients, url, auth={"token": token(full_stack, "bo", rooms="private:*")}
    )
    plain = await _connect(clients, url, auth={"token": token(full_stack, "cy")})
    dev = await _connect(clients, url, user="dee")
    assert (await granted.call("join", {"room": room}))["ok"] is True
    assert (await globbed.call("join", {"room": room}))["ok"] is True
    for refused in (plain, dev):
        ack = await refused.call("join", {"room": room})
        assert ack["ok"] is False and ack["error"]["code"] == "forbidden", ack
        # Refused members may not send there either.
        ack = await refused.call("send", {"room": room, "text": "hi", "client_msg_id": "1"})
        assert ack["error"]["code"] == "not_member"
    assert (await plain.call("join", {"room": unique_room()}))["ok"] is True


async def test_a_token_that_expires_while_connected_stops_working(
    full_stack: Stack, clients: list[Client]
) -> None:
    url = full_stack.endpoints()["ws_urls"][1]
    c = await _connect(
        clients, url, auth={"token": token(full_stack, "short", exp=int(time.time()) + 5)}
    )
    # The first join must be answered before the token expires, even on a loaded machine.
    assert (await c.call("join", {"room": unique_room()}))["ok"] is True
    await asyncio.sleep(5.5)
    if c.sio.connected:  # the heartbeat may have closed it already
        ack = await c.call("join", {"room": unique_room()})
        assert ack["error"]["code"] == "unauthorized"
    settings = Settings.from_env()
    await until(
        lambda: not c.sio.connected,
        "the expired socket to be closed",
        settings.presence_heartbeat_s + 5,
    )


# ----- presence -----


async def test_presence_lists_members_across_nodes_on_join_and_change(
    full_stack: Stack, clients: list[Client]
) -> None:
    room = unique_room()
    ann, bob, bob_tab = await _cast(full_stack, clients, ("ann", 0), ("bob", 1), ("bob", 0))
    await ann.call("join", {"room": room})
    await until(lambda: ann.users(room) == ["ann"], "ann alone")
    await bob.call("join", {"room": room})
    await until(lambda: ann.users(room) == ["ann", "bob"], "bob at ann (other node)")
    await until(lambda: bob.users(room) == ["ann", "bob"], "the list at bob on join")
    # A second socket of a present user changes nothing, but the joiner still gets the list.
    before = len(ann.got("presence", room))
    await bob_tab.call("join", {"room": room})
    await until(lambda: bob_tab.users(room) == ["ann", "bob"], "the list at bob's second tab")
    await bob.call("leave", {"room": room})
    await asyncio.sleep(0.5)
    assert len(ann.got("presence", room)) == before, "bob is still there through his other tab"
    await bob_tab.sio.disconnect()
    await until(lambda: ann.users(room) == ["ann"], "bob gone once his last socket left")


# ----- typing -----


async def test_typing_reaches_others_on_every_node_but_never_the_typist(
    full_stack: Stack, clients: list[Client]
) -> None:
    room = unique_room()
    ann, bob, cy = await _cast(full_stack, clients, ("ann", 0), ("bob", 1), ("cy", 0))
    for c in (ann, bob, cy):
        await c.call("join", {"room": room})
    assert await ann.call("typing", {"room": room, "typing": True}) == {"ok": True}
    expected = {"room": room, "user": "ann", "typing": True}
    await until(lambda: bob.got("typing", room) == [expected], "typing at bob (other node)")
    await until(lambda: cy.got("typing", room) == [expected], "typing at cy (same node)")
    await asyncio.sleep(0.3)
    assert ann.got("typing") == []

    # WHEN ann keeps hammering typing events
    acks = [await ann.call("typing", {"room": room, "typing": i % 2 == 0}) for i in range(30)]
    limited = [a for a in acks if not a["ok"]]
    # THEN most are refused with a wait, and the others see only the few that passed
    assert limited and all(a["error"]["code"] == "rate_limited" for a in limited)
    assert all(isinstance(a["retry_after_ms"], int) and a["retry_after_ms"] > 0 for a in limited)
    passed = 30 - len(limited)
    assert passed <= 10, passed
    await until(lambda: len(bob.got("typing", room)) == 1 + passed, "the passed typing events")
    assert ann.got("typing") == []


# ----- rate limits -----


async def test_a_flooding_client_is_limited_without_slowing_others(
    full_stack: Stack, clients: list[Client]
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    flood_room, calm_room = unique_room("flood"), unique_room("calm")
    flooder = await _connect(clients, urls[0], "flooder")
    ann = await _connect(clients, urls[0], "ann")
    bob = await _connect(clients, urls[1], "bob")
    await flooder.call("join", {"room": flood_room})
    for c in (ann, bob):
        await c.call("join", {"room": calm_room})

    async def converse(n: int, tag: str) -> list[float]:
        """Ann sends n messages; how long each takes to reach bob on the other node."""
        took = []
        for i in range(n):
            start = time.monotonic()
            text = f"{tag}-{i}"
            ack = await ann.call("send", {"room": calm_room, "text": text, "client_msg_id": text})
            assert ack["ok"] is True, ack
            await until(
                lambda text=text: any(m["text"] == text for m in bob.got("message", calm_room)),
                f"{text} at bob",
                10,
            )
            took.append(time.monotonic() - start)
            await asyncio.sleep(0.05)
        return took

    baseline = await converse(5, "before")

    async def flood() -> list[Any]:
        acks: list[Any] = []
        for burst in range(10):
            acks += await asyncio.gather(
                *(
                    flooder.call(
                        "send",
                        {"room": flood_room, "text": "spam", "client_msg_id": f"{burst}-{i}"},
                    )
                    for i in range(30)
                )
            )
        return acks

    started = time.monotonic()
    flood_acks, during = await asyncio.gather(flood(), converse(10, "during"))
    elapsed = time.monotonic() - started
    accepted = [a for a in flood_acks if a["ok"]]
    limited = [a for a in flood_acks if not a["ok"]]
    assert {a["error"]["code"] for a in limited} == {"rate_limited"}
    assert all(a["retry_after_ms"] > 0 for a in limited)
    # Per socket: 10/s with a burst of 20 (the default limits).
    assert len(accepted) <= 20 + 10 * elapsed + 2, (len(accepted), elapsed)
    assert statistics.median(during) < max(0.5, 5 * statistics.median(baseline)), (baseline, during)
    assert max(during) < 2.0, during


async def test_a_users_send_limit_holds_across_nodes(
    full_stack: Stack, clients: list[Client]
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    room = unique_room()
    user = f"multi-{uuid.uuid4().hex[:6]}"
    tabs = [await _connect(clients, urls[i % 2], user) for i in range(4)]
    for t in tabs:
        await t.call("join", {"room": room})
    started = time.monotonic()
    acks = await asyncio.gather(
        *(
            t.call("send", {"room": room, "text": "x", "client_msg_id": f"{n}-{i}"})
            for n, t in enumerate(tabs)
            for i in range(25)
        )
    )
    elapsed = time.monotonic() - started
    accepted = sum(1 for a in acks if a["ok"])
    # Four sockets could pass 4 x 20 alone; the user's bucket (20/s, burst 40) binds them all.
    assert 30 <= accepted <= 40 + 20 * elapsed + 2, (accepted, elapsed)


async def test_the_limiter_refills_at_its_rate(full_stack: Stack, shards: Shards) -> None:
    limiter = RateLimiter(shards, {("probe", "socket"): Limit(20, 3)})
    user = f"probe-{uuid.uuid4().hex[:6]}"
    waits = [await limiter.retry_after_ms("probe", user, "s1") for _ in range(4)]
    assert waits[:3] == [0, 0, 0] and 0 < waits[3] <= 50, waits
    assert await limiter.retry_after_ms("probe", user, "s2") == 0  # another socket
    await asyncio.sleep(waits[3] / 1000 + 0.01)
    assert await limiter.retry_after_ms("probe", user, "s1") == 0
    assert await limiter.retry_after_ms("other-event", user, "s1") == 0  # no limit set


async def test_a_socket_may_not_join_more_rooms_than_allowed(
    full_stack: Stack, clients: list[Client]
) -> None:
    c = await _connect(clients, full_stack.endpoints()["ws_urls"][1])
    cap = Settings().max_rooms_per_socket
    prefix = unique_room("many")
    acks = [await c.call("join", {"room": f"{prefix}-{i}"}) for i in range(cap)]
    assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:1]
    over = await c.call("join", {"room": f"{prefix}-over"})
    assert over["error"]["code"] == "too_many_rooms"
    assert (await c.call("join", {"room": f"{prefix}-0"}))["ok"] is True  # a rejoin is fine


# ----- transports and bad input -----


async def test_long_polling_works_through_the_load_balancer(
    full_stack: Stack, clients: list[Client]
) -> None:
    points = full_stack.endpoints()
    room = unique_room()
    poller = await _connect(
        clients, points["entry_url"], "poller", transports=["polling"], cookies=True
    )
    assert poller.sio.transport() == "polling"
    other = await _connect(clients, points["ws_urls"][0], "other")
    await poller.call("join", {"room": room})
    await other.call("join", {"room": room})
    for i in range(10):
        ack = await poller.call("send", {"room": room, "text": f"p{i}", "client_msg_id": f"p{i}"})
        assert ack["ok"] is True, ack
        ack = await other.call("send", {"room": room, "text": f"o{i}", "client_msg_id": f"o{i}"})
        assert ack["ok"] is True, ack
    await until(lambda: len(poller.seqs(room)) == 20, "20 messages over long-polling")
    assert poller.seqs(room) == list(range(1, 21))
    assert poller.session is not None
    cookies = {c.key for c in poller.session.cookie_jar}
    assert "chat_gateway" in cookies, "the load balancer's sticky cookie"
    # The default client polls first, then upgrades to WebSocket: the upgrade must land on the
    # node that holds the session.
    upgrader = await _connect(
        clients, points["entry_url"], "upgrader", transports=["polling", "websocket"], cookies=True
    )
    await until(lambda: upgrader.sio.transport() == "websocket", "the upgrade to websocket")
    assert (await upgrader.call("join", {"room": room}))["last_seq"] == 20


BAD_SHAPES: list[tuple[str, tuple[Any, ...], str]] = [
    ("join", ({"room": 5},), "invalid_room"),
    ("join", ({"room": "a" * 65},), "invalid_room"),
    ("join", ({"room": "ok", "since_seq": True},), "invalid_payload"),
    ("join", ({"room": "ok", "since_seq": 10**30},), "invalid_payload"),
    ("join", ({"room": "ok", "since_seq": 2**63},), "invalid_payload"),
    ("join", ({"room": "ok", "since_seq": "3"},), "invalid_payload"),
    ("join", (["room", "ok"],), "invalid_payload"),
    ("join", ({"room": "ok"}, {"room": "two"}), "invalid_payload"),
    ("join", (b"\x00\x01binary",), "binary_not_supported"),
    ("join", (12.5,), "invalid_payload"),
    ("leave", ({"room": None},), "invalid_room"),
    ("send", ({"room": "{room}", "text": "\x00", "client_msg_id": "a"},), "invalid_text"),
    ("send", ({"room": "{room}", "text": "hi", "client_msg_id": "a\nb"},), "invalid_client_msg_id"),
    (
        "send",
        ({"room": "{room}", "text": {"nested": [1, 2]}, "client_msg_id": "a"},),
        "invalid_payload",
    ),
    ("send", ({"room": "{room}", "client_msg_id": "a"},), "invalid_payload"),
    ("typing", ({"room": "{room}"},), "invalid_payload"),
    ("typing", ({"room": "{room}", "typing": 1},), "invalid_payload"),
    ("message", ({"room": "{room}"},), "invalid_payload"),
    ("connect", ({},), "invalid_payload"),
    ("connect", ({}, {"user": "admin"}), "invalid_payload"),
    ("disconnect", ("client namespace disconnect",), "invalid_payload"),
]


async def test_bad_payload_shapes_each_get_an_error_ack_and_the_node_stays_up(
    full_stack: Stack, clients: list[Client]
) -> None:
    urls = full_stack.endpoints()["ws_urls"]
    room = unique_room()
    c = await _connect(clients, urls[0])
    watcher = await _connect(clients, urls[1])
    for m in (c, watcher):
        await m.call("join", {"room": room})
    for event, args, code in BAD_SHAPES:
        args = tuple(
            {k: (room if v == "{room}" else v) for k, v in a.items()} if isinstance(a, dict) else a
            for a in args
        )
        ack = await c.sio.call(event, args if len(args) > 1 else args[0], timeout=10)
        assert isinstance(ack, dict) and ack["ok"] is False, (event, args, ack)
        assert ack["error"]["code"] == code, (event, args, ack)
    ok = await c.call("send", {"room": room, "text": "still fine", "client_msg_id": "ok"})
    assert ok["ok"] is True
    await until(
        lambda: [m["text"] for m in watcher.got("message", room)] == ["still fine"], "the good one"
    )
    async with httpx.AsyncClient(timeout=5) as http:
        for url in urls:
            health = (await http.get(f"{url}/healthz")).json()
            assert health["status"] == "ok" and health["checks"]["redis"] == "ok"
        metrics = (await http.get(f"{urls[0]}/metrics/")).text
    for name in (
        "chat_gateway_connections",
        "chat_gateway_rooms",
        "chat_gateway_events_in_total",
        "chat_gateway_events_out_total",
        "chat_gateway_acks_total",
        'chat_gateway_errors_total{code="invalid_room"}',
        "chat_gateway_fanout_latency_seconds_bucket",
    ):
        assert name in metrics, name
