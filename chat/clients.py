"""Client factories: one place that knows how to reach Redis, Kafka and PostgreSQL."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg_pool import AsyncConnectionPool

from chat import names
from chat.settings import Settings


def redis_client(settings: Settings) -> aioredis.Redis:
    """An asyncio Redis client with bounded timeouts and health checks."""
    return aioredis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=15,
        retry_on_timeout=True,
    )


def kafka_connection(settings: Settings) -> dict[str, Any]:
    """Where and how every Kafka client (producer, consumer, admin) connects."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
    }


def kafka_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer: retries never duplicate or reorder within a partition."""
    config: dict[str, Any] = {
        **kafka_connection(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30_000,
    }
    config.update(overrides)
    return Producer(config)


def postgres_pool(
    settings: Settings, *, min_size: int = 1, max_size: int = 8
) -> AsyncConnectionPool:
    """An asyncio PostgreSQL pool; open it with ``await pool.open()``.

    Every statement on its connections is cancelled after ``postgres_statement_timeout_ms``:
    no request can hold a connection (and its locks) unbounded.
    """
    return AsyncConnectionPool(
        settings.postgres_dsn,
        min_size=min_size,
        max_size=max_size,
        open=False,
        timeout=10,
        kwargs={"options": f"-c statement_timeout={settings.postgres_statement_timeout_ms}"},
    )


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the Kafka topics the pipeline needs; return the ones that were missing."""
    admin = AdminClient(kafka_connection(settings))
    wanted = {
        names.MESSAGES_TOPIC: settings.kafka_messages_partitions,
        names.MESSAGES_DEAD_LETTER: 1,
    }
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(topic, num_partitions=parts, replication_factor=-1)
        for topic, parts in wanted.items()
        if topic not in existing
    ]
    if missing:
        for future in admin.create_topics(missing, request_timeout=timeout_s).values():
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                # Another provisioner may have won the race; anything else is real.
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    return [t.topic for t in missing]
