"""Helpers for the runtime tests: function hosts as child processes, free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from chat.settings import Settings
from devstack import Stack
from functions.deps import Deps

REPO = Path(__file__).resolve().parents[2]
REGISTRY = "tests.integration.runtime_handlers:FUNCTIONS"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HostProcess:
    """One ``python -m functions host`` child over the test registry, in its own process group."""

    def __init__(
        self,
        stack: Stack,
        test_id: str,
        name: str,
        only: list[str],
        logs: Path,
        grace_s: float = 10.0,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = logs / f"{name}.log"
        env = {
            **os.environ,
            **stack.env(),
            "CHAT_NODE_ID": name,
            "RUNTIME_TEST_ID": test_id,
            "PYTHONUNBUFFERED": "1",
        }
        argv = [
            sys.executable,
            "-m",
            "functions",
            "--registry",
            REGISTRY,
            "host",
            "--port",
            str(self.port),
            "--only",
            ",".join(only),
            "--grace",
            str(grace_s),
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Block until /healthz answers 200 (fail with the log tail otherwise)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early:\n{self.tail()}")
            try:
                url = f"http://127.0.0.1:{self.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not healthy in {timeout_s}s:\n{self.tail()}")

    def kill(self) -> None:
        """A crash: SIGKILL to the whole process group, then reap."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float) -> float:
        """SIGTERM; return how long the host took to exit (fails past ``timeout_s``)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self.name} outlived SIGTERM by {timeout_s}s:\n{self.tail()}"
            ) from None
        return time.monotonic() - started

    def close(self) -> None:
        """Make sure the child is gone (test teardown)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        """The end of the host's log."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def stack_deps(stack: Stack) -> Deps:
    """Clients of the session stack for the test process itself."""
    return Deps(Settings.from_env(stack.env(), environment="test"))
