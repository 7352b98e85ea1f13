"""The gateway's composition root: settings, the Redis client, the parts of the gateway built on
it (shards, rate limits, intake, presence, fan-out, the Socket.IO server) and the HTTP routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
import socketio
from prometheus_client import make_asgi_app, start_http_server
from redis.asyncio.cluster import RedisCluster
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from chat.clients import redis_client
from chat.ratelimit import RateLimiter, parse_limits
from chat.settings import Settings
from chat.shards import RedisClient, Shards
from realtime.fanout import PacketWriter, RoomFanout
from realtime.gateway import Gateway
from realtime.intake import SendIntake
from realtime.outcomes import Outcomes
from realtime.presence import Presence
from realtime.server import socket_server
from realtime.web import web_routes

_HEALTH_TIMEOUT_S = 2.0
# Every event takes a Redis round trip or two: under a burst, events wait for a connection
# (up to the timeout) instead of failing when the pool is exhausted, and Redis sees at most
# this many connections per node.
_REDIS_CONNECTIONS = 64
_REDIS_WAIT_S = 5.0


def _pooled(client: RedisClient) -> RedisClient:
    """The same client settings over a pool that waits for a free connection (a cluster
    client keeps its own bounded pool per node)."""
    if isinstance(client, RedisCluster):
        return client
    base = client.connection_pool
    pool = aioredis.BlockingConnectionPool(
        max_connections=_REDIS_CONNECTIONS,
        timeout=_REDIS_WAIT_S,
        connection_class=base.connection_class,
        **base.connection_kwargs,
    )
    return aioredis.Redis(connection_pool=pool)


def build_gateway(settings: Settings, redis: RedisClient) -> Gateway:
    """The node's gateway and all it works with, over one Redis client."""
    shards = Shards(settings, redis)
    limiter = RateLimiter(shards, parse_limits(settings.rate_limits))
    sio = socket_server(settings)
    fanout = RoomFanout(shards, PacketWriter(sio, settings.max_outbound_packets))
    # Op frames of a room's channel answer the sends and ops waiting for their outcome here.
    outcomes = Outcomes()
    fanout.on_op = outcomes.deliver
    return Gateway(
        settings,
        sio=sio,
        shards=shards,
        intake=SendIntake(limiter, shards, settings),
        presence=Presence(shards, settings.node_id, settings.presence_ttl_s),
        fanout=fanout,
        outcomes=outcomes,
    )


def build_app(settings: Settings | None = None) -> Any:
    """The node's ASGI app: Socket.IO at /socket.io/, plus /healthz and /metrics."""
    settings = settings or Settings.from_env()
    settings.require_auth()
    redis = _pooled(redis_client(settings))
    gateway = build_gateway(settings, redis)

    async def healthz(_: Request) -> JSONResponse:
        try:
            await asyncio.wait_for(redis.ping(), timeout=_HEALTH_TIMEOUT_S)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"[:200]
            return JSONResponse(
                {"status": "unavailable", "node": settings.node_id, "checks": {"redis": detail}},
                status_code=503,
            )
        return JSONResponse(
            {
                "status": "ok",
                "node": settings.node_id,
                "connections": len(gateway.conns),
                "rooms": len(gateway.rooms),
                "checks": {"redis": "ok"},
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if settings.metrics_port:
            # Its own port, beside the public one: scrapers reach it, the load balancer never.
            start_http_server(settings.metrics_port, addr=settings.metrics_host)
        gateway.start()
        try:
            yield
        finally:
            try:
                await gateway.stop()
            finally:
                await redis.aclose()

    http = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            *([] if settings.metrics_port else [Mount("/metrics", app=make_asgi_app())]),
            *web_routes(settings),
        ],
        lifespan=lifespan,
    )
    app = socketio.ASGIApp(gateway.sio, other_asgi_app=http, socketio_path="socket.io")
    app.gateway = gateway
    return app
