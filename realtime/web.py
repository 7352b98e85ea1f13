"""The browser chat page: the page, its assets, the Socket.IO client, its config and history."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

import httpx
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from chat.contract import ROOM_RE, ROOM_RULE, ErrorCode
from chat.settings import Settings

log = logging.getLogger("realtime.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# `npm ci` at the repository root installs the pinned Socket.IO client here.
NODE_MODULES = Path(__file__).resolve().parent.parent / "node_modules"
_VENDOR_FILES = {
    "socket.io.min.js": "socket.io-client/dist/socket.io.min.js",
    "socket.io.min.js.map": "socket.io-client/dist/socket.io.min.js.map",
}
# Only these request headers reach the history function: the caller's credentials.
_FORWARDED_HEADERS = ("authorization", "x-user")
_HISTORY_TIMEOUT = httpx.Timeout(10.0, connect=3.0)
# Defence in depth: even text that slipped into markup could run no script and load nothing.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class _PageFiles(StaticFiles):
    """Static files; an HTML one (``/static/index.html`` is the page too) gets the page's CSP."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        if response.media_type == "text/html" or str(full_path).endswith((".html", ".htm")):
            response.headers.update(_PAGE_HEADERS)
        else:
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _error(code: ErrorCode, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"code": str(code), "message": message}}, status_code=status)


def web_routes(
    settings: Settings,
    *,
    static_dir: Path = STATIC_DIR,
    node_modules: Path = NODE_MODULES,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[BaseRoute]:
    """Routes of the chat page: /, /static/*, /vendor/*, /config.json and the history proxies
    (a room's messages and events, the caller's rooms)."""
    vendor = {name: node_modules / rel for name, rel in _VENDOR_FILES.items()}
    if not vendor["socket.io.min.js"].is_file():
        log.warning(
            "the Socket.IO browser client is missing: run scripts/bootstrap.sh (npm ci)",
            extra={"path": str(vendor["socket.io.min.js"])},
        )
    history_url = settings.history_url.rstrip("/")
    # One pooled client per app; its sockets go with the process, so nothing needs closing.
    client = httpx.AsyncClient(timeout=_HISTORY_TIMEOUT, transport=transport, trust_env=False)

    async def page(_: Request) -> Response:
        return FileResponse(static_dir / "index.html", headers=_PAGE_HEADERS)

    async def vendor_file(request: Request) -> Response:
        path = vendor.get(request.path_params["name"])
        if path is None or not path.is_file():
            return _error(ErrorCode.NOT_FOUND, "no such file; run scripts/bootstrap.sh", 404)
        return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    async def config(_: Request) -> JSONResponse:
        return JSONResponse(
            {"dev_auth": settings.dev_auth},
            headers={"Cache-Control": "no-store"},
        )

    async def forward(request: Request, path: str, what: str) -> Response:
        # Same-origin proxy to the history function: the page needs no CORS, and an ALB that
        # routes these paths straight to the function in production serves the same page.
        if not history_url:
            return _error(ErrorCode.UNAVAILABLE, "no history URL configured", 503)
        headers = {h: v for h in _FORWARDED_HEADERS if (v := request.headers.get(h)) is not None}
        if request.client is not None:
            headers["x-forwarded-for"] = request.client.host
        try:
            upstream = await client.get(
                f"{history_url}{path}", params=request.url.query, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("history request failed", extra={"path": path, "error": repr(exc)})
            return _error(ErrorCode.UNAVAILABLE, f"{what} is unavailable; retry", 503)
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "application/json"),
            headers={"Cache-Control": "no-store"},
        )

    def room_route(tail: str, what: str) -> Route:
        async def handler(request: Request) -> Response:
            room = request.path_params["room"]
            if ROOM_RE.fullmatch(room) is None:
                return _error(ErrorCode.INVALID_ROOM, ROOM_RULE, 400)
            return await forward(request, f"/rooms/{quote(room, safe='')}/{tail}", what)

        return Route(f"/rooms/{{room}}/{tail}", handler, methods=["GET"])

    async def my_rooms(request: Request) -> Response:
        return await forward(request, "/me/rooms", "the room list")

    return [
        Route("/", page, methods=["GET"]),
        Route("/config.json", config, methods=["GET"]),
        Route("/vendor/{name}", vendor_file, methods=["GET"]),
        room_route("messages", "history"),
        room_route("events", "the event log"),
        Route("/me/rooms", my_rooms, methods=["GET"]),
        Mount("/static", app=_PageFiles(directory=static_dir), name="static"),
    ]
