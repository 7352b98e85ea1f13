"""What every HTTP function shares: JSON errors, parameter parsing, auth, health, the app."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
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

from chat.auth import Identity, authenticate_http, authorize_room
from chat.contract import ROOM_RE, ContractError, ErrorCode
from chat.users import RecordedUsers, record_user
from functions import deps as deps_module

log = logging.getLogger("functions.web")

MAX_BIGINT = 2**63 - 1
_STATUS = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
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

Endpoint = Callable[[Request], Awaitable[Response]]


def error_response(code: ErrorCode, message: str, status: int | None = None) -> JSONResponse:
    """The JSON error body every HTTP surface answers with."""
    return JSONResponse(
        {"error": {"code": str(code), "message": message}},
        status_code=status or _STATUS.get(code, 400),
    )


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


def date_param(request: Request, name: str, default: date) -> date:
    """The ISO date (YYYY-MM-DD) query parameter ``name``, ``default`` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        if len(raw) != 10:
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise bad(f"{name} must be a date, YYYY-MM-DD") from None


def room_param(request: Request) -> str:
    """The ``{room}`` path parameter, validated."""
    room: str = request.path_params["room"]
    if not ROOM_RE.match(room):
        raise ContractError(ErrorCode.INVALID_ROOM, "room must match " + ROOM_RE.pattern)
    return room


def readable_room(request: Request, identity: Identity) -> str:
    """The ``{room}`` path parameter, validated and readable by ``identity`` (private rooms)."""
    room = room_param(request)
    authorize_room(identity, room, deps_module.current().settings)
    return room


async def identify(request: Request) -> Identity:
    """Authenticate the request; record the user and their display name on first sight."""
    deps = deps_module.current()
    identity = authenticate_http(request.headers, deps.settings)
    if not _recorded.known(identity):
        pool = await deps.pool()
        async with pool.connection() as conn:
            await record_user(conn, identity)
        _recorded.remember(identity)
    return identity


def endpoint(handler: Endpoint) -> Endpoint:
    """Turn bad input into 4xx and unreachable dependencies into 503, never a 500."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except ContractError as exc:
            return error_response(exc.code, exc.message)
        except _UNAVAILABLE as exc:
            log.warning("dependency unavailable: %s", exc, extra={"path": request.url.path})
            return error_response(ErrorCode.UNAVAILABLE, "a dependency is unavailable, retry")

    guarded.__name__ = handler.__name__
    guarded.__doc__ = handler.__doc__
    return guarded


async def healthz(_: Request) -> JSONResponse:
    """200 when PostgreSQL and Redis answer."""
    checks = await deps_module.current().check()
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


def json_app(routes: list[tuple[str, Endpoint, list[str]]]) -> Starlette:
    """An ASGI app serving ``(path, endpoint, methods)`` routes and ``GET /healthz``."""
    return Starlette(
        routes=[
            *(Route(path, endpoint(fn), methods=methods) for path, fn, methods in routes),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
    )


def as_json(value: Any) -> Any:
    """Dates as ISO strings, for JSON bodies."""
    return value.isoformat() if isinstance(value, date) else value
