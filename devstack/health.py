"""One quick, bounded probe per kind of component: True when it answers."""

from __future__ import annotations

import http.client
import urllib.request

import psycopg
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from redis.backoff import NoBackoff
from redis.retry import Retry


def no_retry() -> Retry:
    """For probes: a refused connection is an answer (redis-py would retry it for seconds)."""
    return Retry(NoBackoff(), 0)


def redis_ping(url: str) -> bool:
    """Redis answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1, retry=no_retry())
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def postgres_ready(dsn: str) -> bool:
    """PostgreSQL accepts a connection and runs a query."""
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


class KafkaProbe:
    """Asks the broker for metadata; one client reused across polls, since each costs threads."""

    def __init__(self, bootstrap: str) -> None:
        # librdkafka logs each refused connection while the broker boots: expected, so silenced.
        self._admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})

    def __call__(self) -> bool:
        """The broker serves metadata and a controller is elected."""
        try:
            metadata = self._admin.list_topics(timeout=1.0)
        except KafkaException:
            return False
        return bool(metadata.brokers) and metadata.controller_id >= 0


def http_ok(url: str) -> bool:
    """``GET url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException, ValueError):
        return False
