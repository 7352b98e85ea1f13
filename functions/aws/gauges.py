"""Lambda entry point publishing what CloudWatch cannot see by itself, once a minute.

Dead-letter depth (the Redis dead-letter streams, the Kafka dead-letter topics) and the Redis
consumer groups' lag, as CloudWatch metrics that the stack's alarms watch. Kafka consumer lag
needs no gauge: Lambda publishes ``OffsetLag`` for its Kafka event source mappings.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from chat.clients import kafka_connection, redis_client
from chat.settings import Settings
from functions.aws.secrets import load_settings
from functions.registry import FUNCTIONS, Function
from functions.triggers import KafkaTopic, RedisStream

log = logging.getLogger("functions.aws.gauges")

NAMESPACE_ENV = "GAUGES_NAMESPACE"
DEAD_LETTERS = "DeadLetters"
STREAM_LAG = "StreamLag"


@dataclass(frozen=True, slots=True)
class Gauge:
    """One measured value: a metric name, its one dimension, the value."""

    metric: str
    dimension: tuple[str, str]
    value: float


def dead_letter_sources(functions: Sequence[Function] = FUNCTIONS) -> list[str]:
    """Every dead-letter stream and topic the registry's functions write to (the family name
    of a partitioned stream's dead letters)."""
    return sorted(
        {
            fn.trigger.dead_letter
            for fn in functions
            if isinstance(fn.trigger, RedisStream | KafkaTopic) and fn.trigger.dead_letter
        }
    )


async def _redis_gauges(settings: Settings, functions: Sequence[Function]) -> list[Gauge]:
    redis = redis_client(settings)
    gauges: list[Gauge] = []
    try:
        for fn in functions:
            trigger = fn.trigger
            if not isinstance(trigger, RedisStream):
                continue
            depth, lag = 0, 0.0
            for partition in trigger.partitions(settings.inbound_partitions):
                if partition.dead_letter:
                    depth += await redis.xlen(partition.dead_letter)
                groups = (
                    await redis.xinfo_groups(partition.stream)
                    if await redis.exists(partition.stream)
                    else []
                )
                for group in groups:
                    if group["name"] == trigger.group:
                        # Entries never delivered to the group; Redis reports None when unknown.
                        lag += float(group.get("lag") or 0)
            if trigger.dead_letter:
                gauges.append(Gauge(DEAD_LETTERS, ("Source", trigger.dead_letter), depth))
            gauges.append(Gauge(STREAM_LAG, ("Function", fn.name), lag))
    finally:
        await redis.aclose()
    return gauges


def _kafka_gauges(settings: Settings, functions: Sequence[Function]) -> list[Gauge]:
    topics = sorted(
        {
            fn.trigger.dead_letter
            for fn in functions
            if isinstance(fn.trigger, KafkaTopic) and fn.trigger.dead_letter
        }
    )
    if not topics:
        return []
    consumer = Consumer({**kafka_connection(settings), "group.id": "chat-gauges"})
    gauges: list[Gauge] = []
    try:
        metadata = consumer.list_topics(timeout=10)
        for topic in topics:
            partitions = metadata.topics.get(topic)
            total = 0
            for partition in partitions.partitions if partitions else ():
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                total += max(0, high - low)
            gauges.append(Gauge(DEAD_LETTERS, ("Source", topic), total))
    finally:
        consumer.close()
    return gauges


def measure(settings: Settings, functions: Sequence[Function] = FUNCTIONS) -> list[Gauge]:
    """Dead-letter depths and Redis stream lag, read from Redis and Kafka now."""
    return asyncio.run(_redis_gauges(settings, functions)) + _kafka_gauges(settings, functions)


def publish(client: Any, namespace: str, gauges: Sequence[Gauge]) -> None:
    """Put the gauges into CloudWatch under ``namespace``."""
    data = [
        {
            "MetricName": g.metric,
            "Dimensions": [{"Name": g.dimension[0], "Value": g.dimension[1]}],
            "Value": g.value,
            "Unit": "Count",
        }
        for g in gauges
    ]
    for start in range(0, len(data), 500):  # PutMetricData takes 1,000 values at most
        client.put_metric_data(Namespace=namespace, MetricData=data[start : start + 500])


def handler(event: dict[str, Any], context: Any, client: Any = None) -> dict[str, float]:
    """Measure and publish; return what was published, by metric and dimension."""
    settings = load_settings()
    gauges = measure(settings)
    if client is None:
        import boto3  # type: ignore[import-untyped]  # provided by the Lambda runtime

        client = boto3.client("cloudwatch")
    publish(client, os.environ[NAMESPACE_ENV], gauges)
    published = {f"{g.metric}/{g.dimension[1]}": g.value for g in gauges}
    log.info("published %s", published)
    return published
