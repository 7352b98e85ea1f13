"""One ASGI app per host: every HTTP function's routes, /healthz, /openapi.json and /metrics."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from functions.deps import Deps
from functions.openapi import build_spec
from functions.registry import Function
from functions.triggers import HttpRoute, check_routes
from functions.web import function_app

# A dependency that does not answer within this bound makes the host unhealthy.
_HEALTH_TIMEOUT_S = 2.0
# The host's own routes, beside the functions'.
HOST_ROUTES = ("GET /healthz", "GET /openapi.json", "GET /metrics")


def build_app(functions: Sequence[Function], deps: Deps) -> Starlette:
    """The host's HTTP surface; each declared route is handed to its function's ASGI app."""
    served = [(fn, fn.trigger) for fn in functions if isinstance(fn.trigger, HttpRoute)]
    # Starlette serves a route declared twice by whichever comes first: refuse it instead.
    check_routes([*(r.route for _, t in served for r in t.routes), *HOST_ROUTES])
    routes: list[BaseRoute] = []
    for fn, trigger in served:
        fn_app = function_app(fn, deps)
        for method, path in trigger.parsed():
            # The function's own app routes the unchanged path again, so it also runs alone
            # (uvicorn locally, Mangum on Lambda) with exactly these routes.
            routes.append(Route(path, endpoint=fn_app, methods=[method]))

    async def healthz(_: Request) -> JSONResponse:
        checks = await deps.check(_HEALTH_TIMEOUT_S)
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", "checks": checks},
            status_code=200 if healthy else 503,
        )

    spec = build_spec(functions)

    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(spec)

    routes.append(Route("/healthz", healthz, methods=["GET"]))
    routes.append(Route("/openapi.json", openapi, methods=["GET"]))
    routes.append(Mount("/metrics", app=make_asgi_app()))
    return Starlette(routes=routes)
