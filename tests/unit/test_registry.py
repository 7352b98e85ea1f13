"""The registry: every declaration is valid, unique and served; bad ones fail when built."""

from __future__ import annotations

import inspect

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from chat.settings import Settings
from functions import registry
from functions.__main__ import main
from functions.deps import Deps
from functions.registry import Function
from functions.runtime.http import build_app
from functions.triggers import HttpRoute, KafkaTopic, RedisStream, Route, Schedule, describe
from functions.web import function_app, json_app

HTTP_FUNCTIONS = [fn for fn in registry.FUNCTIONS if isinstance(fn.trigger, HttpRoute)]


def _deps() -> Deps:
    # No client is opened until a handler asks for one: requests refused at authentication
    # never reach Redis or PostgreSQL.
    return Deps(Settings(dev_auth=True))


def _http(fn: Function) -> HttpRoute:
    assert isinstance(fn.trigger, HttpRoute)
    return fn.trigger


def _url(path: str) -> str:
    return path.replace("{room}", "lobby")


async def _status(app: ASGIApp, method: str, path: str) -> tuple[int, str]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://fn"
    ) as http:
        r = await http.request(method, _url(path))
    json = r.headers["content-type"] == "application/json"
    return r.status_code, r.json()["error"]["code"] if json and r.status_code >= 400 else ""


@pytest.mark.parametrize(
    "fn", [f for f in registry.FUNCTIONS if f not in HTTP_FUNCTIONS], ids=lambda f: f.name
)
def test_every_batch_and_scheduled_handler_takes_its_deps_as_an_argument(fn: Function) -> None:
    handler = fn.load()
    assert inspect.iscoroutinefunction(handler)
    params = list(inspect.signature(handler).parameters)
    assert params == (["deps"] if isinstance(fn.trigger, Schedule) else ["batch", "deps"])


@pytest.mark.parametrize("fn", HTTP_FUNCTIONS, ids=lambda f: f.name)
async def test_every_declared_route_is_served_by_its_function_app(fn: Function) -> None:
    # GIVEN the function's app, built from its registry routes alone
    app = function_app(fn, _deps())
    for method, path in _http(fn).parsed():
        # WHEN a caller without credentials calls the route
        # THEN the endpoint answers (it asks who is calling), not the router (404, 405)
        assert await _status(app, method, path) == (401, "unauthorized"), f"{method} {path}"
    assert (await _status(app, "GET", "/no/such/route"))[0] == 404


async def test_the_host_serves_every_route_of_the_registry_and_nothing_else() -> None:
    app = build_app(registry.FUNCTIONS, _deps())
    for fn in HTTP_FUNCTIONS:
        for method, path in _http(fn).parsed():
            assert await _status(app, method, path) == (401, "unauthorized"), f"{method} {path}"
    assert (await _status(app, "DELETE", "/rooms/{room}"))[0] == 405
    assert (await _status(app, "GET", "/rooms/{room}/nothing"))[0] == 404


async def served(request: Request, deps: Deps) -> Response:
    """An endpoint of the shape every route needs."""
    return JSONResponse({"ok": True})


async def no_deps(request: Request) -> Response:
    """An endpoint missing its deps argument."""
    return JSONResponse({"ok": True})


def _http_fn(name: str, *routes: tuple[str, str]) -> Function:
    return Function(
        name=name,
        handler="test_registry",
        trigger=HttpRoute(routes=tuple(Route(route, endpoint) for route, endpoint in routes)),
    )


@pytest.mark.parametrize("endpoint", ["missing", "no_deps", "HTTP_FUNCTIONS"])
def test_a_route_without_its_endpoint_fails_the_build_and_names_the_route(endpoint: str) -> None:
    fn = _http_fn("probe", ("GET /ok", "served"), ("GET /rooms/{room}/x", endpoint))
    with pytest.raises(ValueError, match=rf"'GET /rooms/{{room}}/x' is not served.*{endpoint}"):
        function_app(fn, _deps())


UNSERVED = [_http_fn("probe", ("GET /rooms/{room}/x", "missing"))]


def test_a_host_with_an_unserved_route_refuses_to_start_and_says_which(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CHAT_DEV_AUTH", "true")
    code = main(["--registry", "test_registry:UNSERVED", "host", "--port", "0"])
    assert code == 2
    assert "'GET /rooms/{room}/x' is not served" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("GET /rooms/{room}", "GET /rooms/{room}"),
        ("GET /rooms/{room}", "GET /rooms/{name}"),
    ],
)
def test_a_route_declared_twice_fails_where_it_is_declared(first: str, second: str) -> None:
    # Within one function, across a registry, across the functions of one host.
    with pytest.raises(ValueError, match="declared twice"):
        _http_fn("probe", (first, "served"), (second, "served"))
    one, other = _http_fn("one", (first, "served")), _http_fn("other", (second, "served"))
    with pytest.raises(ValueError, match="declared twice"):
        registry.index([one, other])
    with pytest.raises(ValueError, match="declared twice"):
        build_app([one, other], _deps())


def test_a_route_may_not_shadow_the_health_routes() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        json_app([("GET /healthz", served)], _deps())
    with pytest.raises(ValueError, match="declared twice"):
        build_app([_http_fn("probe", ("GET /openapi.json", "served"))], _deps())


def test_one_path_may_be_served_per_method() -> None:
    fn = _http_fn("probe", ("GET /rooms/{room}", "served"), ("PUT /rooms/{room}", "served"))
    assert registry.index([fn]) == {"probe": fn}


def test_a_name_declared_twice_fails_and_lookups_list_the_valid_names() -> None:
    twice = [registry.get("persist"), registry.get("persist")]
    with pytest.raises(ValueError, match="'persist' is declared twice"):
        registry.index(twice)
    with pytest.raises(KeyError, match=r"known: analytics, history, message, persist"):
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
        (lambda: Route("/no-method", "served"), "METHOD /path"),
        (lambda: Route("GET /x", "not-a-name"), "endpoint"),
        (lambda: Schedule(every_s=0), "every_s"),
        (lambda: Function(name="Bad Name", handler="m:a", trigger=Schedule(60)), "name"),
        (lambda: Function(name="ok", handler="no-attr", trigger=Schedule(60)), "handler"),
        (
            lambda: Function(name="ok", handler="m:a", trigger=HttpRoute((Route("GET /x", "a"),))),
            "module",
        ),
        (lambda: Function(name="ok", handler="m:a", trigger=Schedule(60), timeout_s=0), "timeout"),
    ],
)
def test_a_bad_declaration_fails_when_built_and_names_the_field(build: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        build()  # type: ignore[operator]


def test_each_trigger_kind_is_described_by_what_it_listens_to() -> None:
    assert describe(RedisStream(stream="s", group="g")) == "redis-stream s (group g)"
    assert describe(KafkaTopic(topic="t", group="g")) == "kafka-topic t (group g)"
    routes = HttpRoute(routes=(Route("GET /a", "a"), Route("PUT /a", "b")))
    assert describe(routes) == "http GET /a, PUT /a"
    assert describe(Schedule(every_s=60)) == "schedule every 60 s"
