"""The one declaration of every function and its trigger, read by runtime, infra, tests."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from chat import names
from functions.triggers import (
    HttpRoute,
    KafkaTopic,
    RedisStream,
    Route,
    Schedule,
    Trigger,
    check_name,
    check_routes,
)


@dataclass(frozen=True, slots=True)
class Function:
    """A function: what runs (``handler``), when, within which bounds.

    Every handler gets the process's ``Deps`` as an argument. Batch handlers (stream and topic
    triggers) are ``async def handle(batch, deps)`` over typed records (``functions.batch``)
    returning ``BatchResult | None``; scheduled handlers are ``async def run(deps) -> None``;
    both are named ``module:attribute``. An HTTP function's handler is a module, and each of
    its routes names the endpoint there that serves it: ``async def name(request, deps) ->
    Response`` (``functions.web`` builds the app from the routes).
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
        if isinstance(self.trigger, HttpRoute):
            if sep or not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(
                    f"Function {self.name}: handler {self.handler!r} must be the module of "
                    "the routes' endpoints ('package.module')"
                )
        elif not sep or not module or not attr.isidentifier():
            raise ValueError(
                f"Function {self.name}: handler {self.handler!r} must be 'module:attribute'"
            )
        if self.timeout_s <= 0 or self.concurrency < 1 or self.memory_mb < 128:
            raise ValueError(
                f"Function {self.name}: needs timeout_s > 0, concurrency >= 1, memory_mb >= 128"
            )

    def load(self) -> Any:
        """Import and return the handler object (an HTTP function's: its module)."""
        module, _, attr = self.handler.partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, attr) if attr else loaded


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
        handler="functions.history",
        trigger=HttpRoute(
            routes=(
                Route("GET /rooms/{room}/messages", "messages"),
                Route("GET /rooms/{room}/events", "events"),
                Route("GET /me/rooms", "my_rooms"),
            )
        ),
        timeout_s=10.0,
        description="Room history pages, threads, the event catch-up and the caller's rooms.",
    ),
    Function(
        name="search",
        handler="functions.search",
        trigger=HttpRoute(routes=(Route("GET /rooms/{room}/search", "search"),)),
        timeout_s=10.0,
        description="Full-text search of a room's stored messages, ranked, paged by cursor.",
    ),
    Function(
        name="rooms",
        handler="functions.rooms",
        trigger=HttpRoute(
            routes=(Route("GET /rooms/{room}", "room_info"), Route("PUT /rooms/{room}", "put_room"))
        ),
        timeout_s=10.0,
        description="Create a room with a display name; read a room's metadata.",
    ),
    Function(
        name="analytics",
        handler="functions.analytics",
        trigger=HttpRoute(
            routes=(
                Route("GET /analytics/rooms/{room}/daily", "room_daily"),
                Route("GET /analytics/active-users", "active_users"),
                Route("GET /analytics/busiest-rooms", "busiest_rooms"),
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


def index(functions: Iterable[Function]) -> dict[str, Function]:
    """Functions by name; a name, or an HTTP route, declared twice is an error."""
    found: dict[str, Function] = {}
    for fn in functions:
        if fn.name in found:
            raise ValueError(f"function name {fn.name!r} is declared twice")
        found[fn.name] = fn
    check_routes(
        r.route
        for fn in found.values()
        if isinstance(fn.trigger, HttpRoute)
        for r in fn.trigger.routes
    )
    return found


REGISTRY: dict[str, Function] = index(FUNCTIONS)


def get(name: str) -> Function:
    """The function called ``name``; the error lists the valid names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"no function {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def select(only: list[str] | None) -> list[Function]:
    """The named functions (all when ``only`` is empty), validating each name."""
    return [get(n) for n in only] if only else list(FUNCTIONS)
