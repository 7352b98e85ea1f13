"""The processes of one state dir: a record of each, started in a session, probed, stopped."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

from devstack.components import HOST, REPO, Component, StackError, kind_of
from devstack.ports import port_free
from devstack.process import (
    Record,
    alive,
    group_members,
    signal_group,
    spawn,
    start_time,
    terminate,
    wait_gone,
)
from devstack.services.base import Service, Site


class Supervisor:
    """Runs components as processes that outlive it; another process may drive the same ones.

    A component runs when its record (``run/<name>.json``) names a live pid of the recorded
    start time. ``cancel`` set: a start in progress spawns nothing more and stops waiting.
    """

    def __init__(self, site: Site, cancel: threading.Event) -> None:
        self.site = site
        self._cancel = cancel
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock_depth = 0
        self._thread_lock = threading.RLock()

    def record(self, name: str) -> Record | None:
        """What the record of ``name`` says, None when there is none."""
        return Record.load(self._record_path(name))

    def recorded(self) -> list[str]:
        """The components with a record, running or not."""
        run_dir = self.site.state_dir / "run"
        if not run_dir.is_dir():
            return []
        names = []
        for path in run_dir.glob("*.json"):
            try:
                kind_of(path.stem)
            except ValueError:
                continue
            names.append(path.stem)
        return names

    def running(self, name: str) -> Record | None:
        """The record of ``name`` when it runs, else None."""
        record = self.record(name)
        if record is None:
            return None
        child = self._children.get(name)
        if child is not None:
            child.poll()  # reaps it if it died, so it does not linger as a zombie
        return record if alive(record.pid, record.started) else None

    def bring_up(self, service: Service, component: Component, env: Mapping[str, str]) -> bool:
        """Start ``component`` unless it runs; wait until it answers. True when it was started."""
        name = component.name
        record = self.record(name)
        if record is not None and alive(record.pid, record.started):
            # Running already: leave it alone, but it must answer like a fresh one.
            self._await_healthy(service, component, record)
            service.after_ready(component)
            return False
        if record is not None:
            self.clear_leftovers(record)
        for port in service.listens(component):
            if not port_free(port):
                raise StackError(
                    f"{name}: port {HOST}:{port} is taken by another program. Stop that "
                    f"program, or pick another block of ports with DEVSTACK_PORT_BASE=<port>."
                )
        launch = service.prepare(component)
        if self._cancel.is_set():
            raise StackError(f"{name}: start cancelled")
        log = self.site.log_path(name)
        child = spawn(launch.argv, log=log, env=env, cwd=REPO, user=launch.user)
        self._children[name] = child
        record = Record(
            name=name,
            pid=child.pid,
            started=_started(child.pid),
            port=component.port,
            argv=tuple(launch.argv),
        )
        record_path = self._record_path(name)
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record.save(record_path)
        self.site.say(f"{name}: starting on {HOST}:{component.port} (pid {child.pid})")
        self._await_healthy(service, component, record)
        service.after_ready(component)
        self.site.say(f"{name}: ready")
        return True

    def stop(self, service: Service, component: Component) -> None:
        """Ask it to stop as its service says, SIGKILL after the grace; forget its record."""
        name = component.name
        record = self.record(name)
        if record is None:
            return
        was_running = alive(record.pid, record.started)
        clean = terminate(
            record.pid,
            record.started,
            first=service.stop_signal,
            grace=service.stop_grace_s,
            child=self._children.pop(name, None),
        )
        self._record_path(name).unlink(missing_ok=True)
        if was_running:
            service.after_stop(component, clean)
            self.site.say(f"{name}: stopped")

    def kill(self, records: list[Record], sig: int) -> None:
        """Send ``sig`` to the records' process groups; SIGKILL waits until they are gone."""
        for record in records:
            signal_group(record.pid, sig)
        if sig == signal.SIGKILL:
            for record in records:
                wait_gone(record.pid, record.started, 10.0, self._children.get(record.name))
                self.clear_leftovers(record)

    def clear_leftovers(self, record: Record) -> None:
        """A dead component may leave processes behind (PostgreSQL backends); end them."""
        deadline = time.monotonic() + 5.0
        while group_members(record.pid) and time.monotonic() < deadline:
            signal_group(record.pid, signal.SIGKILL)
            time.sleep(0.05)
        child = self._children.pop(record.name, None)
        if child is not None:
            with suppress(subprocess.TimeoutExpired):
                child.wait(timeout=5)
        self._record_path(record.name).unlink(missing_ok=True)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One start/stop at a time per state dir, across processes (a file lock) and threads."""
        with self._thread_lock:
            if self._lock_depth:
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            self.site.state_dir.mkdir(parents=True, exist_ok=True)
            with (self.site.state_dir / ".lock").open("w") as handle:
                deadline = time.monotonic() + 600
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            raise StackError(
                                f"another devstack command holds {handle.name}"
                            ) from None
                        time.sleep(0.2)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _record_path(self, name: str) -> Path:
        return self.site.state_dir / "run" / f"{name}.json"

    def _await_healthy(self, service: Service, component: Component, record: Record) -> None:
        probe: Callable[[], bool] = service.probe(component)
        timeout = service.start_timeout_s
        deadline = time.monotonic() + timeout
        child = self._children.get(component.name)
        while not probe():
            if self._cancel.is_set():
                raise StackError(f"{component.name}: start cancelled")
            if child is not None:
                child.poll()
            if not alive(record.pid, record.started):
                code = (
                    f" with code {child.returncode}"
                    if child and child.returncode is not None
                    else ""
                )
                raise service.failure(component, f"exited{code} before answering its health check")
            if time.monotonic() >= deadline:
                raise service.failure(
                    component, f"did not answer its health check within {timeout:.0f}s"
                )
            time.sleep(0.1)


def _started(pid: int) -> int:
    value = start_time(pid)
    if value is None:
        # It died at once; a start time of -1 never matches, so it reads as not running.
        return -1
    return value
