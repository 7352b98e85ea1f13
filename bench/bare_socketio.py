"""A bare python-socketio server on uvicorn, served exactly like a gateway node.

The idle-connection bench measures it beside a gateway: what a socket costs in the Socket.IO
stack itself, with none of the chat's own state (presence, rooms, rate limits).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chat.settings import Settings
from realtime.__main__ import raise_fd_limit, server_options


def build_app() -> Any:
    """Socket.IO with no handlers but a connection count, and /healthz reporting it."""
    sio = socketio.AsyncServer(async_mode="asgi", logger=False, engineio_logger=False)
    connected: set[str] = set()

    @sio.on("connect")  # type: ignore[untyped-decorator]
    async def connect(sid: str, *_: Any) -> None:
        connected.add(sid)

    @sio.on("disconnect")  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, *_: Any) -> None:
        connected.discard(sid)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "connections": len(connected)})

    http = Starlette(routes=[Route("/healthz", healthz)])
    return socketio.ASGIApp(sio, other_asgi_app=http)


def main(argv: list[str] | None = None) -> int:
    """Serve on loopback with a gateway node's uvicorn options."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_socketio", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    raise_fd_limit()
    uvicorn.run(
        build_app(),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        **server_options(Settings().max_payload_bytes),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
