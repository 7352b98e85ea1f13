"""The entry point: haproxy balancing over the configured gateway nodes."""

from __future__ import annotations

import resource
from collections.abc import Callable
from pathlib import Path

from devstack import configs, health
from devstack.components import HOST, Component, StackError, find_program, require_program
from devstack.process import run
from devstack.services.base import Launch, Service, Site


class LoadBalancer(Service):
    """``lb``: haproxy on the entry port, in front of the gateways ``gateways()`` names."""

    kind = "lb"
    tier = 2
    start_timeout_s = 20
    stop_grace_s = 5

    def __init__(self, site: Site, gateways: Callable[[], list[tuple[str, int]]]) -> None:
        super().__init__(site)
        self._gateways = gateways

    def port(self, index: int) -> int:
        return self.site.ports.entry

    @property
    def config(self) -> Path:
        """Its configuration file."""
        return self.site.state_dir / "haproxy.cfg"

    @property
    def url(self) -> str:
        """The load-balanced base URL."""
        return f"http://{HOST}:{self.site.ports.entry}"

    def hint(self) -> str:
        return f"check the haproxy configuration {self.config}"

    def missing(self) -> list[str]:
        return [] if find_program("haproxy") else ["haproxy"]

    def prepare(self, component: Component) -> Launch:
        haproxy = require_program("haproxy")
        gateways = self._gateways()
        if not gateways:
            raise StackError("lb: no gateway to balance over: configure gateways=1 or more")
        # A proxied connection takes two descriptors: keep maxconn within the descriptor limit.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        maxconn = (
            20000 if hard == resource.RLIM_INFINITY else max(256, min(20000, (hard - 200) // 2))
        )
        self.config.write_text(
            configs.haproxy(entry_port=component.port, gateways=gateways, maxconn=maxconn)
        )
        code = run(
            [haproxy, "-c", "-q", "-f", str(self.config)],
            log=self.site.log_path(component.name),
            timeout=20,
        )
        if code != 0:
            raise self.failure(component, f"rejected its configuration {self.config}")
        return Launch([haproxy, "-db", "-f", str(self.config)])

    def probe(self, component: Component) -> Callable[[], bool]:
        return lambda: health.http_ok(self.url + "/healthz")
