"""Forwarding to Kafka off the live path: produce now, learn of Kafka's confirmation later.

``Forwarder.send`` hands records to the producer and returns at once with a future that resolves
when Kafka has confirmed every one of them. A record Kafka refused or that timed out is produced
again after a backoff, for as long as it takes: an outage delays confirmation, it never fails
it, and nothing is dropped. The caller decides what waits on the future (the Redis-stream
runtime acks entries only then) and bounds how much may be unconfirmed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from functions.runtime import metrics

log = logging.getLogger("functions.forwarding")

# key, value, headers (or None)
OutRecord = tuple[str | bytes | None, bytes, dict[str, str | bytes | None] | None]

# How long the delivery thread blocks in one poll: bounds how late it sees a stop.
_POLL_S = 0.05
_RETRY_BASE_S = 0.2
_RETRY_CAP_S = 5.0


@dataclass(slots=True)
class _Send:
    """One send() call: its records still unconfirmed, the ones to produce again, its future."""

    topic: str
    future: asyncio.Future[None]
    outstanding: int = 0
    again: list[OutRecord] = field(default_factory=list)
    failures: int = 0


class Forwarder:
    """Produces through one producer; a background thread serves Kafka's delivery reports."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._unconfirmed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def unconfirmed(self) -> int:
        """Records handed to Kafka and not yet confirmed."""
        return self._unconfirmed

    def send(self, topic: str, records: Sequence[OutRecord]) -> asyncio.Future[None]:
        """Produce ``records``; the future resolves once Kafka has confirmed all of them."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[None] = loop.create_future()
        if not records:
            future.set_result(None)
            return future
        self._start()
        self._produce(_Send(topic=topic, future=future), list(records))
        return future

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._serve_reports, name="kafka-delivery", daemon=True
            )
            self._thread.start()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(_POLL_S)

    def _produce(self, send: _Send, records: list[OutRecord]) -> None:
        """Hand records to the producer (on the loop); those it cannot take now wait a while."""
        left: list[OutRecord] = []
        for i, (key, value, headers) in enumerate(records):
            try:
                self.producer.produce(
                    send.topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=self._on_delivery(send, (key, value, headers)),
                )
            except BufferError:
                # The producer's queue is full: the rest waits for deliveries to drain it.
                left = records[i:]
                break
            send.outstanding += 1
            self._count(1)
        if left:
            send.again.extend(left)
            if send.outstanding == 0:
                self._retry_later(send)

    def _on_delivery(self, send: _Send, record: OutRecord):  # type: ignore[no-untyped-def]
        def report(err: KafkaError | None, _msg: Message) -> None:
            # Runs on the delivery thread: hand the outcome to the loop.
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._settle, send, record, err)

        return report

    def _settle(self, send: _Send, record: OutRecord, err: KafkaError | None) -> None:
        self._count(-1)
        send.outstanding -= 1
        if err is not None:
            send.again.append(record)
            metrics.FORWARD_RETRIES.labels(send.topic).inc()
            if send.failures == 0:
                log.warning(
                    "Kafka did not confirm a record (%s); it is produced again",
                    err,
                    extra={"topic": send.topic},
                )
        if send.outstanding:
            return
        if send.again:
            self._retry_later(send)
        elif not send.future.done():
            send.future.set_result(None)

    def _retry_later(self, send: _Send) -> None:
        send.failures += 1
        delay = min(_RETRY_CAP_S, _RETRY_BASE_S * 2 ** min(send.failures - 1, 8))
        records, send.again = send.again, []
        assert self._loop is not None
        self._loop.call_later(delay, self._resend, send, records)

    def _resend(self, send: _Send, records: list[OutRecord]) -> None:
        if send.future.done():  # cancelled by a stopping runner: nothing waits for it
            return
        self._produce(send, records)

    def _count(self, delta: int) -> None:
        self._unconfirmed += delta
        metrics.FORWARD_UNCONFIRMED.set(self._unconfirmed)

    def close(self, timeout_s: float = 10.0) -> int:
        """Flush within ``timeout_s`` and stop the delivery thread; return what stayed unsent."""
        left = int(self.producer.flush(timeout_s))
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        return left
