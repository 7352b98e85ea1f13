"""One more gateway node of the test stack, with settings of its own."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devstack import Stack


class GatewayNode:
    """One more gateway node of the stack, with settings of its own, that a test stops and
    starts again on the same port (its pages reconnect to it as to any restarted node)."""

    def __init__(self, stack: Stack, settings: dict[str, str], log: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        base = stack.env()
        origins = f"{base['CHAT_CORS_ORIGINS']},{self.url},http://localhost:{self.port}"
        self.env = {
            **os.environ,
            **base,
            **settings,
            "CHAT_CORS_ORIGINS": origins,
            "CHAT_NODE_ID": f"page-node-{self.port}",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "realtime", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the extra gateway did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
