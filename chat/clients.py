"""Client factories: one place that knows how to reach Redis, Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import redis.asyncio as aioredis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.cluster import RedisCluster

from chat import names
from chat.settings import Settings
from chat.shards import RedisClient

# Every Redis client: bounded timeouts and health checks.
REDIS_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 5,
    "socket_timeout": 10,
    "health_check_interval": 15,
}


def redis_client(settings: Settings) -> RedisClient:
    """An asyncio client of the data set: one Redis, or a cluster from a seed node's URL."""
    if settings.redis_mode == "cluster":
        # Follows MOVED/ASK and refreshes its slot map on failovers by itself.
        return RedisCluster.from_url(settings.redis_url, max_connections=64, **REDIS_OPTIONS)
    return aioredis.from_url(settings.redis_url, retry_on_timeout=True, **REDIS_OPTIONS)


def kafka_connection(settings: Settings) -> dict[str, Any]:
    """Where and how every Kafka client (producer, consumer, admin) connects."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
        # librdkafka backs off reconnects up to 10 s by default: after an outage the backlog
        # would wait that long for a broker that is already back.
        "reconnect.backoff.max.ms": 1000,
    }


def kafka_producer(settings: Settings, **overrides: Any) -> Producer:
    """An idempotent producer: retries never duplicate or reorder within a partition."""
    config: dict[str, Any] = {
        **kafka_connection(settings),
        "enable.idempotence": True,
        "acks": "all",
        # Nothing on the live path waits for Kafka: batch for fewer, larger produce requests.
        "linger.ms": 50,
        "compression.type": "lz4",
        # librdkafka retries in order for this long (an outage); past it, the forwarder
        # produces the record again.
        "message.timeout.ms": 120_000,
    }
    config.update(overrides)
    return Producer(config)


# Where the password can change under a running process (a rotated secret), the deployment sets
# this: called when the server refuses the password, it reloads the credentials (libpq reads
# PGPASSWORD at each connect) and says whether they changed; then the connect is tried again.
PasswordRefresh = Callable[[], bool]
_password_refresh: PasswordRefresh | None = None
_PASSWORD_REFUSED = frozenset({"28P01", "28000"})


def on_password_refused(refresh: PasswordRefresh | None) -> None:
    """Install (or remove, with None) the process's credentials reload for PostgreSQL."""
    global _password_refresh
    _password_refresh = refresh


def password_refused(exc: psycopg.OperationalError) -> bool:
    """Whether a failed connect was the server refusing the credentials."""
    return exc.sqlstate in _PASSWORD_REFUSED or "password authentication failed" in str(exc)


class _Connection(psycopg.AsyncConnection[Any]):
    @classmethod
    async def connect(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().connect(*args, **kwargs)
        except psycopg.OperationalError as exc:
            refresh = _password_refresh
            if refresh is None or not password_refused(exc) or not await asyncio.to_thread(refresh):
                raise
        return await super().connect(*args, **kwargs)


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
        connection_class=_Connection,
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
