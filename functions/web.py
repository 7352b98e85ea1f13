"""What every HTTP function shares: JSON errors, parameter parsing, auth, health, the app.

An HTTP function's app is built from its registry routes (``function_app``): each route is served
by the endpoint it names, ``async def name(request, deps) -> Response``, called with the Deps
the app was built with. A route declared twice, or without its endpoint, fails the build.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any

import psycopg
import psycopg_pool
import redis.exceptions
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from chat.auth import Identity, authenticate_http, authorize_room
from chat.contract import ContractError, ErrorCode, check_room
from chat.ratelimit import RateLimiter, parse_limits, raise_if_limited
from chat.settings import Settings
from functions.deps import Deps
from functions.registry import Function
from functions.store.users import RecordedUsers, record_user
from functions.triggers import HttpRoute, check_routes, parse_route

log = logging.getLogger("functions.web")

MAX_BIGINT = 2**63 - 1
_STATUS = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}
# A dependency that does not answer is the server's problem, not the client's: 503, retryable.
_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
_recorded = RecordedUsers()
_limiters: weakref.WeakKeyDictionary[Deps, RateLimiter] = weakref.WeakKeyDictionary()
# The rate-limit event of every HTTP function call ("http.user" in CHAT_RATE_LIMITS).
HTTP_EVENT = "http"

# What a route of an HTTP function calls: the request and the process's Deps.
Endpoint = Callable[[Request, Deps], Awaitable[Response]]


def error_response(
    code: ErrorCode, message: str, status: int | None = None, **extra: Any
) -> JSONResponse:
    """The JSON error body every HTTP surface answers with; ``extra`` sits beside ``error``."""
    headers = {}
    retry_ms = extra.get("retry_after_ms")
    if isinstance(retry_ms, int):
        headers["Retry-After"] = str(max(1, math.ceil(retry_ms / 1000)))
    return JSONResponse(
        {"error": {"code": str(code), "message": message}, **extra},
        status_code=status or _STATUS.get(code, 400),
        headers=headers,
    )


def too_large(limit: int) -> ContractError:
    """A ``payload_too_large`` error (413)."""
    return ContractError(
        ErrorCode.PAYLOAD_TOO_LARGE, f"the body is larger than {limit} bytes: send less"
    )


def _declared_length(headers: Any) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit():
        raise bad("Content-Length must be a number of bytes")
    return int(raw)


async def read_body(request: Request, settings: Settings) -> bytes:
    """The request body, refused (413) past ``http_max_body_bytes`` before it is all read."""
    limit = settings.http_max_body_bytes
    declared = _declared_length(request.headers)
    if declared is not None and declared > limit:
        raise too_large(limit)
    # A chunked body has no length to check up front: count while it streams.
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def json_depth(body: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


async def read_json(request: Request, settings: Settings) -> Any:
    """The JSON body (``{}`` when empty): bounded in size and depth, else a 4xx."""
    body = await read_body(request, settings)
    if not body.strip():
        return {}
    # json.loads recurses once per level: a deep enough body would overflow the stack.
    max_depth = settings.http_max_json_depth
    if json_depth(body) > max_depth:
        raise ContractError(
            ErrorCode.INVALID_PAYLOAD, f"the JSON body nests deeper than {max_depth} levels"
        )
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ContractError(ErrorCode.INVALID_PAYLOAD, "the body must be JSON") from None


def bad(message: str) -> ContractError:
    """An ``invalid_parameter`` error (400)."""
    return ContractError(ErrorCode.INVALID_PARAMETER, message)


def int_param(
    request: Request, name: str, low: int, high: int = MAX_BIGINT, default: int | None = None
) -> int | None:
    """The integer query parameter ``name`` in ``low..high``, ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    # int() would also take " 7", "+7" and "7_0"; a parameter is plain digits.
    digits = raw[1:] if raw.startswith("-") else raw
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise bad(f"{name} must be an integer")
    value = int(raw)
    if not low <= value <= high:
        raise bad(f"{name} must be in {low}..{high}")
    return value


# No message predates the epoch; a bound this far from date.min keeps window arithmetic
# (until minus a default span) from overflowing.
MIN_DATE = date(1970, 1, 1)


