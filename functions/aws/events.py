"""Typed views over the events Lambda hands a function, and the replies it expects back."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from functions.batch import BatchResult, KafkaRecord, StreamRecord

KAFKA_SOURCES = ("aws:kafka", "SelfManagedKafka")
BRIDGE_SOURCE = "chat.stream-bridge"
SCHEDULE_SOURCES = ("aws.events", "aws.scheduler")


class EventError(ValueError):
    """The event does not have the shape this function's trigger delivers."""


def _b64(raw: object, where: str) -> bytes:
    if not isinstance(raw, str):
        raise EventError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error as exc:
        raise EventError(f"{where} is not base64: {exc}") from None


@dataclass(frozen=True, slots=True)
class KafkaEvent:
    """An MSK or self-managed Kafka batch, as ``functions.batch.KafkaRecord`` in delivery order."""

    source: Literal["aws:kafka", "SelfManagedKafka"]
    records: tuple[KafkaRecord, ...]

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> KafkaEvent:
        """Decode a Lambda Kafka event; keys and values arrive base64-encoded."""
        source = event.get("eventSource")
        if source not in KAFKA_SOURCES:
            raise EventError(f"not a Kafka event (eventSource {source!r})")
        groups = event.get("records")
        if not isinstance(groups, Mapping):
            raise EventError("Kafka event without a 'records' mapping")
        records: list[KafkaRecord] = []
        for group, raws in groups.items():
            for raw in raws:
                where = f"records[{group!r}] offset {raw.get('offset')}"
                key = raw.get("key")
                records.append(
                    KafkaRecord(
                        topic=str(raw["topic"]),
                        partition=int(raw["partition"]),
                        offset=int(raw["offset"]),
                        key=None if key is None else _b64(key, where + " key"),
                        value=_b64(raw.get("value", ""), where + " value"),
                        timestamp_ms=int(raw.get("timestamp", 0)),
                    )
                )
        return cls(source=source, records=tuple(records))


def kafka_batch_response(records: Sequence[KafkaRecord], failed: set[str]) -> dict[str, Any]:
    """Lambda's Kafka partial-batch reply: per partition, the lowest offset to resume from."""
    resume: dict[tuple[str, int], int] = {}
    for r in records:
        if r.id in failed:
            key = (r.topic, r.partition)
            resume[key] = min(resume.get(key, r.offset), r.offset)
    return {
        "batchItemFailures": [
            {"itemIdentifier": {"partition": f"{topic}-{partition}", "offset": offset}}
            for (topic, partition), offset in sorted(resume.items())
        ]
    }


@dataclass(frozen=True, slots=True)
class BridgeBatch:
    """What the stream bridge sends a Redis-stream function: one consumer-group batch."""

    function: str
    records: tuple[StreamRecord, ...]

    def encode(self) -> bytes:
        """The JSON invocation payload."""
        return json.dumps(
            {
                "source": BRIDGE_SOURCE,
                "function": self.function,
                "records": [
                    {"id": r.id, "fields": dict(r.fields), "attempt": r.attempt}
                    for r in self.records
                ],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> BridgeBatch:
        """Read a bridge invocation payload."""
        if event.get("source") != BRIDGE_SOURCE:
            raise EventError(f"not a stream-bridge event (source {event.get('source')!r})")
        try:
            records = tuple(
                StreamRecord(
                    id=str(r["id"]),
                    fields={str(k): str(v) for k, v in r["fields"].items()},
                    attempt=int(r.get("attempt", 1)),
                )
                for r in event["records"]
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise EventError(f"malformed stream-bridge records: {exc!r}") from None
        return cls(function=str(event.get("function", "")), records=records)


def encode_result(result: BatchResult) -> dict[str, Any]:
    """A batch result as the JSON a bridge invocation answers with."""
    return {"failed": sorted(result.failed), "poison": dict(sorted(result.poison.items()))}


def decode_result(payload: Mapping[str, Any]) -> BatchResult:
    """The batch result a function's Lambda answered the bridge with."""
    failed, poison = payload.get("failed", []), payload.get("poison", {})
    if not isinstance(failed, list) or not isinstance(poison, Mapping):
        raise EventError("bridge reply must be {'failed': [...], 'poison': {...}}")
    return BatchResult(
        failed={str(i) for i in failed}, poison={str(k): str(v) for k, v in poison.items()}
    )


@dataclass(frozen=True, slots=True)
class ScheduledEvent:
    """An EventBridge (rule or scheduler) tick."""

    source: str
    time: str

    @classmethod
    def parse(cls, event: Mapping[str, Any]) -> ScheduledEvent:
        """Read an EventBridge scheduled event."""
        source = event.get("source")
        if source not in SCHEDULE_SOURCES:
            raise EventError(f"not a scheduled event (source {source!r})")
        return cls(source=str(source), time=str(event.get("time", "")))
