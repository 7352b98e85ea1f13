"""Pure runtime logic: batching, commit points, dead-letter shapes, backoff, registry loading."""

from __future__ import annotations

import pytest

from chat.settings import Settings
from functions.__main__ import load_registry, select
from functions.batch import ORIGIN_FIELD, KafkaRecord, StreamRecord
from functions.registry import REGISTRY
from functions.runtime.invoke import backoff_s
from functions.runtime.kafka_topic import Fetched, commit_points, consumer_config
from functions.runtime.redis_stream import dead_letter_args, dead_letter_entry


def _rec(partition: int, offset: int) -> KafkaRecord:
    return KafkaRecord(topic="t", partition=partition, offset=offset, key=None, value=b"")


def test_a_batch_is_due_when_full_or_when_its_oldest_record_waited_long_enough() -> None:
    fetched = Fetched()
    assert not fetched.ready(3, 0.05, now=0.0)
    fetched.add([_rec(0, 0)], now=1.0)
    assert not fetched.ready(3, 0.05, now=1.01)
    assert fetched.ready(3, 0.05, now=1.06)
    fetched.add([_rec(0, 1), _rec(1, 0)], now=1.02)
    assert fetched.ready(3, 0.05, now=1.02)
    assert [r.id for r in fetched.take(2, now=1.03)] == ["t/0/0", "t/0/1"]
    assert len(fetched) == 1


def test_dropping_revoked_partitions_keeps_the_others_in_order() -> None:
    fetched = Fetched()
    fetched.add([_rec(0, 0), _rec(1, 0), _rec(0, 1), _rec(1, 1)], now=0.0)
    assert fetched.drop({("t", 1)}) == 2
    assert [r.id for r in fetched.take(10, now=0.0)] == ["t/0/0", "t/0/1"]


def test_commits_stop_at_the_first_unfinished_record_of_each_partition() -> None:
    batch = [_rec(0, 10), _rec(0, 11), _rec(0, 12), _rec(1, 5), _rec(1, 6), _rec(2, 0)]
    assert commit_points(batch, set()) == {("t", 0): 13, ("t", 1): 7, ("t", 2): 1}
    # partition 0 stops before 11 although 12 is done; partition 2 has nothing done
    assert commit_points(batch, {"t/0/11", "t/2/0"}) == {("t", 0): 11, ("t", 1): 7}


def test_the_consumer_uses_the_classic_protocol_and_commits_by_hand() -> None:
    config = consumer_config(REGISTRY["persist"], "c-1", Settings(kafka_bootstrap="127.0.0.1:9092"))
    assert config["group.protocol"] == "classic"
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["enable.auto.commit"] is False
    assert config["max.poll.interval.ms"] >= 60_000


def test_a_dead_letter_keeps_the_entry_and_says_why_how_often_and_where_from() -> None:
    record = StreamRecord(id="5-0", fields={"room": "r", "_error": "old"}, attempt=3)
    entry = dead_letter_entry(record, "boom", "message")
    assert entry == {
        "room": "r",
        "_error": "boom",
        "_attempts": "3",
        "_source_id": "5-0",
        "_function": "message",
    }
    assert dead_letter_args([("5-0", {"a": "1"}), ("6-0", {})]) == [
        "5-0",
        "2",
        "a",
        "1",
        "6-0",
        "0",
    ]


def test_a_replayed_entry_answers_to_its_first_id() -> None:
    assert StreamRecord(id="9-0", fields={}).origin == "9-0"
    assert StreamRecord(id="9-0", fields={ORIGIN_FIELD: "5-0"}).origin == "5-0"


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n) for n in (1, 2, 3)] == [0.1, 0.2, 0.4]
    assert backoff_s(30) == 5.0


def test_the_cli_reads_another_registry_and_names_the_valid_functions() -> None:
    functions = load_registry("functions.registry:FUNCTIONS")
    assert list(functions) == list(REGISTRY)
    assert [f.name for f in select(functions, ["persist"])] == ["persist"]
    with pytest.raises(KeyError, match=r"known: .*persist"):
        select(functions, ["nope"])
    with pytest.raises(ValueError, match="module:attribute"):
        load_registry("functions.registry")
