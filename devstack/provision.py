"""Provisioning: once the backing services answer, migrate PostgreSQL and create Kafka topics."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from devstack.components import REPO, StackError
from devstack.process import run, tail
from devstack.services.base import Site


def needed(site: Site, services: list[str], wanted: list[str], started: list[str]) -> bool:
    """True when all the backing services are wanted and one was (re)started, or never done."""
    if not all(s in wanted for s in services):
        return False
    return bool(set(started) & set(services)) or not (site.state_dir / "provisioned").exists()


def provision(site: Site, env: Mapping[str, str]) -> None:
    """Run ``functions.store.provision`` (the functions know which schema and topics)."""
    site.say("provision: migrating PostgreSQL, creating Kafka topics")
    log = site.log_path("provision")
    code = run(
        [sys.executable, "-m", "functions.store.provision"],
        log=log,
        timeout=180,
        env=env,
        cwd=REPO,
    )
    if code != 0:
        raise StackError(
            f"provision failed with code {code}.\n"
            f"--- last lines of {log} ---\n{tail(log)}\n---\n"
            f"What to do: fix functions.store.provision, then start again (what runs is kept)."
        )
    (site.state_dir / "provisioned").touch()
    site.say("provision: done")
