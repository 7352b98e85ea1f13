"""A bare python-socketio server on uvicorn, served exactly like a gateway node.

Without ``--redis-url`` it is one handler-less server: the idle-connection bench measures it beside
a gateway, to show what a socket costs in the Socket.IO stack itself, with none of the chat's own
state (presence, rooms, rate limits).

With ``--redis-url`` it is one node of the fast-path bench's bare pair: an ``AsyncRedisManager``
shares rooms across nodes, ``join`` enters a room and acks, ``send`` emits ``message`` to the room
and acks. ``bare_pair()`` starts two such nodes and their private Redis on free loopback ports.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from chat.settings import Settings
from devstack.ports import Ports
from realtime.__main__ import raise_fd_limit, server_options


def build_app(redis_url: str | None = None) -> Any:
    """Socket.IO with a connection count, /healthz reporting it, and join/send with acks."""
    settings = Settings()
    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(redis_url) if redis_url else None,
        cors_allowed_origins="*",
        max_http_buffer_size=settings.max_payload_bytes,
        # The gateway's Engine.IO timings.
        ping_interval=20,
        ping_timeout=20,
        logger=False,
        engineio_logger=False,
    )
    users: dict[str, str] = {}

    @sio.on("connect")  # type: ignore[untyped-decorator]
    async def connect(sid: str, _environ: Any, auth: Any = None) -> None:
        users[sid] = str(auth.get("user", sid)) if isinstance(auth, dict) else sid

    @sio.on("disconnect")  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, *_: Any) -> None:
        users.pop(sid, None)

    @sio.on("join")  # type: ignore[untyped-decorator]
    async def join(sid: str, data: Any) -> dict[str, Any]:
        room = str(data["room"])
        await sio.enter_room(sid, room)
        return {"ok": True, "room": room}

    @sio.on("send")  # type: ignore[untyped-decorator]
    async def send(sid: str, data: Any) -> dict[str, Any]:
        room, client_msg_id = str(data["room"]), str(data["client_msg_id"])
        message = {
            "room": room,
            "sender": users.get(sid, sid),
            "text": str(data["text"]),
            "client_msg_id": client_msg_id,
        }
        await sio.emit("message", message, room=room)
        return {"ok": True, "id": client_msg_id}

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "connections": len(users)})

    http = Starlette(routes=[Route("/healthz", healthz)])
    return socketio.ASGIApp(sio, other_asgi_app=http)


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=2).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start; run it alone to see why") from None
            time.sleep(0.2)


def _wait_redis(port: int, proc: subprocess.Popen[bytes]) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(
                        "the bare pair's redis-server did not start: run scripts/bootstrap.sh"
                    ) from None
                time.sleep(0.1)
    finally:
        client.close()


@contextlib.contextmanager
def bare_pair(nodes: int = 2) -> Iterator[tuple[list[str], dict[str, int]]]:
    """``nodes`` bare servers sharing a private redis-server: (base URLs, pids by name)."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise SystemExit("redis-server not found: run scripts/bootstrap.sh")
    ports = Ports.free()
    data = tempfile.mkdtemp(prefix="chat-bench-bare-")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["redis"] = subprocess.Popen(
            [redis_server, "--bind", "127.0.0.1", "--port", str(ports.redis), "--dir", data,
             "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_redis(ports.redis, procs["redis"])
        redis_url = f"redis://127.0.0.1:{ports.redis}/0"
        urls = []
        for i in range(1, nodes + 1):
            port = ports.gateway(i)
            argv = [sys.executable, "-m", "bench.bare_socketio", "--port", str(port)]
            procs[f"bare-{i}"] = subprocess.Popen(
                [*argv, "--redis-url", redis_url],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            urls.append(f"http://127.0.0.1:{port}")
        for i, url in enumerate(urls, 1):
            _wait_http(f"{url}/healthz", procs[f"bare-{i}"], f"bare node {i}")
        yield urls, {name: proc.pid for name, proc in procs.items()}
    finally:
        for proc in reversed(procs.values()):
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(data, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Serve on loopback with a gateway node's uvicorn options."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare_socketio", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", help="share rooms with other nodes over this Redis")
    args = parser.parse_args(argv)
    raise_fd_limit()
    uvicorn.run(
        build_app(args.redis_url),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        **server_options(Settings().max_payload_bytes),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
