"""The HTTP functions' input bounds without services: bodies, JSON depth, dates, the spec."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from chat.settings import Settings
from functions.deps import Deps
from functions.openapi import OPERATIONS, build_spec
from functions.registry import FUNCTIONS
from functions.triggers import HttpRoute
from functions.web import date_param, json_app, json_depth, read_json

LIMIT = 1024


async def echo(request: Request, deps: Deps) -> Response:
    return JSONResponse({"body": await read_json(request, deps.settings)})


async def day(request: Request, deps: Deps) -> Response:
    from datetime import date

    return JSONResponse({"day": date_param(request, "day", date(2024, 1, 1)).isoformat()})


APP: ASGIApp = json_app(
    [("POST /echo", echo), ("GET /day", day)],
    Deps(Settings(http_max_body_bytes=LIMIT, http_max_json_depth=8)),
)


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://fn")


def _code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


async def test_a_body_within_the_limit_is_read() -> None:
    async with client() as http:
        r = await http.post("/echo", json={"display_name": "x" * 100})
    assert r.status_code == 200 and r.json() == {"body": {"display_name": "x" * 100}}


async def test_a_declared_body_over_the_limit_is_refused_unread() -> None:
    async with client() as http:
        r = await http.post("/echo", content=b"x" * (LIMIT + 1))
        assert _code(r) == (413, "payload_too_large")
        # Even on a route that never reads a body.
        r = await http.request("GET", "/day", content=b"x" * (LIMIT + 1))
        assert _code(r) == (413, "payload_too_large")


async def test_a_streamed_body_is_cut_off_once_it_passes_the_limit() -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):
            sent += 512
            yield b" " * 512

    async with client() as http:
        r = await http.post("/echo", content=chunks())
    assert _code(r) == (413, "payload_too_large")
    assert sent < 1000 * 512, "the whole body was read before the refusal"


@pytest.mark.parametrize(
    "body",
    [b"[" * 9 + b"]" * 9, b'{"a":' * 9 + b"1" + b"}" * 9, b"[" * 100_000, b'{"display_name": [[['],
)
async def test_deep_or_broken_json_is_a_400(body: bytes) -> None:
    async with client() as http:
        r = await http.post("/echo", content=body[:LIMIT])
    assert _code(r) == (400, "invalid_payload")


def test_json_depth_skips_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{\\"]]"}') == 1
    assert json_depth(b"[[1], [[2]]]") == 3
    assert json_depth(json.dumps({"a": [{"b": []}]}).encode()) == 4


@pytest.mark.parametrize(
    "raw",
    ["0001-01-01", "1969-12-31", "0000-01-01", "2024-13-01", "\uff12\uff10\uff12\uff14-01-01"],
)
async def test_dates_out_of_range_are_a_400(raw: str) -> None:
    async with client() as http:
        r = await http.get("/day", params={"day": raw})
    assert _code(r) == (400, "invalid_parameter")


def test_every_http_route_of_the_registry_is_described() -> None:
    routes = {
        f"{m} {p}"
        for fn in FUNCTIONS
        if isinstance(fn.trigger, HttpRoute)
        for m, p in fn.trigger.parsed()
    }
    assert routes == set(OPERATIONS)
    spec = build_spec()
    described = {f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops}
    assert described == routes
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    for ops in spec["paths"].values():
        for op in ops.values():
            assert "500" not in op["responses"]
