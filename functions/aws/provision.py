"""Lambda entry point that migrates PostgreSQL and creates the Kafka topics inside the VPC."""

from __future__ import annotations

import logging
from typing import Any

from chat.clients import ensure_topics
from chat.migrate import migrate
from functions.aws.secrets import load_settings

log = logging.getLogger("functions.aws.provision")


def handler(event: dict[str, Any], context: Any) -> dict[str, list[str]]:
    """Apply pending migrations and create missing topics; safe to run on every deploy."""
    settings = load_settings()
    applied = migrate(settings.postgres_dsn)
    created = ensure_topics(settings)
    log.info("provisioned: migrations %s, topics %s", applied or "up to date", created or "present")
    return {"migrations": applied, "topics": created}
