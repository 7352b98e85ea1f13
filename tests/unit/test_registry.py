"""The registry: every declaration is valid, unique and importable; bad ones fail when built."""

from __future__ import annotations

import inspect

import pytest

from functions import registry
from functions.registry import Function
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Schedule, describe

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("fn", registry.FUNCTIONS, ids=lambda f: f.name)
def test_every_handler_imports_with_the_shape_its_trigger_needs(fn: Function) -> None:
    handler = fn.load()
    match fn.trigger:
        case RedisStream() | KafkaTopic():
            assert inspect.iscoroutinefunction(handler)
            assert list(inspect.signature(handler).parameters) == ["batch", "deps"]
        case Schedule():
            assert inspect.iscoroutinefunction(handler)
        case HttpRoute():
            assert callable(handler)  # an ASGI app


def test_names_are_unique_and_lookups_list_the_valid_names() -> None:
    assert len({f.name for f in registry.FUNCTIONS}) == len(registry.FUNCTIONS)
    with pytest.raises(KeyError, match=r"known: .*message"):
        registry.get("nope")
    assert [f.name for f in registry.select(["persist"])] == ["persist"]
    assert registry.select(None) == list(registry.FUNCTIONS)


def test_the_walking_skeleton_functions_are_declared_on_their_triggers() -> None:
    message, persist, history = (registry.get(n) for n in ("message", "persist", "history"))
    assert isinstance(message.trigger, RedisStream)
    assert message.trigger.dead_letter
    assert isinstance(persist.trigger, KafkaTopic)
    assert persist.trigger.dead_letter
    assert isinstance(history.trigger, HttpRoute)
    assert ("GET", "/rooms/{room}/messages") in history.trigger.parsed()


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: RedisStream(stream="s", group="g", batch_size=0), "batch_size"),
        (lambda: RedisStream(stream="s", group="g", dead_letter="s"), "dead_letter"),
        (lambda: RedisStream(stream="", group="g"), "stream"),
        (lambda: KafkaTopic(topic="t", group="g", max_attempts=0), "max_attempts"),
        (lambda: KafkaTopic(topic="t", group="g", dead_letter="t"), "dead_letter"),
        (lambda: HttpRoute(routes=()), "routes"),
        (lambda: HttpRoute(routes=("/no-method",)), "METHOD /path"),
        (lambda: Schedule(every_s=0), "every_s"),
        (lambda: Function(name="Bad Name", handler="m:a", trigger=Schedule(60)), "name"),
        (lambda: Function(name="ok", handler="no-attr", trigger=Schedule(60)), "handler"),
        (lambda: Function(name="ok", handler="m:a", trigger=Schedule(60), timeout_s=0), "timeout"),
    ],
)
def test_a_bad_declaration_fails_when_built_and_names_the_field(build: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()  # type: ignore[operator]


def test_every_trigger_kind_has_a_description() -> None:
    for fn in registry.FUNCTIONS:
        assert describe(fn.trigger)
    assert describe(Schedule(every_s=60)) == "schedule every 60 s"
