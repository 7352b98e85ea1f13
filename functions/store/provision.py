"""Make a fresh environment ready: migrate PostgreSQL, create Kafka topics. Safe to run twice."""

from __future__ import annotations

import logging
import time

from chat.clients import ensure_topics
from chat.settings import Settings
from functions.store.migrate import migrate


def main() -> None:
    """Command line: provision the environment named by the CHAT_* variables."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings.from_env()
    started = time.monotonic()
    applied = migrate(settings.postgres_dsn)
    created = ensure_topics(settings)
    print(
        f"provisioned in {time.monotonic() - started:.1f}s: "
        f"migrations {', '.join(applied) or 'up to date'}; "
        f"topics {', '.join(created) or 'present'}"
    )


if __name__ == "__main__":
    main()
