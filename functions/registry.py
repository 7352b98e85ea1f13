"""The one declaration of every function and its trigger, read by runtime, infra, tests."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from chat import names
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule, Trigger, check_name


@dataclass(frozen=True, slots=True)
class Function:
    """A function: what runs (``handler``: ``module:attribute``), when, within which bounds.

    Batch handlers (stream and topic triggers) are ``async def handle(batch, deps)`` over
    typed records (``functions.batch``) returning ``BatchResult | None``; HTTP handlers are
    ASGI apps; scheduled handlers are ``async def run(deps) -> None``.
    """

    name: str
    handler: str
    trigger: Trigger
    timeout_s: float = 30.0
    concurrency: int = 1
    memory_mb: int = 256
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        module, sep, attr = self.handler.partition(":")
        if not sep or not module or not attr.isidentifier():
            raise ValueError(
                f"Function {self.name}: handler {self.handler!r} must be 'module:attribute'"
            )
        if self.timeout_s <= 0 or self.concurrency < 1 or self.memory_mb < 128:
            raise ValueError(
                f"Function {self.name}: needs timeout_s > 0, concurrency >= 1, memory_mb >= 128"
            )

    def load(self) -> Any:
        """Import and return the handler object."""
        module, _, attr = self.handler.partition(":")
        return getattr(importlib.import_module(module), attr)


FUNCTIONS: tuple[Function, ...] = (
    Function(
        name="message",
        handler="functions.message:handle",
        trigger=RedisStream(
            stream=names.INBOUND_STREAM,
            group="message",
            batch_size=200,
            max_wait_ms=5,
            # Held entries are heartbeated while a batch runs, so this bounds only how long a
            # dead host's entries wait before another host takes them.
            visibility_timeout_s=10.0,
            dead_letter=names.INBOUND_DEAD_LETTER,
            partitioned=True,
        ),
        timeout_s=10.0,
        description="Dedup, per-room seq, recent log, fan-out, produce to Kafka.",
    ),
    Function(
        name="persist",
        handler="functions.persist:handle",
        trigger=KafkaTopic(
            topic=names.MESSAGES_TOPIC,
            group="persist",
            batch_size=1000,
            max_wait_ms=50,
            dead_letter=names.MESSAGES_DEAD_LETTER,
        ),
        timeout_s=30.0,
        # Three group members per host: while one waits on its commit, the others write; each
        # partition still has one writer, so per-room order holds.
        concurrency=3,
        description="Write sequenced messages to PostgreSQL, idempotently, in batches.",
    ),
    Function(
        name="history",
        handler="functions.history:app",
        trigger=HttpRoute(
            routes=("GET /rooms/{room}/messages", "GET /rooms/{room}/events", "GET /me/rooms")
        ),
        timeout_s=10.0,
        description="Room history pages, threads, the event catch-up and the caller's rooms.",
    ),
    Function(
        name="search",
        handler="functions.search:app",
        trigger=HttpRoute(routes=("GET /rooms/{room}/search",)),
        timeout_s=10.0,
        description="Full-text search of a room's stored messages, ranked, paged by cursor.",
    ),
    Function(
        name="rooms",
        handler="functions.rooms:app",
        trigger=HttpRoute(routes=("GET /rooms/{room}", "PUT /rooms/{room}")),
        timeout_s=10.0,
        description="Create a room with a display name; read a room's metadata.",
    ),
    Function(
        name="analytics",
        handler="functions.analytics:app",
        trigger=HttpRoute(
            routes=(
                "GET /analytics/rooms/{room}/daily",
                "GET /analytics/active-users",
                "GET /analytics/busiest-rooms",
            )
        ),
        timeout_s=10.0,
        description="Messages per room per day, active users per day, busiest rooms.",
    ),
    Function(
        name="retention",
        handler="functions.retention:run",
        trigger=Schedule(every_s=3600),
        timeout_s=60.0,
        description="Delete messages older than CHAT_RETENTION_DAYS (off when 0).",
    ),
)


def _index(functions: tuple[Function, ...]) -> dict[str, Function]:
    index: dict[str, Function] = {}
    for fn in functions:
        if fn.name in index:
            raise ValueError(f"function name {fn.name!r} is declared twice")
        index[fn.name] = fn
    return index


REGISTRY: dict[str, Function] = _index(FUNCTIONS)


def get(name: str) -> Function:
    """The function called ``name``; the error lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no function {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def select(only: list[str] | None) -> list[Function]:
    """The named functions (all when ``only`` is empty), validating each name."""
    return [get(n) for n in only] if only else list(FUNCTIONS)
