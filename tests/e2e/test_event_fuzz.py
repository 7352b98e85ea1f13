"""Any payload of any event, against a live node: an ack with a stable code, nobody else hurt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realtime_client import Client

from chat.contract import ErrorCode
from devstack import Stack
from tests.support import unique_room, until

CODES = {code.value for code in ErrorCode}
EVENTS = ("join", "leave", "send", "typing", "no-such-event")
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
)
_any_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
# Payloads of the right shape with odd values: where validation bugs hide.
_shaped = st.fixed_dictionaries(
    {},
    optional={
        "room": st.one_of(st.text(max_size=70), _scalar),
        "text": st.one_of(st.text(max_size=4100), _scalar),
        "client_msg_id": st.one_of(st.text(max_size=70), _scalar),
        "since_seq": st.one_of(st.integers(min_value=-5, max_value=2**64), _scalar),
        "typing": _scalar,
    },
)


@pytest.fixture
async def fuzzer(full_stack: Stack) -> AsyncIterator[Client]:
    client = Client("fuzz")
    await client.connect(full_stack.endpoints()["ws_urls"][0])
    yield client
    await client.close()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(event=st.sampled_from(EVENTS), payload=st.one_of(_any_json, _shaped))
async def test_every_payload_of_every_event_gets_an_ack_with_a_stable_code(
    fuzzer: Client, event: str, payload: Any
) -> None:
    ack = await fuzzer.call(event, payload)
    assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), ack
    if not ack["ok"]:
        assert ack["error"]["code"] in CODES, ack


async def test_after_the_fuzzing_the_node_serves_everyone(
    full_stack: Stack, clients: list[Client]
) -> None:
    points = full_stack.endpoints()
    room = unique_room("after-fuzz")
    ann, bob = Client("ann"), Client("bob")
    clients += [ann, bob]
    await ann.connect(points["ws_urls"][0])
    await bob.connect(points["ws_urls"][1])
    for c in (ann, bob):
        assert (await c.call("join", {"room": room}))["ok"] is True
    for n in range(5):
        payload = {"room": room, "text": f"t{n}", "client_msg_id": f"c{n}"}
        assert (await ann.call("send", payload))["ok"] is True
    await until(lambda: bob.seqs(room) == [1, 2, 3, 4, 5], "every message at bob")
    async with httpx.AsyncClient(timeout=5) as http:
        for url in points["ws_urls"]:
            assert (await http.get(f"{url}/healthz")).status_code == 200
