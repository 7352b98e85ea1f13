"""Smoke test of a deployed entry point: two users join a room, chat, and read its history.

    python -m infra.smoke http://chat-prod-gateway-123.eu-west-1.elb.amazonaws.com

With ``CHAT_JWT_SECRET`` set, the users sign in with tokens signed by it (a production stack);
without it, with dev auth (the local stack, compose). Exits 0 when every step passed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import jwt
import socketio

from chat.settings import env_name

DEADLINE_S = 30.0


class SmokeFailure(RuntimeError):
    """A step of the smoke test did not do what it should."""


def _credentials(user: str, secret: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """Socket.IO auth and HTTP headers for ``user``."""
    if secret:
        token = jwt.encode({"sub": user, "exp": int(time.time()) + 600}, secret, algorithm="HS256")
        return {"token": token}, {"Authorization": f"Bearer {token}"}
    return {"user": user}, {"X-User": user}


class User:
    """One user's socket, recording the messages it receives."""

    def __init__(self, name: str, secret: str | None) -> None:
        self.name = name
        self.auth, self.headers = _credentials(name, secret)
        self.sio = socketio.AsyncClient(reconnection=False)
        self.messages: list[dict[str, Any]] = []
        self.sio.on("message", self.messages.append)

    async def ack(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = await self.sio.call(event, payload, timeout=DEADLINE_S)
        if not reply.get("ok"):
            raise SmokeFailure(f"{self.name}: {event} refused: {reply.get('error')}")
        return reply


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise SmokeFailure(f"no {what} within {DEADLINE_S:.0f}s")
        await asyncio.sleep(0.1)


def _has(messages: list[dict[str, Any]], texts: Iterable[str]) -> bool:
    return {m["text"] for m in messages} >= set(texts)


def _say(step: str) -> None:
    print(f"smoke: {step}", flush=True)


async def smoke(url: str, secret: str | None) -> None:
    """Run every step against ``url``; raise SmokeFailure at the first that fails."""
    url = url.rstrip("/")
    room = f"smoke-{uuid.uuid4().hex[:12]}"
    tag = uuid.uuid4().hex[:6]
    alice, bob = User(f"smoke-alice-{tag}", secret), User(f"smoke-bob-{tag}", secret)
    try:
        for user in (alice, bob):
            try:
                await user.sio.connect(
                    url, auth=user.auth, transports=["websocket"], wait_timeout=DEADLINE_S
                )
            except socketio.exceptions.ConnectionError as exc:
                raise SmokeFailure(f"{user.name} could not connect to {url}: {exc}") from None
            await user.ack("join", {"room": room})
        _say(f"both users joined {room} through {url}")
        texts = {alice: f"hello from alice {tag}", bob: f"hello from bob {tag}"}
        for sender, text in texts.items():
            await sender.ack(
                "send", {"room": room, "text": text, "client_msg_id": uuid.uuid4().hex}
            )
        for receiver in (alice, bob):
            await _until(
                lambda r=receiver: _has(r.messages, texts.values()),  # type: ignore[misc]
                f"delivery of both messages to {receiver.name}",
            )
        _say("each user received the other's message (and their own)")
        async with httpx.AsyncClient(timeout=10) as http:
            history: list[dict[str, Any]] = []

            async def read() -> None:
                response = await http.get(
                    f"{url}/rooms/{room}/messages", params={"limit": 10}, headers=alice.headers
                )
                if response.status_code != 200:
                    raise SmokeFailure(f"history answered {response.status_code}: {response.text}")
                history[:] = response.json()["messages"]

            deadline = time.monotonic() + DEADLINE_S
            while not _has(history, texts.values()):
                if time.monotonic() > deadline:
                    raise SmokeFailure(f"history lacks the messages after {DEADLINE_S:.0f}s")
                await read()
                await asyncio.sleep(0.5)
        seqs = [m["seq"] for m in history]
        if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
            raise SmokeFailure(f"history out of order: seqs {seqs}")
        _say(f"history holds both messages in order (seqs {seqs})")
    finally:
        for user in (alice, bob):
            await user.sio.disconnect()


def main(argv: list[str] | None = None) -> int:
    """Command line: smoke-test one entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url", help="the entry point, e.g. the stack's entry_url output")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("give the entry point: make smoke URL=http://...")
    began = time.monotonic()
    try:
        asyncio.run(smoke(args.url, os.environ.get(env_name("jwt_secret")) or None))
    except SmokeFailure as exc:
        print(f"smoke: FAILED: {exc}", file=sys.stderr)
        return 1
    _say(f"passed in {time.monotonic() - began:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
