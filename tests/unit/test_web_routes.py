"""The chat page's routes: page headers, config, the vendored client and the history proxy."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from chat.settings import Settings
from realtime.web import web_routes

HISTORY = "http://history.internal:9000"


async def get(
    path: str,
    *,
    upstream: httpx.MockTransport | None = None,
    node_modules: Path | None = None,
    history_url: str = HISTORY,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """GET ``path`` from the page's routes alone, the history function played by ``upstream``."""
    settings = Settings(dev_auth=True, history_url=history_url)
    extra = {} if node_modules is None else {"node_modules": node_modules}
    app = Starlette(routes=web_routes(settings, transport=upstream, **extra))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.get(path, headers=headers)


async def test_page_is_served_with_a_strict_content_security_policy() -> None:
    response = await get("/")
    assert response.status_code == 200
    assert 'id="timeline"' in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/static/index.html"])
async def test_every_html_path_carries_the_policy_and_refuses_framing(path: str) -> None:
    response = await get(path)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    policy = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_assets_are_never_sniffed_as_another_type() -> None:
    response = await get("/static/app.js")
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_config_tells_the_page_whether_dev_names_are_accepted() -> None:
    response = await get("/config.json")
    assert response.json() == {"dev_auth": True}


async def test_static_assets_and_vendored_client(tmp_path: Path) -> None:
    dist = tmp_path / "socket.io-client" / "dist"
    dist.mkdir(parents=True)
    (dist / "socket.io.min.js").write_text("/* client */")
    assert (await get("/static/app.js", node_modules=tmp_path)).status_code == 200
    assert (await get("/vendor/socket.io.min.js", node_modules=tmp_path)).text == "/* client */"
    # Only the listed files: the rest of node_modules stays private.
    assert (await get("/vendor/package.json", node_modules=tmp_path)).status_code == 404


async def test_missing_vendored_client_says_how_to_install_it(tmp_path: Path) -> None:
    response = await get("/vendor/socket.io.min.js", node_modules=tmp_path)
    assert response.status_code == 404
    assert "bootstrap" in response.json()["error"]["message"]


async def test_history_is_forwarded_with_credentials_and_query() -> None:
    seen: list[httpx.Request] = []

    def history(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"room": "lobby", "messages": [], "next_before_seq": None})

    response = await get(
        "/rooms/lobby/messages?limit=5&before_seq=9",
        upstream=httpx.MockTransport(history),
        headers={"X-User": "ann", "Cookie": "secret=1"},
    )
    assert response.status_code == 200
    assert response.json()["room"] == "lobby"
    (request,) = seen
    assert str(request.url) == f"{HISTORY}/rooms/lobby/messages?limit=5&before_seq=9"
    assert request.headers["x-user"] == "ann"
    assert "cookie" not in request.headers


async def test_history_errors_pass_through_unchanged() -> None:
    def history(_: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}})

    response = await get("/rooms/lobby/messages", upstream=httpx.MockTransport(history))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("history_url", "path", "status", "code"),
    [
        (HISTORY, "/rooms/bad%20room/messages", 400, "invalid_room"),
        ("", "/rooms/lobby/messages", 503, "unavailable"),
        (HISTORY, "/rooms/lobby/messages", 503, "unavailable"),
    ],
)
async def test_history_refusals(history_url: str, path: str, status: int, code: str) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    response = await get(path, upstream=httpx.MockTransport(down), history_url=history_url)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "path",
    ["/rooms/lobby/events?after_seq=7&limit=3", "/me/rooms", "/rooms/lobby/messages?thread=abc"],
)
async def test_event_log_threads_and_my_rooms_are_forwarded(path: str) -> None:
    seen: list[httpx.Request] = []

    def history(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": "upstream"})

    response = await get(path, upstream=httpx.MockTransport(history), headers={"X-User": "ann"})
    assert response.status_code == 200 and response.json() == {"ok": "upstream"}
    (request,) = seen
    assert str(request.url) == HISTORY + path
    assert request.headers["x-user"] == "ann"


async def test_event_log_of_a_bad_room_is_refused_at_the_edge() -> None:
    def never(_: httpx.Request) -> httpx.Response:
        raise AssertionError("forwarded")

    response = await get("/rooms/bad%20room/events", upstream=httpx.MockTransport(never))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_room"
