"""The composition root of a function process: settings and clients, created once, lazily.

The host (or the Lambda runtime) builds one ``Deps`` and hands it to every handler it calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from psycopg_pool import AsyncConnectionPool

from chat.clients import kafka_producer, postgres_pool, redis_client
from chat.settings import Settings
from chat.shards import RedisClient, Shards
from functions.forwarding import Forwarder, OutRecord

__all__ = ["DeliveryError", "Deps", "OutRecord"]


class DeliveryError(RuntimeError):
    """Kafka did not confirm some records; the batch must be retried."""


class Deps:
    """What handlers may use: one Redis client, Kafka producer and PostgreSQL pool per process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis: RedisClient | None = None
        self._shards: Shards | None = None
        self._scripts: dict[str, Any] = {}
        self._producer: Producer | None = None
        self._forwarder: Forwarder | None = None
        self._pool: AsyncConnectionPool | None = None
        self._pool_lock = asyncio.Lock()
        # The dependencies handlers and triggers asked for (not the health probes): what a
        # failure may be blamed on.
        self._used: set[str] = set()

    @property
    def redis(self) -> RedisClient:
        """The process's Redis client (of the one Redis, or of the cluster)."""
        self._used.add("redis")
        return self._redis_client()

    def _redis_client(self) -> RedisClient:
        if self._redis is None:
            self._redis = redis_client(self.settings)
        return self._redis

    def script(self, source: str) -> Any:
        """The process's Redis client's handle of a Lua script, registered on first use."""
        if source not in self._scripts:
            self._scripts[source] = self.redis.register_script(source)
        return self._scripts[source]

    @property
    def shards(self) -> Shards:
        """Where keys live, for pipelines per node and writes awaited on the replicas."""
        if self._shards is None:
            self._shards = Shards(self.settings, self.redis)
        return self._shards

    @property
    def producer(self) -> Producer:
        """The process's Kafka producer."""
        if self._producer is None:
            self._producer = kafka_producer(self.settings)
        return self._producer

    @property
    def forwarder(self) -> Forwarder:
        """Produces through the process's producer without waiting for Kafka's confirmation."""
        if self._forwarder is None:
            self._forwarder = Forwarder(self.producer)
        return self._forwarder

    async def pool(self) -> AsyncConnectionPool:
        """The process's PostgreSQL pool, opened on first use."""
        # Marked before opening: a pool that cannot open is a dependency that does not answer.
        self._used.add("postgres")
        return await self._open_pool()

    async def _open_pool(self) -> AsyncConnectionPool:
        async with self._pool_lock:
            if self._pool is None:
                pool = postgres_pool(self.settings)
                try:
                    await pool.open(wait=True, timeout=15)
                except BaseException:
                    # A pool that never opened would keep reconnecting in the background.
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    async def produce(
        self, topic: str, records: Iterable[OutRecord], timeout_s: float = 30
    ) -> None:
        """Produce ``(key, value, headers)`` records and wait until Kafka acknowledges all."""
        errors: list[KafkaError] = []

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        producer = self.producer
        count = 0
        for key, value, headers in records:
            while True:
                try:
                    producer.produce(
                        topic, value=value, key=key, headers=headers, on_delivery=on_delivery
                    )
                    break
                except BufferError:
                    # The local queue is full: let deliveries drain, then try again.
                    await asyncio.to_thread(producer.poll, 0.05)
            count += 1
        if not count:
            return
        left = await asyncio.to_thread(producer.flush, timeout_s)
        if left or errors:
            raise DeliveryError(
                f"{left} of {count} records unconfirmed, errors: {[str(e) for e in errors[:3]]}"
            )

    async def check(
        self, timeout_s: float = 2.0, services: Sequence[str] = ("redis", "postgres")
    ) -> dict[str, str]:
        """Ping Redis (every primary of a cluster) and PostgreSQL, each within ``timeout_s``;
        the value is "ok" or the error."""

        async def redis() -> None:
            client = self._redis_client()
            if self.settings.redis_mode == "cluster":
                await client.execute_command("PING", target_nodes="primaries")
            else:
                await client.ping()

        async def postgres() -> None:
            pool = await self._open_pool()
            async with pool.connection(timeout=timeout_s) as conn:
                await conn.execute("SELECT 1")

        probes = {"redis": redis, "postgres": postgres}
        results: dict[str, str] = {}
        for name in services:
            try:
                await asyncio.wait_for(probes[name](), timeout=timeout_s)
                results[name] = "ok"
            except Exception as exc:
                results[name] = f"{type(exc).__name__}: {exc}"[:200]
        return results

    async def available(self, timeout_s: float = 1.0) -> bool:
        """Whether every dependency this process has used so far answers within ``timeout_s``."""
        checks = await self.check(timeout_s, sorted(self._used))
        return all(value == "ok" for value in checks.values())

    async def aclose(self) -> None:
        """Close every client that was opened."""
        if self._shards is not None:
            await self._shards.aclose()
        if self._redis is not None:
            await self._redis.aclose()
        if self._pool is not None:
            await self._pool.close()
        if self._forwarder is not None:
            await asyncio.to_thread(self._forwarder.close, 10)
        elif self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 10)
