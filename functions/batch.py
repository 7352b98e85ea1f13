"""Typed views of the records a batch handler receives, and what it reports back.

Handlers never see Redis, Kafka or Lambda event shapes: the runtime adapters build these.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

# A replayed dead letter carries the id of the entry it was first written as, so handlers
# that remember work by entry id recognise it as the same work.
from chat.dead_letters import ORIGIN_FIELD


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One Redis stream entry; ``attempt`` counts deliveries, starting at 1."""

    id: str
    fields: Mapping[str, str]
    attempt: int = 1

    @property
    def origin(self) -> str:
        """The id of the entry this one replays, else its own id."""
        return self.fields.get(ORIGIN_FIELD) or self.id


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One Kafka record; ``attempt`` counts deliveries, starting at 1."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int = 0
    attempt: int = 1

    @property
    def id(self) -> str:
        """A stable id for reporting: ``topic/partition/offset``."""
        return f"{self.topic}/{self.partition}/{self.offset}"


Record = StreamRecord | KafkaRecord


@dataclass(slots=True)
class BatchResult:
    """What a batch handler reports; records it does not name succeeded.

    ``failed``: transient failures, retried alone (partial batch failure).
    ``poison``: bad records with the reason, dead-lettered and never retried.
    ``settle``: when set, the records that succeeded are done only once it resolves (Kafka
    confirmed what they produced); the runtime acks them then and may run later batches
    meanwhile. A runtime that cannot keep records in hand that long awaits it before replying.
    Raising instead of returning marks the whole batch as a transient failure.
    """

    failed: set[str] = field(default_factory=set)
    poison: dict[str, str] = field(default_factory=dict)
    settle: asyncio.Future[None] | None = None

    @property
    def clean(self) -> bool:
        """True when every record succeeded."""
        return not self.failed and not self.poison
