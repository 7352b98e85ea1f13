"""Where a gateway answers /metrics: on its public port only when no port of its own is set."""

from __future__ import annotations

import httpx

from chat.settings import Settings
from realtime.app import build_app


async def _status(settings: Settings, path: str) -> int:
    # No lifespan: nothing connects to Redis; only the routing is asked.
    transport = httpx.ASGITransport(app=build_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
        return (await client.get(path)).status_code


async def test_metrics_leave_the_public_port_once_they_have_their_own() -> None:
    base = Settings(dev_auth=True, redis_url="redis://127.0.0.1:1/0")
    assert await _status(base, "/metrics/") == 200
    own = Settings(dev_auth=True, redis_url="redis://127.0.0.1:1/0", metrics_port=9100)
    assert await _status(own, "/metrics/") == 404
    assert await _status(own, "/%6detrics/") == 404
