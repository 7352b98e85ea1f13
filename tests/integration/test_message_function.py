"""The message function on real Redis and Kafka: dedup, contiguous seq, recent log, fan-out."""

from __future__ import annotations

import asyncio
import json
import uuid

from confluent_kafka import Consumer

from chat import frames, inbound, names
from chat.contract import SendRequest
from chat.ids import message_id
from devstack import Stack
from functions import message
from functions.batch import StreamRecord
from functions.deps import Deps


def _record(entry_id: str, room: str, sender: str, cid: str, text: str = "hi") -> StreamRecord:
    request = SendRequest(room=room, text=text, client_msg_id=cid)
    fields = inbound.send_entry(request, sender=sender, ts="2026-11-28T10:00:00.000Z")
    return StreamRecord(id=entry_id, fields=fields)


def _kafka_messages(bootstrap: str, room: str, want: int) -> list[tuple[bytes, dict[str, object]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([names.MESSAGES_TOPIC])
    found: list[tuple[bytes, dict[str, object]]] = []
    try:
        for _ in range(200):
            for record in consumer.consume(500, 0.1):
                if record.error() is None and record.key() == room.encode():
                    found.append((record.key(), json.loads(record.value())))
            if len(found) >= want:
                break
    finally:
        consumer.close()
    return found


async def test_a_batch_is_sequenced_deduplicated_logged_fanned_out_and_produced(
    stack: Stack, deps: Deps
) -> None:
    room = f"it-{uuid.uuid4().hex[:10]}"
    channel = names.room_channel(room)
    pubsub = deps.shards.node(await deps.shards.owner(channel)).pubsub()
    await pubsub.ssubscribe(channel)
    # GIVEN a batch with a re-sent duplicate (another stream entry, same client_msg_id)
    batch = [
        _record("1-1", room, "ann", "a", "first"),
        _record("1-2", room, "bob", "b", "second"),
        _record("1-3", room, "ann", "a", "first, re-sent"),
        _record("1-4", room, "ann", "c", "third"),
    ]
    # WHEN the function runs it
    result = await message.handle(batch, deps)
    # THEN every record succeeded, settling once Kafka confirms, and the room has seq 1..3
    assert result.clean
    assert result.settle is not None
    await asyncio.wait_for(result.settle, timeout=30)
    log = await deps.redis.xrange(names.recent_log_key(room))
    logged = [json.loads(fields["m"]) for _, fields in log]
    assert [(m["seq"], m["text"]) for m in logged] == [(1, "first"), (2, "second"), (3, "third")]
    assert [entry_id for entry_id, _ in log] == ["1-0", "2-0", "3-0"]
    assert logged[0]["id"] == message_id("ann", room, "a")

    # AND each message was published once on the room's channel, as a ready Socket.IO packet
    published = []
    while len(published) < 3:
        item = await asyncio.wait_for(pubsub.get_message(timeout=5), timeout=6)
        if item and item["type"] == "smessage":
            published.append(frames.decode_frame(item["data"]))
    assert [(f.event, f.seq, f.skip) for f in published] == [
        ("message", n, None) for n in range(1, 4)
    ]
    assert [json.loads(f.packet[1:]) for f in published] == [["message", m] for m in logged]
    await pubsub.aclose()

    # AND Kafka holds each message once, keyed by room, in seq order
    produced = await asyncio.to_thread(_kafka_messages, deps.settings.kafka_bootstrap, room, want=3)
    assert [m["seq"] for _, m in produced] == [1, 2, 3]

    # WHEN the same entries are redelivered (a host died before acking)
    again = await message.handle(batch, deps)
    # THEN no seq is assigned twice; the first entries are produced again (persist dedups)
    assert again.clean
    assert again.settle is not None
    await asyncio.wait_for(again.settle, timeout=30)
    assert await deps.redis.get(names.seq_key(room)) == "3"
    assert len(await deps.redis.xrange(names.recent_log_key(room))) == 3


async def test_a_malformed_entry_is_poison_and_does_not_hold_up_the_rest(deps: Deps) -> None:
    room = f"it-{uuid.uuid4().hex[:10]}"
    good = _record("2-1", room, "ann", "ok")
    bad = [
        StreamRecord(id="2-2", fields={"room": room, "text": "no sender", "client_msg_id": "x"}),
        StreamRecord(id="2-3", fields={**good.fields, "room": "bad room"}),
        StreamRecord(id="2-4", fields={**good.fields, "text": ""}),
    ]
    result = await message.handle([bad[0], good, *bad[1:]], deps)
    assert set(result.poison) == {"2-2", "2-3", "2-4"}
    assert all(result.poison.values())
    assert not result.failed
    assert await deps.redis.get(names.seq_key(room)) == "1"
