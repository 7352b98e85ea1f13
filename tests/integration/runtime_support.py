"""Helpers for the runtime tests: function hosts as child processes, Kafka topics, free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from devstack import Stack

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


class Hosts:
    """The function hosts one test starts (the ``hosts`` fixture); ``close`` stops them all."""

    def __init__(self, stack: Stack, test_id: str, logs: Path) -> None:
        self._stack = stack
        self._test_id = test_id
        self._logs = logs
        self.started: list[HostProcess] = []

    def start(
        self, name: str, only: list[str], *, grace_s: float = 10.0, wait: bool = True
    ) -> HostProcess:
        """Start a host running ``only`` those functions; healthy on return unless not ``wait``."""
        host = HostProcess(self._stack, self._test_id, name, only, self._logs, grace_s)
        self.started.append(host)
        if wait:
            host.wait_healthy()
        return host

    def close(self) -> None:
        """Make sure every host started is gone (test teardown)."""
        for host in self.started:
            host.close()


def create_topics(stack: Stack, partitions: Mapping[str, int]) -> None:
    """Create the Kafka topics (name: partition count) that do not exist yet."""
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(name, num_partitions=count, replication_factor=1)
        for name, count in partitions.items()
        if name not in existing
    ]
    if not wanted:
        return
    for future in admin.create_topics(wanted).values():
        future.result(timeout=30)