def date_param(request: Request, name: str, default: date) -> date:
    """The ISO date (YYYY-MM-DD, 1970 on) query parameter ``name``, ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        if len(raw) != 10 or not raw.isascii():
            raise ValueError(raw)
        value = date.fromisoformat(raw)
    except ValueError:
        raise bad(f"{name} must be a date, YYYY-MM-DD") from None
    if value < MIN_DATE:
        raise bad(f"{name} must be {MIN_DATE.isoformat()} or later")
    return value


def room_param(request: Request) -> str:
    """The ``{room}`` path parameter, validated."""
    return check_room(request.path_params["room"])


def readable_room(request: Request, identity: Identity, settings: Settings) -> str:
    """The ``{room}`` path parameter, validated and readable by ``identity`` (private rooms)."""
    room = room_param(request)
    authorize_room(identity, room, settings)
    return room


def _limiter(deps: Deps) -> RateLimiter:
    limiter = _limiters.get(deps)
    if limiter is None:
        limiter = _limiters[deps] = RateLimiter(
            deps.shards, parse_limits(deps.settings.rate_limits)
        )
    return limiter


async def identify(request: Request, deps: Deps) -> Identity:
    """Authenticate and rate-limit the caller; record the user and display name on first sight."""
    identity = authenticate_http(request.headers, deps.settings)
    limiter = _limiter(deps)
    if limiter.limits_for(HTTP_EVENT):
        wait = await limiter.retry_after_ms(HTTP_EVENT, identity.user, "")
        raise_if_limited("HTTP", wait)
    if not _recorded.known(identity):
        pool = await deps.pool()
        async with pool.connection() as conn:
            await record_user(conn, identity)
        _recorded.remember(identity)
    return identity


def endpoint(handler: Endpoint, deps: Deps) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` called with ``deps``: bad input a 4xx, a dependency down a 503, never a 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request, deps)
        except ContractError as exc:
            return error_response(exc.code, exc.message, **exc.extra)
        except psycopg.errors.QueryCanceled:
            log.warning("statement timeout", extra={"path": request.url.path})
            return error_response(
                ErrorCode.UNAVAILABLE, "the query took too long; narrow it or retry later"
            )
        except _UNAVAILABLE as exc:
            log.warning("dependency unavailable: %s", exc, extra={"path": request.url.path})
            return error_response(ErrorCode.UNAVAILABLE, "a dependency is unavailable, retry")

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


async def healthz(_: Request, deps: Deps) -> JSONResponse:
    """200 when PostgreSQL and Redis answer."""
    checks = await deps.check()
    down = {name: state for name, state in checks.items() if state != "ok"}
    if down:
        return error_response(ErrorCode.UNAVAILABLE, f"dependency down: {down}")
    return JSONResponse({"ok": True})


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {
        404: ErrorCode.NOT_FOUND,
        401: ErrorCode.UNAUTHORIZED,
        403: ErrorCode.FORBIDDEN,
    }.get(exc.status_code, ErrorCode.INVALID_PARAMETER)
    return error_response(code, str(exc.detail), exc.status_code)


class BodyLimit:
    """Refuse a declared body over ``http_max_body_bytes`` (413) before any route runs.

    Routes that read a body also count it as it streams (``read_body``): a chunked request
    declares no length.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self.limit
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                declared = _declared_length(headers)
                if declared is not None and declared > limit:
                    raise too_large(limit)
            except ContractError as exc:
                await error_response(exc.code, exc.message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def json_app(routes: Sequence[tuple[str, Endpoint]], deps: Deps) -> ASGIApp:
    """An ASGI app serving ``("METHOD /path", endpoint)`` routes with ``deps``, and /healthz."""
    check_routes([*(route for route, _ in routes), "GET /healthz"])
    served = [(*parse_route(route), fn) for route, fn in routes]
    return BodyLimit(
        Starlette(
            routes=[
                *(Route(path, endpoint(fn, deps), methods=[method]) for method, path, fn in served),
                Route("/healthz", endpoint(healthz, deps), methods=["GET"]),
            ],
            exception_handlers={HTTPException: _http_error},
        ),
        deps.settings.http_max_body_bytes,
    )


def endpoints(fn: Function) -> list[tuple[str, Endpoint]]:
    """Each route of the HTTP function ``fn`` with its endpoint; a route without one is an error."""
    if not isinstance(fn.trigger, HttpRoute):
        raise ValueError(f"function {fn.name} has no HTTP routes")
    module = fn.load()
    found: list[tuple[str, Endpoint]] = []
    for route in fn.trigger.routes:
        handler = getattr(module, route.endpoint, None)
        if not inspect.iscoroutinefunction(handler) or list(
            inspect.signature(handler).parameters
        ) != ["request", "deps"]:
            raise ValueError(
                f"function {fn.name}: route {route.route!r} is not served: {fn.handler} needs "
                f"'async def {route.endpoint}(request, deps)'"
            )
        found.append((route.route, handler))
    return found


def function_app(fn: Function, deps: Deps) -> ASGIApp:
    """The ASGI app of the HTTP function ``fn``: its registry routes and /healthz, with ``deps``."""
    return json_app(endpoints(fn), deps)


def as_json(value: Any) -> Any:
    """Dates as ISO strings, for JSON bodies."""
    return value.isoformat() if isinstance(value, date) else value
