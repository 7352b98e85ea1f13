"""Prometheus metrics of a function host, labelled by function name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INVOCATIONS = Counter(
    "chat_function_invocations_total", "Handler invocations by outcome", ["function", "outcome"]
)
DURATION = Histogram(
    "chat_function_duration_seconds",
    "Handler invocation duration",
    ["function"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "chat_function_batch_size",
    "Records per invocation",
    ["function"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
RECORDS = Counter("chat_function_records_total", "Records by outcome", ["function", "outcome"])
DEAD_LETTERED = Counter("chat_function_dead_letters_total", "Records dead-lettered", ["function"])
BACKLOG = Gauge(
    "chat_function_backlog",
    "Stream entries pending for the group or Kafka consumer lag",
    ["function"],
)
CONSUMER_LAG = Gauge(
    "chat_function_consumer_lag",
    "Kafka records behind the committed position, per owned partition",
    ["function", "topic", "partition"],
)
FORWARD_UNCONFIRMED = Gauge(
    "chat_function_forward_unconfirmed",
    "Records handed to Kafka and not yet confirmed (grows while Kafka is down)",
)
FORWARD_RETRIES = Counter(
    "chat_function_forward_retries_total",
    "Records Kafka did not confirm, produced again",
    ["topic"],
)
SETTLING = Gauge(
    "chat_function_settling_records",
    "Stream entries handled but not yet acked: they wait for Kafka's confirmation",
    ["function"],
)
DEAD_LETTER_STOPPED = Gauge(
    "chat_function_dead_letter_stopped",
    "1 while a runner of the function stopped consuming: it hit its dead-letter cap",
    ["function"],
)
DEAD_LETTER_TRIPS = Counter(
    "chat_function_dead_letter_trips_total",
    "Times a runner hit its dead-letter cap and stopped consuming for its cool-down",
    ["function"],
)
WAITING_FOR_DEPENDENCIES = Gauge(
    "chat_function_waiting_for_dependencies",
    "Runners of the function holding their records because a dependency does not answer",
    ["function"],
)
