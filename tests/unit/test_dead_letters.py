"""The dead letter: what the runtime writes is what listing and replay read back."""

from __future__ import annotations

from chat import dead_letters
from chat.dead_letters import DeadLetter


def test_a_stream_dead_letter_is_pinned_and_reads_back() -> None:
    # GIVEN an entry that was already dead-lettered once (its old error must not stay)
    fields = {"room": "r", "text": "hi", "_error": "old", "_origin_id": "1-0"}
    entry = dead_letters.stream_entry(fields, "5-0", "x" * 3000, 3, "message")
    assert entry == {
        "room": "r",
        "text": "hi",
        "_origin_id": "1-0",
        "_error": "x" * 2000,
        "_attempts": "3",
        "_source_id": "5-0",
        "_function": "message",
    }
    assert dead_letters.from_stream_entry("0/9-0", entry) == DeadLetter(
        id="0/9-0",
        source="5-0",
        error="x" * 2000,
        attempts=3,
        payload={"room": "r", "text": "hi", "_origin_id": "1-0"},
    )


def test_a_replayed_stream_entry_answers_to_its_first_id() -> None:
    entry = dead_letters.stream_entry({"room": "r"}, "5-0", "boom", 1, "message")
    assert dead_letters.replay_entry("9-0", entry) == {"room": "r", "_origin_id": "5-0"}
    again = dead_letters.stream_entry({"room": "r", "_origin_id": "2-0"}, "5-0", "boom", 1, "m")
    assert dead_letters.replay_entry("9-0", again)["_origin_id"] == "2-0"
    assert dead_letters.replay_entry("9-0", {"room": "r"})["_origin_id"] == "9-0"


def test_a_kafka_dead_letter_is_pinned_and_reads_back() -> None:
    headers = dead_letters.kafka_headers("bad record", 2, "chat.messages/3/7", "persist")
    assert headers == {
        "error": "bad record",
        "attempts": "2",
        "source": "chat.messages/3/7",
        "function": "persist",
    }
    as_read = [(k, v.encode() if isinstance(v, str) else v) for k, v in headers.items()]
    letter = dead_letters.from_kafka("dead/0/4", b"room", b"{\xff}", as_read)
    assert letter == DeadLetter(
        id="dead/0/4",
        source="chat.messages/3/7",
        error="bad record",
        attempts=2,
        payload={"key": "room", "value": "{\udcff}"},
    )
    # Bytes that are no UTF-8 go back to the topic exactly as they came.
    assert dead_letters.kafka_replay(letter) == (
        "room",
        b"{\xff}",
        {"replay_of": "dead/0/4"},
    )
    assert dead_letters.from_kafka("d/0/5", None, None, {}).payload == {"key": "", "value": ""}
    assert dead_letters.kafka_replay(dead_letters.from_kafka("d/0/5", None, b"v", []))[0] is None
