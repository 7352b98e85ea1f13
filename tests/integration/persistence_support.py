"""Helpers for the persistence tests: queries, messages, Kafka records, an HTTP client."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
from starlette.types import ASGIApp

from chat.contract import Message
from chat.ids import message_id
from functions import persist, registry
from functions.batch import BatchResult, KafkaRecord
from functions.deps import Deps
from functions.web import function_app

_encode = msgspec.json.Encoder().encode
# The ``make_deps`` fixture: Deps on the session stack with some settings overridden.
MakeDeps = Callable[..., Deps]


def http_app(function: str, deps: Deps) -> ASGIApp:
    """The HTTP app of the registry's ``function``, built from its routes, on ``deps``."""
    return function_app(registry.get(function), deps)


async def fetch(deps: Deps, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one query, through the Deps' pool."""
    pool = await deps.pool()
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def get_json(app: ASGIApp, url: str, **params: str | int) -> dict[str, Any]:
    """The JSON body of a GET that must succeed."""
    async with client(app) as http:
        response = await http.get(url, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def get_error(app: ASGIApp, url: str, **headers: str) -> tuple[int, str]:
    """(status, error code) of a GET that must fail; ``x_user=""`` sends ``X-User: ""``."""
    async with client(app) as http:
        response = await http.get(url, headers={k.replace("_", "-"): v for k, v in headers.items()})
    assert response.status_code >= 400, response.text
    return response.status_code, response.json()["error"]["code"]


def iso(ts: datetime) -> str:
    """The wire form of a timestamp."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def message(
    room: str, seq: int, sender: str = "ann", text: str = "hello", ts: datetime | None = None
) -> Message:
    """A sequenced message as the message function produces it."""
    cid = f"c{seq}"
    return Message(
        id=message_id(sender, room, cid),
        room=room,
        seq=seq,
        sender=sender,
        text=text,
        client_msg_id=cid,
        ts=iso(ts or datetime.now(UTC)),
    )


def records(messages: Iterable[Message | bytes], first_offset: int = 0) -> list[KafkaRecord]:
    """Kafka records carrying ``messages`` (bytes are sent as they are)."""
    return [
        KafkaRecord(
            topic="chat.messages",
            partition=0,
            offset=first_offset + i,
            key=None,
            value=m if isinstance(m, bytes) else _encode(m),
        )
        for i, m in enumerate(messages)
    ]


async def store(deps: Deps, messages: Sequence[Message]) -> BatchResult:
    """Run the persist function over ``messages`` as one batch; fail on any failure."""
    result = await persist.handle(records(messages), deps)
    assert result.clean, result
    return result


def client(app: ASGIApp, user: str = "ann") -> httpx.AsyncClient:
    """An HTTP client calling ``app`` in process, as ``user`` (dev auth)."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://functions.test",
        headers={"X-User": user},
    )
