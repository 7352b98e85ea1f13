"""The system's own processes: gateway nodes (realtime) and function hosts (functions)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from devstack import health
from devstack.components import HOST, Component
from devstack.services.base import Launch, Service, Site

# A node's command: the default one, or the one it was started with (an extra node).
ArgvOf = Callable[[Component], tuple[str, ...]]


class _Node(Service):
    """A Python process of this repository serving /healthz on its port."""

    tier = 1
    start_timeout_s = 60
    _module: tuple[str, ...]

    def __init__(self, site: Site, argv_of: ArgvOf) -> None:
        super().__init__(site)
        self._argv_of = argv_of

    def default_argv(self, component: Component) -> tuple[str, ...]:
        """The command a node of this kind runs unless it was started with another."""
        return (sys.executable, "-m", *self._module, "--host", HOST, "--port", str(component.port))

    def prepare(self, component: Component) -> Launch:
        return Launch(list(self._argv_of(component)))

    def probe(self, component: Component) -> Callable[[], bool]:
        url = f"http://{HOST}:{component.port}/healthz"
        return lambda: health.http_ok(url)


class Gateways(_Node):
    """The gateway nodes ``gateway-<n>`` (python -m realtime)."""

    kind = "gateway"
    stop_grace_s = 10
    _module = ("realtime",)

    def port(self, index: int) -> int:
        return self.site.ports.gateway(index)

    def hint(self) -> str:
        return "fix the error shown above in the gateway (realtime)"


class FunctionHosts(_Node):
    """The function hosts ``functions-<n>`` (python -m functions host)."""

    kind = "functions"
    stop_grace_s = 15
    _module = ("functions", "host")

    def port(self, index: int) -> int:
        return self.site.ports.functions(index)

    def hint(self) -> str:
        return "fix the error shown above in the function host (functions)"
