"""What every service of the stack declares, and the site (state dir, ports) it works in."""

from __future__ import annotations

import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from devstack.components import HOST, Component, Kind, StackError
from devstack.ports import Ports
from devstack.process import tail


@dataclass(frozen=True, slots=True)
class Site:
    """Where a stack's services keep their files and listen, and how they report progress."""

    state_dir: Path
    ports: Ports
    # Off only for throwaway test data: PostgreSQL then skips fsync and full-page writes.
    durable: bool
    say: Callable[[str], None]

    @property
    def logs_dir(self) -> Path:
        """Where each component's log is: ``<name>.log``."""
        return self.state_dir / "logs"

    def log_path(self, name: str) -> Path:
        """The log file of a component."""
        return self.logs_dir / f"{name}.log"


@dataclass(frozen=True, slots=True)
class Launch:
    """How to run a prepared component: its command, and the user to run it as (None: us)."""

    argv: list[str]
    user: str | None = None


class Service(ABC):
    """One kind of component: its ports, files, command, health probe and stop."""

    kind: ClassVar[Kind]
    # Started tier by tier (data, then nodes, then the entry point), stopped the other way.
    tier: ClassVar[int]
    start_timeout_s: ClassVar[float]
    # How it is asked to stop, and how long it may take before SIGKILL.
    stop_signal: ClassVar[int] = signal.SIGTERM
    stop_grace_s: ClassVar[float]

    def __init__(self, site: Site) -> None:
        self.site = site

    @abstractmethod
    def port(self, index: int) -> int:
        """The port of its component of node index ``index`` (0 for a singleton)."""

    @abstractmethod
    def hint(self) -> str:
        """What to do when a component of this kind does not start."""

    @abstractmethod
    def prepare(self, component: Component) -> Launch:
        """Make what the component needs on disk; return how to run it."""

    @abstractmethod
    def probe(self, component: Component) -> Callable[[], bool]:
        """A quick check, True once the component answers."""

    def missing(self) -> list[str]:
        """What this machine lacks to run it (empty when nothing); bootstrap installs it."""
        return []

    def listens(self, component: Component) -> list[int]:
        """The ports the component binds."""
        return [component.port]

    def after_ready(self, component: Component) -> None:
        """Called once it answers, also when it was running already."""
        return None

    def after_stop(self, component: Component, clean: bool) -> None:
        """Called once a running component has stopped (``clean``: before its grace ran out)."""
        return None

    def failure(self, component: Component, what: str) -> StackError:
        """An error saying what went wrong, the tail of its log and what to do."""
        log = self.site.log_path(component.name)
        return StackError(
            f"{component.name} {what} ({HOST}:{component.port}).\n"
            f"--- last lines of {log} ---\n{tail(log)}\n---\n"
            f"What to do: {self.hint()}; then start again (what runs is kept), "
            f"or stop everything (make dev-stop / python -m devstack stop)."
        )
