"""The closed set of trigger kinds a function can declare, validated when built."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import assert_never

from redis.crc import key_slot

from chat import names

_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_ROUTE_RE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) (/[A-Za-z0-9_./{}-]*)$")
_PARAM_RE = re.compile(r"\{[^}]*\}")


def _positive(owner: str, **values: float) -> None:
    for field, value in values.items():
        if value <= 0:
            raise ValueError(f"{owner}.{field} must be positive, got {value!r}")


@dataclass(frozen=True, slots=True)
class StreamPartition:
    """One stream a Redis-stream trigger reads: its dead letters and lease share its slot."""

    index: int
    stream: str
    dead_letter: str | None
    lease: str


@dataclass(frozen=True, slots=True)
class RedisStream:
    """Invoke with batches read by a consumer group; ack after success, reclaim after a timeout."""

    stream: str
    group: str
    batch_size: int = 100
    max_wait_ms: int = 20
    visibility_timeout_s: float = 30.0
    max_attempts: int = 5
    dead_letter: str | None = None
    # Acked entries are deleted so the stream holds only work still to do.
    delete_on_ack: bool = True
    # Entries a runner may hold handled but unsettled (a handler's ``settle`` pending, e.g.
    # Kafka down); at the bound it reads nothing more until the oldest settle.
    max_settling: int = 20_000
    # The failure policy (functions.runtime.policy): past ``dead_letter_cap`` dead letters within
    # ``dead_letter_window_s``, a runner stops consuming for ``dead_letter_cooldown_s``.
    dead_letter_cap: int = 100
    dead_letter_window_s: float = 60.0
    dead_letter_cooldown_s: float = 300.0
    # Partitioned: ``stream`` names a family of ``Settings.inbound_partitions`` streams, each
    # consumed by one consumer at a time (leases shared out among the live hosts), so entries
    # of one partition are handled in order; ``concurrency`` is then the partitions' count.
    partitioned: bool = False

    def partitions(self, count: int) -> tuple[StreamPartition, ...]:
        """The streams this trigger reads (one unless partitioned), each with its dead letters."""
        if not self.partitioned:
            lease = f"{self.stream}:lease"
            return (StreamPartition(0, self.stream, self.dead_letter, lease),)
        return tuple(
            StreamPartition(
                i,
                names.partition(self.stream, i),
                names.partition_key(self.stream, i, self.dead_letter) if self.dead_letter else None,
                names.partition_key(self.stream, i, f"{self.stream}:lease"),
            )
            for i in range(count)
        )

    def __post_init__(self) -> None:
        if not self.stream or not self.group:
            raise ValueError("RedisStream.stream and RedisStream.group must not be empty")
        _positive(
            "RedisStream",
            batch_size=self.batch_size,
            max_wait_ms=self.max_wait_ms,
            visibility_timeout_s=self.visibility_timeout_s,
            max_attempts=self.max_attempts,
            max_settling=self.max_settling,
            dead_letter_cap=self.dead_letter_cap,
            dead_letter_window_s=self.dead_letter_window_s,
            dead_letter_cooldown_s=self.dead_letter_cooldown_s,
        )
        if self.dead_letter == self.stream:
            raise ValueError("RedisStream.dead_letter must differ from the stream it guards")
        if (
            self.dead_letter
            and not self.partitioned
            and key_slot(self.dead_letter.encode()) != key_slot(self.stream.encode())
        ):
            # An entry is dead-lettered atomically with its ack: one script, one slot.
            raise ValueError(
                f"RedisStream.dead_letter {self.dead_letter!r} must share the hash slot of "
                f"{self.stream!r} on a Redis Cluster: give both the same {{tag}}"
            )


@dataclass(frozen=True, slots=True)
class KafkaTopic:
    """Invoke with batches from a consumer group; commit offsets only after success."""

    topic: str
    group: str
    batch_size: int = 500
    max_wait_ms: int = 100
    max_attempts: int = 5
    dead_letter: str | None = None
    # The failure policy (functions.runtime.policy): past ``dead_letter_cap`` dead letters within
    # ``dead_letter_window_s``, a runner stops consuming for ``dead_letter_cooldown_s``.
    dead_letter_cap: int = 100
    dead_letter_window_s: float = 60.0
    dead_letter_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if not self.topic or not self.group:
            raise ValueError("KafkaTopic.topic and KafkaTopic.group must not be empty")
        _positive(
            "KafkaTopic",
            batch_size=self.batch_size,
            max_wait_ms=self.max_wait_ms,
            max_attempts=self.max_attempts,
            dead_letter_cap=self.dead_letter_cap,
            dead_letter_window_s=self.dead_letter_window_s,
            dead_letter_cooldown_s=self.dead_letter_cooldown_s,
        )
        if self.dead_letter == self.topic:
            raise ValueError("KafkaTopic.dead_letter must differ from the topic it guards")


def parse_route(route: str) -> tuple[str, str]:
    """(method, path) of ``"METHOD /path"``; anything else is an error."""
    if not _ROUTE_RE.match(route):
        raise ValueError(f"HttpRoute: {route!r} is not 'METHOD /path' (e.g. 'GET /rooms/{{room}}')")
    method, _, path = route.partition(" ")
    return method, path


def check_routes(routes: Iterable[str]) -> None:
    """Refuse two routes of one shape (``GET /rooms/{room}`` twice, or as ``/rooms/{name}``)."""
    seen: dict[str, str] = {}
    for route in routes:
        parse_route(route)
        shape = _PARAM_RE.sub("{}", route)
        if shape in seen:
            raise ValueError(f"HTTP route {route!r} is declared twice (as {seen[shape]!r})")
        seen[shape] = route


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP route (``"GET /rooms/{room}"``) and the handler module's endpoint serving it."""

    route: str
    endpoint: str

    def __post_init__(self) -> None:
        parse_route(self.route)
        if not self.endpoint.isidentifier():
            raise ValueError(f"HttpRoute: the endpoint of {self.route!r} must be a name")


@dataclass(frozen=True, slots=True)
class HttpRoute:
    """Serve HTTP routes, each with an endpoint of the handler module (see ``Function``)."""

    routes: tuple[Route, ...]

    def __post_init__(self) -> None:
        if not self.routes:
            raise ValueError("HttpRoute.routes must name at least one route")
        check_routes(r.route for r in self.routes)

    def parsed(self) -> list[tuple[str, str]]:
        """The routes as (method, path) pairs."""
        return [parse_route(r.route) for r in self.routes]


@dataclass(frozen=True, slots=True)
class Schedule:
    """Invoke every ``every_s`` seconds (one host at a time runs it: a Redis lock per tick)."""

    every_s: int

    def __post_init__(self) -> None:
        _positive("Schedule", every_s=self.every_s)


Trigger = RedisStream | KafkaTopic | HttpRoute | Schedule


def describe(trigger: Trigger) -> str:
    """A one-line human description of a trigger."""
    match trigger:
        case RedisStream():
            return f"redis-stream {trigger.stream} (group {trigger.group})"
        case KafkaTopic():
            return f"kafka-topic {trigger.topic} (group {trigger.group})"
        case HttpRoute():
            return "http " + ", ".join(r.route for r in trigger.routes)
        case Schedule():
            return f"schedule every {trigger.every_s} s"
        case _:
            assert_never(trigger)


def check_name(name: str) -> str:
    """Validate a function name (it becomes Lambda, log group and metric names)."""
    if not _NAME_RE.match(name):
        raise ValueError(f"function name {name!r} must match {_NAME_RE.pattern}")
    return name
